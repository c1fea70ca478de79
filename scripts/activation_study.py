"""Where the last percentage point goes: activation and normaliser ablations, one to D layers.

Question (docs/quality.md, "Why grouping stops at tanh"): the grouped isotropic MLP reaches
element-wise tanh but stays below GELU + LayerNorm. Is the difference the normaliser, the radial
profile, or the shape of the activation? Every isotropic activation is odd (``φ(−z) = −φ(z)``,
from ``Q = −I`` in its symmetry group), so this script trains, at ``[n_0, width, n_L]``
(``--depth D``: ``D`` hidden layers of ``width``, the same activation in each), with the
quality experiment's protocol (:mod:`isoplastic.experiments.exp8_quality`: AdamW, batch 48,
standardised inputs, the rate chosen on validation with the first seed, more seeds at it):

* element-wise ``tanh`` and ``gelu``, each alone, after ``LayerNorm`` (``-ln``) and after an
  RMS normaliser ``z ↦ √n z / ‖z‖`` (``-rms``: no centring, so it commutes with every rotation);
* grouped isotropic layers ``gS-PROFILE`` with groups of ``S`` neurons: ``φ(z_h) = s(‖z_h‖)
  z_h / ‖z_h‖`` per group, radial profile ``s`` one of ``tanh`` (the library's),
  ``tanh2`` (``2 tanh(r/2)``, a radial length scale of 2), ``shrink`` (``max(r − 1, 0)``, the
  group soft-threshold), ``softplus`` (``softplus(r − 1) − softplus(−1)``), ``swish``
  (``r σ(r − 1)``) and ``log1p``; ``-rms`` adds the RMS normaliser before it. ``gall`` is one
  group of the whole width (``gall-tanh``: the isotropic function class at depth 1);
* the same layers with an *invariant channel*, ``gS-PROFILE-inv`` and ``gS-PROFILE-invr``: every
  group ``g`` also emits one rotation-invariant scalar ``ρ(‖z_g‖)``, concatenated after the
  ``n`` rotating coordinates, so the next affine map (the read-out, or the next hidden layer)
  reads ``n + G`` inputs (``G`` groups);
  ``ρ(r) = tanh(r)`` (``-inv``, bounded) or ``ρ(r) = √(1 + r²) − 1`` (``-invr``, unbounded). The
  layer still commutes with every per-group rotation (the invariant coordinates do not move),
  but it is no longer odd: ``z ↦ −z`` negates the rotating coordinates and leaves the invariant
  ones, an even part that no isotropic profile has.

These are plain modules (no ψ, no intrinsic length; one hidden layer unless ``--depth``), the
function class of grouped layers; they probe the activation, not the library's models. With
``--depth D`` every hidden layer has its own normaliser (``-ln``) and emits its own invariants,
and the network commutes with independent per-group rotations of every layer (applied to the
weights that write and read it).

Usage::

    python scripts/activation_study.py --dataset fashion-mnist --data-dir DIR --out OUT
    python scripts/activation_study.py --depth 2 --models tanh,g8-tanh-invr --data-dir DIR --out OUT
    python scripts/activation_study.py --models tanh,g8-tanh --quick --out OUT   # seconds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from isoplastic.experiments.common import fmt_ms, md_table, mean_se
from isoplastic.experiments.exp8_quality import choose_lr, prepare, train

PROFILES = {
    "tanh": torch.tanh,
    "tanh2": lambda r: 2 * torch.tanh(r / 2),
    "shrink": lambda r: F.relu(r - 1),
    "softplus": lambda r: F.softplus(r - 1) - F.softplus(torch.tensor(-1.0)),
    "swish": lambda r: r * torch.sigmoid(r - 1),
    "log1p": torch.log1p,
}
ELEMENTWISE = {"tanh": torch.tanh, "gelu": F.gelu}
#: Invariant channels ``ρ(‖z_g‖)``, one per group, by model-name suffix.
INVARIANTS = {
    "inv": torch.tanh,
    "invr": lambda r: torch.sqrt(1 + r * r) - 1,
}
DEFAULT_MODELS = ("tanh,tanh-ln,tanh-rms,gelu,gelu-ln,gelu-rms,g8-tanh,g8-tanh-rms,g8-tanh2,"
                  "g8-shrink,g8-softplus,g8-swish,g8-log1p,g1-shrink,g1-softplus,g8-tanh-inv,"
                  "g8-tanh-invr")


def rms_normalise(z: Tensor) -> Tensor:
    """``√n z / ‖z‖`` per sample (``z``: ``(batch, n)``): rotation-equivariant, no centring."""
    return z * z.shape[1] ** 0.5 / z.norm(dim=1, keepdim=True).clamp_min(1e-12)


class Hidden(nn.Module):
    """``x ↦ W_{D+1} h_D + b_{D+1}`` with ``h_0 = x``, ``h_k = φ(N_k(W_k h_{k−1} + b_k))``,
    ``D ≥ 1`` hidden layers of one width ``n``; orthogonal ``W``, zero biases. ``N_k`` is the
    identity, a ``LayerNorm`` of its own (``norm="ln"``) or :func:`rms_normalise`
    (``norm="rms"``); ``φ`` is element-wise (``group=None``) or isotropic on groups of ``group``
    neurons with ``profile``. With ``invariant`` (a key of :data:`INVARIANTS`, grouped layers
    only) every hidden layer also emits ``ρ(‖z_g‖)`` per group, after its ``n`` rotating
    coordinates, and the next affine map reads ``n + G``. The weights are drawn first, middle,
    last, so ``widths = [n_0, n, n_L]`` (one hidden layer) draws ``W_1, W_2`` as it always
    has."""

    def __init__(self, widths: list[int], act: str, group: int | None, norm: str | None,
                 invariant: str | None = None) -> None:
        super().__init__()
        n_in, *hidden, n_out = widths
        if not hidden or len(set(hidden)) != 1:
            raise ValueError(f"widths {widths}: give [n_0, n, ..., n, n_L], every hidden layer "
                             "of one width")
        if invariant is not None and group is None:
            raise ValueError("an invariant channel needs groups")
        n, depth = hidden[0], len(hidden)
        self.widths = list(widths)  # read by the quality experiment's train()
        extra = n // group if invariant is not None else 0
        # drawn in this order (first, middle..., last), then orthogonalised in it: at depth 1
        # the same draws as a single hidden layer
        self.first = nn.Linear(n_in, n)
        self.middle = nn.ModuleList(nn.Linear(n + extra, n) for _ in range(depth - 1))
        self.last = nn.Linear(n + extra, n_out)
        for lin in (self.first, *self.middle, self.last):
            nn.init.orthogonal_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.lns = nn.ModuleList(nn.LayerNorm(n) for _ in range(depth)) if norm == "ln" else None
        self.act, self.group, self.norm, self.invariant = act, group, norm, invariant

    def activate(self, z: Tensor, k: int) -> Tensor:
        """``φ(N_k(z))`` of hidden layer ``k`` (from 0) at its pre-activation ``z``."""
        if self.lns is not None:
            z = self.lns[k](z)
        elif self.norm == "rms":
            z = rms_normalise(z)
        if self.group is None:
            return ELEMENTWISE[self.act](z)
        zg = z.view(z.shape[0], -1, self.group)  # (batch, n / S, S)
        r = zg.norm(dim=2, keepdim=True).clamp_min(1e-12)
        h = (PROFILES[self.act](r) / r * zg).reshape(z.shape)
        if self.invariant is not None:  # (batch, n + G): the G invariants after h
            h = torch.cat([h, INVARIANTS[self.invariant](r.squeeze(2))], dim=1)
        return h

    def hidden(self, x: Tensor) -> list[Tensor]:
        """``[h_1, …, h_D]``, each ``(batch, n)`` or ``(batch, n + G)`` with invariants."""
        hs = [self.activate(self.first(x), 0)]
        for k, lin in enumerate(self.middle, start=1):
            hs.append(self.activate(lin(hs[-1]), k))
        return hs

    def forward(self, x: Tensor) -> Tensor:
        return self.last(self.hidden(x)[-1])


def build(name: str, widths: list[int]) -> Hidden:
    """``tanh``, ``gelu-ln``, ``g8-tanh2-rms``, ``gall-tanh-inv``, ... at ``widths = [n_0, n,
    …, n, n_L]`` (one hidden layer per ``n``): see the module docstring."""
    parts = name.split("-")
    norm = parts.pop() if parts[-1] in ("ln", "rms") else None
    inv = parts.pop() if len(parts) > 1 and parts[-1] in INVARIANTS else None
    if parts[0] in ELEMENTWISE and len(parts) == 1 and inv is None:
        return Hidden(widths, parts[0], None, norm)
    size = str(widths[1]) if parts[0] == "gall" else parts[0][1:]
    if (len(parts) == 2 and parts[0][:1] == "g" and size.isdigit() and int(size) > 0
            and parts[1] in PROFILES and widths[1] % int(size) == 0):
        return Hidden(widths, parts[1], int(size), norm, inv)
    raise SystemExit(f"model {name!r}: write tanh or gelu, or gS-PROFILE with S dividing the "
                     f"width {widths[1]} (gall: one group) and PROFILE one of "
                     f"{', '.join(PROFILES)}, optionally -{' or -'.join(INVARIANTS)} (grouped "
                     "only); optionally -ln or -rms")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=1, help="hidden layers, each of --width")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lrs", default="1e-3,3e-3")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="digits, 500 samples, width 16, 2 epochs")
    args = ap.parse_args(argv)
    if args.depth < 1:
        ap.error(f"--depth {args.depth}: give at least one hidden layer")
    torch.set_num_threads(1)
    n_train = None
    if args.quick:
        args.dataset, n_train, args.width, args.epochs, args.seeds = "digits", 500, 16, 2, 2
    lrs = [float(v) for v in args.lrs.split(",")]
    models = args.models.split(",")
    data, info = prepare(args.dataset, args.data_dir, n_train, torch.device("cpu"))
    widths = [info["n_features"], *[args.width] * args.depth, info["n_classes"]]
    for name in models:  # bad names fail before any training
        build(name, widths)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"config": {**vars(args), "lrs": lrs, "models": models}, "data": info,
                     "models": {}}
    for name in models:
        t0 = time.perf_counter()
        by_lr = {}
        for lr in lrs:
            torch.manual_seed(0)
            by_lr[lr] = train(build(name, widths), data, args.epochs, lr, 0)
        lr = choose_lr({r: by_lr[r]["val"] for r in lrs})
        runs = [by_lr[lr]]
        for seed in range(1, args.seeds):
            torch.manual_seed(seed)
            runs.append(train(build(name, widths), data, args.epochs, lr, seed))
        cell = {"lr": lr, "test_pct": mean_se(r["test"] for r in runs),
                "val_pct_by_lr": {str(r): by_lr[r]["val"] for r in lrs},
                "seconds": time.perf_counter() - t0}
        results["models"][name] = cell
        print(f"{name:14s} lr {lr:g}  test {fmt_ms(cell['test_pct'])}  "
              f"({cell['seconds']:.0f} s)", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    table = md_table(["model", "test accuracy (%)", "chosen lr"],
                     [[m, fmt_ms(c["test_pct"]), f"{c['lr']:g}"]
                      for m, c in results["models"].items()])
    layers = "one hidden layer" if args.depth == 1 else f"{args.depth} hidden layers"
    (out / "table.md").write_text(
        f"{info['dataset']}, {layers} of {args.width}, {args.epochs} epochs, rate from "
        f"{lrs} on validation, {args.seeds} seeds\n\n{table}\n")
    return results


if __name__ == "__main__":
    main()
