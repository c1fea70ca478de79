"""When is the generalised isotropic perceptron's parallel forward faster than the sequential one?

Question: ``isoplastic.nn.parallel.parallel_forward`` computes every matrix-vector product up
front (one GEMM ``x ↦ [P_l x]_l`` with ``P_l = W_l ⋯ W_0``) and then runs only a scalar gain
recursion; the sequential ``IsotropicMLP.forward`` alternates a GEMM and a row reduction per
layer. Which is faster, as a function of depth, width and batch?

Cost model (``L`` maps, equal widths ``n``, batch ``B``):

* sequential: ``B·L·n²`` multiply-adds in ``L`` dependent GEMMs, plus ``L`` reductions;
* parallel, per batch: ``B·n·Σ_l n_l = B·L·n²`` multiply-adds in *one* GEMM, plus ``B·n·L²/2`` for
  the inner products with the fixed bias/ψ vectors and ``O(B·L²)`` scalar work;
* plan (weights only, reusable across batches until the weights change): the chain
  ``P_l = W_l P_{l-1}``, ``L·n³`` multiply-adds — more than a forward unless ``B ≳ n``.

So the parallel form does not save arithmetic; it trades ``L`` dependent launches for one large
GEMM, which can pay off only when launches/latency dominate (small batch on an accelerator) and
the plan is reused. Each timing is the minimum over interleaved repeats (the variants alternate,
so background load hits them alike), float32, no autograd.

Usage: ``python benchmarks/parallel_forward.py [--device cpu|cuda] [--threads 2] [--quick]``;
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import isoplastic as ip
from isoplastic.nn.parallel import build_plan, parallel_forward


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, device: str, repeats: int) -> float:
    fn()  # warm-up
    _sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def measure(depth: int, width: int, batch: int, device: str, repeats: int) -> dict:
    torch.manual_seed(0)
    widths = [width] * (depth + 1) + [10]
    net = ip.IsotropicMLP(widths, psi="trainable").to(device).eval()
    with torch.no_grad():
        for p in net.psi:
            p.normal_(0, 0.1)
    x = torch.randn(batch, width, device=device)
    with torch.no_grad():
        plan = build_plan(net)
        err = float((parallel_forward(net, x, plan) - net(x)).abs().max()
                    / net(x).abs().max())
        seq = par_cached = par_full = plan_t = float("inf")
        for _ in range(repeats):  # interleave the variants
            seq = min(seq, _time(lambda: net(x), device, 1))
            par_cached = min(par_cached, _time(lambda: parallel_forward(net, x, plan), device, 1))
            par_full = min(par_full, _time(lambda: parallel_forward(net, x), device, 1))
            plan_t = min(plan_t, _time(lambda: build_plan(net), device, 1))
    return {"depth": depth, "width": width, "batch": batch, "seq": seq, "cached": par_cached,
            "full": par_full, "plan": plan_t, "err": err}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="fewer configurations")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    grid = [(2, 256, 256), (8, 256, 256), (32, 256, 256),  # depth
            (8, 64, 256), (8, 1024, 256),  # width
            (8, 256, 1), (8, 256, 32), (8, 256, 4096)]  # batch
    if args.quick:
        grid = grid[:3]
    rows = [measure(d, w, b, args.device, args.repeats) for d, w, b in grid]
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"parallel_forward vs IsotropicMLP.forward — {dev}, float32, torch {torch.__version__}\n")
    print("| hidden layers | width | batch | sequential (ms) | parallel, cached plan (ms) "
          "| parallel incl. plan (ms) | plan alone (ms) | speed-up (cached) | rel. diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['depth']} | {r['width']} | {r['batch']} | {1e3 * r['seq']:.3f} | "
              f"{1e3 * r['cached']:.3f} | {1e3 * r['full']:.3f} | {1e3 * r['plan']:.3f} | "
              f"{r['seq'] / r['cached']:.2f}× | {r['err']:.1e} |")


if __name__ == "__main__":
    main()
