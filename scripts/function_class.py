"""Why isotropic MLPs lose to element-wise ones: the gated-linear function class, measured.

An isotropic MLP computes ``G_0(x)(A x + v_0) + Σ_j G_j(x) v_j`` (docs/quality.md): its decision
rule is a linear classifier on ``x`` plus one learned scalar feature per hidden layer, whatever
its width. This script trains, on the same data, steps and optimizer (AdamW, batch 48, inputs
standardised with training statistics, one hidden layer):

* ``linear``: multinomial logistic regression (the class's floor);
* ``isotropic``: the library's ``IsotropicMLP`` (``psi="none"``, and the default ``o``/ψ);
* ``groups-G``: the hidden layer split into ``G`` equal groups, each with its own isotropic tanh
  (``G = width`` is element-wise tanh), a probe of how much expressivity each symmetry group
  gives up;
* ``tanh``: element-wise tanh with the same orthogonal initialisation.

Usage::

    python scripts/function_class.py                                  # digits, 3 seeds
    python scripts/function_class.py --dataset fashion-mnist --data-dir DIR --epochs 3
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F
from torch import nn

import isoplastic as ip
from isoplastic.data import load_dataset


class GroupedIsotropicTanh(nn.Module):
    """``φ(z)_h = tanh(‖z_h‖) z_h / ‖z_h‖`` on each of ``groups`` equal slices ``z_h`` of ``z``
    (``z``: ``(batch, n)``, ``n`` divisible by ``groups``)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        zz = z.unflatten(-1, (self.groups, -1))
        r = zz.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return (torch.tanh(r) / r * zz).flatten(-2)


def plain(n_in: int, width: int, n_out: int, act: nn.Module) -> nn.Module:
    first, last = nn.Linear(n_in, width), nn.Linear(width, n_out)
    for layer in (first, last):
        nn.init.orthogonal_(layer.weight)
        nn.init.zeros_(layer.bias)
    return nn.Sequential(first, act, last)


def build(name: str, n_in: int, width: int, n_out: int) -> nn.Module:
    if name == "linear":
        return nn.Linear(n_in, n_out)
    if name == "isotropic":
        return ip.IsotropicMLP([n_in, width, n_out], psi="none")
    if name == "isotropic-default":
        return ip.IsotropicMLP([n_in, width, n_out])
    if name == "tanh":
        return plain(n_in, width, n_out, nn.Tanh())
    if name.startswith("groups-"):
        return plain(n_in, width, n_out, GroupedIsotropicTanh(int(name.split("-")[1])))
    raise SystemExit(f"unknown model {name!r}")


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean()) * 100


def train(net: nn.Module, data: tuple, epochs: int, lr: float, seed: int) -> float:
    xtr, ytr, xte, yte = data
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(perm), 48):
            b = perm[i:i + 48]
            loss = F.cross_entropy(net(xtr[b]), ytr[b])
            penalty = getattr(net, "psi_penalty", None)
            if penalty is not None:
                loss = loss + penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return accuracy(net, xte, yte)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--width", type=int, default=None, help="hidden width (digits 128, else 256)")
    ap.add_argument("--epochs", type=int, default=None, help="digits 30, else 3")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--models", default="linear,isotropic,isotropic-default,groups-4,groups-16,"
                                         "groups-64,tanh")
    ap.add_argument("--json", default=None, help="write the accuracies here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    digits = args.dataset == "digits"
    width = args.width or (128 if digits else 256)
    epochs = args.epochs or (30 if digits else 3)
    ds = load_dataset(args.dataset, args.data_dir)
    xtr, xte = ds.x_train.flatten(1).float(), ds.x_test.flatten(1).float()
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-6)
    data = ((xtr - mean) / std, ds.y_train, (xte - mean) / std, ds.y_test)
    results: dict[str, list[float]] = {}
    for name in args.models.split(","):
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            net = build(name, xtr.shape[1], width, ds.n_classes)
            results.setdefault(name, []).append(train(net, data, epochs, args.lr, seed))
        accs = results[name]
        se = statistics.stdev(accs) / len(accs) ** 0.5 if len(accs) > 1 else float("nan")
        print(f"{name:18s} {statistics.mean(accs):6.2f} ± {se:4.2f}  "
              f"({', '.join(f'{a:.2f}' for a in accs)})", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"dataset": args.dataset, "width": width, "epochs": epochs, "lr": args.lr,
                       "test_accuracy": results}, fh, indent=1)


if __name__ == "__main__":
    main()
