"""Grow, prune, diagonalise and sparsify an isotropic MLP, printing the function change of each step.

Run: ``python examples/quickstart.py`` (a few seconds on a CPU).
"""

from __future__ import annotations

import copy

import torch

import isoplastic as ip


def main() -> None:
    torch.manual_seed(0)
    net = ip.IsotropicMLP([64, 48, 48, 48, 10], intrinsic_length="trainable", psi="trainable").double()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    x = torch.randn(256, 64, dtype=torch.float64)
    y = torch.randint(0, 10, (256,))
    for _ in range(30):  # a little training so biases, psi and o are non-trivial
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    steps = [
        ("reparameterise(k=1, random R)", lambda: ip.reparameterise(net, 1, ip.random_orthogonal(48), opt)),
        ("left_diagonalise(k=0)", lambda: ip.left_diagonalise(net, 0, opt)),
        ("full_diagonalise(k=1)", lambda: ip.full_diagonalise(net, 1, opt)),
        ("neurogenesis(k=2, n=8)", lambda: ip.neurogenesis(net, 2, 8, opt)),
        ("neurodegeneration(k=2, n=8)", lambda: ip.neurodegeneration(net, 2, 8, opt)),
        ("neurodegeneration(k=1, n=4)", lambda: ip.neurodegeneration(net, 1, 4, opt)),
        ("neuroadapt(S=2, tau=0.1)", lambda: ip.neuroadapt(net, 2, 0.1, opt)),
        ("sparsify()", lambda: ip.sparsify(net, opt)),
    ]
    print(f"{'operation':34s} {'widths':22s} {'eps_scaled %':>12s} {'max |dlogit|':>12s}")
    for name, op in steps:
        before = copy.deepcopy(net)
        op()
        fc = ip.function_change(before, net, x)
        print(f"{name:34s} {str(net.widths):22s} {fc.eps_scaled:12.2e} {fc.max_abs:12.2e}")
    report = ip.sparsify(net, opt)
    print(f"weights made zero: {report.weight_zero_fraction:.1%} "
          f"(closed form {report.closed_form_fraction:.1%})")
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    print(f"training continues: loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
