"""GPU check: exactness of every operation and training-step speed on a CUDA device.

Run ``python scripts/gpu_check.py`` on a machine with a GPU (the tests run on CPU). It prints
one line per check and a JSON summary (``--json FILE`` writes it). Where no CUDA device is
present it says so and exits 0, so it is safe to run anywhere.

Checks:

* exactness on the GPU: the relative logit change (max |Δ| / max |logits|) of every operation
  on an ``IsotropicMLP`` and an ``IsotropicCNN`` in float64 and float32, and on a composite
  model with two blocks, against ``isoplastic.testing.FLOAT_TOLERANCE`` (exact operations) or
  the removal's own bound (σ = 0 removals are exact);
* parameters, gradients and optimizer state stay on the device and keep their dtypes;
* TF32: with TF32 switched on globally, operations still run at full float32 precision;
* speed: the isotropic / element-wise tanh training-step ratio (AdamW, float32,
  CUDA-synchronised medians; for the MLPs also with the fused AdamW on both networks, the
  Trainer's optimizer) at 256, 1024 and 4096 wide and for the
  CNN (1×28×28, channels 16, 32, head 64); on 3072-500-500-10 a ``neuroadapt`` pass removing 5
  neurons in two layers and a pass that changes nothing (tracked spectra), as fractions of an
  epoch of training steps of the same network.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import isoplastic as ip
from isoplastic.testing import FLOAT_TOLERANCE, random_isotropic_mlp, silence_last_neuron


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def exactness(device: torch.device, dtype: torch.dtype) -> dict[str, float]:
    out = {}
    net = random_isotropic_mlp([32, 48, 40, 36, 10], "trainable", "trainable", seed=1)
    net = net.to(device=device, dtype=dtype)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(64, 32, device=device, dtype=dtype)
    F.cross_entropy(net(x), torch.randint(0, 10, (64,), device=device)).backward()
    opt.step()
    ops = {
        "reparameterise": lambda n: ip.reparameterise(
            n, 1, ip.random_orthogonal(40, dtype=dtype, device=device), optimizer=opt),
        "left_diagonalise": lambda n: ip.left_diagonalise(n, 0, optimizer=opt),
        "full_diagonalise": lambda n: ip.full_diagonalise(n, 1, optimizer=opt),
        "sparsify": lambda n: ip.sparsify(n, optimizer=opt),
        "neurogenesis": lambda n: ip.neurogenesis(n, 2, 3, optimizer=opt),
        "neurodegeneration_sigma0": lambda n: ip.neurodegeneration(n, 1, 1, optimizer=opt),
    }
    for name, op in ops.items():
        net.eval()
        if name == "neurodegeneration_sigma0":
            silence_last_neuron(net, 1, optimizer=opt)  # an exact-removal case (changes the function first)
        before = net(x)
        op(net)
        out[f"mlp_{name}"] = relative(net(x), before)
    assert all(p.device.type == device.type and p.dtype == dtype for p in net.parameters())
    assert all(v.device.type == device.type for st in opt.state.values() for v in st.values()
               if torch.is_tensor(v) and v.dim() > 0)

    cnn = ip.IsotropicCNN((3, 12, 12), [8, 12], kernel_sizes=[3, 1], head=[16], n_classes=5)
    cnn = cnn.to(device=device, dtype=dtype).eval()
    xi = torch.randn(8, 3, 12, 12, device=device, dtype=dtype)
    for name, op in {"reparameterise": lambda m: ip.reparameterise(
                         m, 0, ip.random_orthogonal(8, dtype=dtype, device=device)),
                     "neurogenesis": lambda m: ip.neurogenesis(m, 1, 2),
                     "full_diagonalise": lambda m: ip.full_diagonalise(m, 1)}.items():
        before = cnn(xi)
        op(cnn)
        out[f"cnn_{name}"] = relative(cnn(xi), before)

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList(ip.IsotropicMLP([16, 24, 16]) for _ in range(2))

        def forward(self, h):
            for b in self.blocks:
                h = h + b(h)
            return h

    model = Residual().to(device=device, dtype=dtype).eval()
    xr = torch.randn(16, 16, device=device, dtype=dtype)
    before = model(xr)
    ip.neurogenesis(model, "blocks.1.0", 3)
    ip.sparsify(model)
    out["composite_grow_sparsify"] = relative(model(xr), before)
    return out


def tf32_guard(device: torch.device) -> float:
    """Relative change of a float32 reparameterisation with TF32 switched on globally."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        net = random_isotropic_mlp([256, 512, 512, 10], "trainable", "trainable", seed=2)
        net = net.to(device=device, dtype=torch.float32).eval()
        x = torch.randn(128, 256, device=device)
        with torch.no_grad():
            torch.backends.cuda.matmul.allow_tf32 = False  # reference forward at full precision
            before = net(x)
            ip.left_diagonalise(net, 0)
            after = net(x)
        return relative(after, before)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_time(device: torch.device, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
               repeats: int, fused: bool = False) -> float:
    """Median seconds of one AdamW step after 5 warm-ups: torch's default implementation for the
    device, or (``fused``) its fused kernel, which the Trainer uses."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, **({"fused": True} if fused else {}))
    times = []
    for i in range(repeats + 5):
        sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        (F.cross_entropy(net(x), y) + net.psi_penalty()).backward()
        opt.step()
        sync(device)
        if i >= 5:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cnn_step_ratio(device: torch.device, batch: int = 48, repeats: int = 30) -> dict:
    """IsotropicCNN vs ElementwiseCNN (1×28×28, channels 16, 32, head 64), one AdamW step."""
    x = torch.randn(batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    kw = dict(kernel_sizes=3, head=[64], n_classes=10)
    iso = _step_time(device, ip.IsotropicCNN((1, 28, 28), [16, 32], **kw).to(device), x, y,
                     repeats)
    tanh = _step_time(device, ip.ElementwiseCNN((1, 28, 28), [16, 32], **kw).to(device), x, y,
                      repeats)
    return {"iso_ms": iso * 1e3, "tanh_ms": tanh * 1e3, "ratio": iso / tanh}


def step_ratio(device: torch.device, width: int, batch: int = 48, repeats: int = 30) -> dict:
    """IsotropicMLP vs ElementwiseMLP ``[width, width, width, 10]``, one AdamW step each."""
    x = torch.randn(batch, width, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    widths = [width, width, width, 10]
    out: dict = {"width": width}
    for suffix, fused in (("", False), ("_fused", True)):
        iso = _step_time(device, ip.IsotropicMLP(widths).to(device), x, y, repeats, fused)
        tanh = _step_time(device, ip.ElementwiseMLP(widths).to(device), x, y, repeats, fused)
        out |= {f"iso{suffix}_ms": iso * 1e3, f"tanh{suffix}_ms": tanh * 1e3,
                f"ratio{suffix}": iso / tanh}
    return out


def _timed(device: torch.device, fn) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def neuroadapt_time(device: torch.device, widths: list[int], repeats: int = 3) -> dict:
    """Seconds of a neuroadapt pass removing 5 neurons in each of two layers, and of a pass
    that changes nothing right after a pass (counts certified from the tracked spectra), with
    the training step of the same network (epoch fractions: 50,000 samples, batch 48)."""
    net = ip.IsotropicMLP(widths).to(device)
    ip.neuroadapt(net, 2, 0.1, init_scale=0.0)
    remove, still = [], []
    for _ in range(repeats):
        work = copy.deepcopy(net)
        ip.neuroadapt(work, 2, 0.1)  # the previous pass: its spectra are tracked
        for k in range(2):
            ip.neurogenesis(work, k, 5, init_scale=0.0)
        remove.append(_timed(device, lambda work=work: ip.neuroadapt(work, 2, 0.1)))
        still.append(_timed(device, lambda work=work: ip.neuroadapt(work, 2, 0.1)))
    x = torch.randn(48, widths[0], device=device)
    y = torch.randint(0, widths[-1], (48,), device=device)
    step = _step_time(device, copy.deepcopy(net), x, y, repeats=20)
    epoch = step * 50_000 / 48
    out = {"remove5_s": statistics.median(remove), "no_change_s": statistics.median(still),
           "step_s": step}
    out["remove5_epoch_fraction"] = out["remove5_s"] / epoch
    out["no_change_epoch_fraction"] = out["no_change_s"] / epoch
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the summary to this file")
    parser.add_argument("--device", default="cuda",
                        help="cuda (default), or cpu to try the script itself on a CPU")
    parser.add_argument("--quick", action="store_true", help="smaller speed checks")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing "
              "to check. The test suite covers the CPU.")
        return 0
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    summary: dict = {"device": name, "torch": torch.__version__}
    ok = True
    for dtype in (torch.float64, torch.float32):
        errs = exactness(device, dtype)
        tol = FLOAT_TOLERANCE[dtype]
        summary[f"exactness_{dtype}"] = errs
        for name, err in errs.items():
            good = err <= tol
            ok &= good
            print(f"{'ok ' if good else 'BAD'} {dtype} {name}: relative change {err:.2e} "
                  f"(tolerance {tol:.0e})")
    if device.type == "cuda":
        tf = tf32_guard(device)
        summary["tf32_guard_relative_change"] = tf
        ok &= tf <= FLOAT_TOLERANCE[torch.float32]
        print(f"TF32 on globally, float32 left_diagonalise: relative change {tf:.2e}")
    sizes = (64, 128) if args.quick else (256, 1024, 4096)
    summary["step_ratios"] = [step_ratio(device, w, repeats=5 if args.quick else 30)
                              for w in sizes]
    for r in summary["step_ratios"]:
        print(f"train step {r['width']} wide: isotropic {r['iso_ms']:.3f} ms, tanh "
              f"{r['tanh_ms']:.3f} ms, ratio {r['ratio']:.2f}; fused AdamW (both) "
              f"{r['iso_fused_ms']:.3f} / {r['tanh_fused_ms']:.3f} ms, ratio "
              f"{r['ratio_fused']:.2f}")
    cnn = cnn_step_ratio(device, batch=8 if args.quick else 48, repeats=3 if args.quick else 30)
    summary["cnn_step_ratio"] = cnn
    print(f"CNN train step (1x28x28, channels 16, 32, head 64): isotropic {cnn['iso_ms']:.3f} ms, "
          f"tanh {cnn['tanh_ms']:.3f} ms, ratio {cnn['ratio']:.2f}")
    widths_used = [64, 40, 40, 10] if args.quick else [3072, 500, 500, 10]
    adapt = neuroadapt_time(device, widths_used, repeats=1 if args.quick else 3)
    summary["neuroadapt"] = adapt
    summary["neuroadapt_remove5_s"] = adapt["remove5_s"]
    print(f"neuroadapt ({'-'.join(map(str, widths_used))}): removing 5 neurons in two layers "
          f"{adapt['remove5_s'] * 1e3:.1f} ms ({100 * adapt['remove5_epoch_fraction']:.3f} % of "
          f"an epoch), a pass that changes nothing {adapt['no_change_s'] * 1e3:.2f} ms "
          f"({100 * adapt['no_change_epoch_fraction']:.4f} %); training step "
          f"{adapt['step_s'] * 1e3:.3f} ms")
    summary["all_exact"] = ok
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    print(json.dumps({"all_exact": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
