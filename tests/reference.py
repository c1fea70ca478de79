"""Slow, obviously-correct references, written directly on tensors (no isoplastic operations).

* :func:`params_of` / :func:`forward`: the network as plain lists of tensors and its forward
  pass, so a reference can be checked against the library's network.
* :func:`neurodegeneration_loop`: remove neurons one at a time (SVD, remove the last,
  ``o += b*²``, ``ψ += b* w*``).
* :func:`dense_rotation` / :func:`transport_rotation`: the change of basis of one tensor axis as an
  explicit dense matrix on the flattened tensor (a Kronecker product), and its element-wise square
  for second moments.
* :func:`sparsify_loop`: alternating full diagonalisation as a plain loop.
* :data:`AGREEMENT_TOLERANCE`: per dtype, how closely two evaluations of the same formula must
  agree (the exactness of a structural change is :data:`isoplastic.testing.FLOAT_TOLERANCE`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

import isoplastic as ip

#: Two evaluations of the same formula in the same dtype (the fused forward against the textbook
#: ``W φ(z) + b + ψ g``), max |difference| relative to ``max |reference| + 1``. float64: 1e-13
#: (≈ 450 ulp); float32: 4e-6 (≈ 34 ulp; the worst of 200 random networks was 1.7e-7 ≈ 1.5 ulp).
AGREEMENT_TOLERANCE: dict[torch.dtype, float] = {torch.float64: 1e-13, torch.float32: 4e-6}


@dataclass
class Plain:
    """A network as plain tensors: ``W[i]`` (out, in), ``b[i]``, ``psi[k]`` (or None), ``o[k]``."""

    W: list[Tensor]
    b: list[Tensor]
    psi: list[Tensor] | None
    o: list[float]
    intrinsic: bool
    psi_mode: str
    extra: dict = field(default_factory=dict)


def params_of(net: ip.IsotropicMLP) -> Plain:
    """Copy a network's tensors into a :class:`Plain`."""
    return Plain(
        W=[lin.weight.detach().clone() for lin in net.linears],
        b=[lin.bias.detach().clone() for lin in net.linears],
        psi=[p.detach().clone() for p in net.psi] if len(net.psi) else None,
        o=[act.o for act in net.activations],
        intrinsic=net.activations[0].mode.value != "none",
        psi_mode=net.psi_mode.value,
    )


def gain(z: Tensor, o: float) -> Tensor:
    """``tanh(ρ)/ρ`` with ``ρ = sqrt(|‖z‖² + o|)``, shape ``(batch, 1)`` (ρ away from 0 here)."""
    rho = torch.sqrt(((z * z).sum(dim=1, keepdim=True) + o).abs())
    safe = torch.where(rho > 1e-6, rho, torch.ones_like(rho))
    return torch.where(rho > 1e-6, torch.tanh(safe) / safe, torch.ones_like(rho))


def forward(p: Plain, x: Tensor) -> Tensor:
    """Logits of the plain network."""
    z = x @ p.W[0].T + p.b[0]
    for k in range(len(p.W) - 1):
        g = gain(z, p.o[k] if p.intrinsic else 0.0)
        z_next = (g * z) @ p.W[k + 1].T + p.b[k + 1]
        if p.psi is not None:
            z_next = z_next + p.psi[k] * g
        z = z_next
    return z


def neurodegeneration_loop(p: Plain, k: int, n: int) -> Plain:
    """Remove ``n`` neurons of hidden layer ``k`` one at a time; returns a new :class:`Plain`."""
    W, b = [w.clone() for w in p.W], [v.clone() for v in p.b]
    psi = None if p.psi is None else [v.clone() for v in p.psi]
    o = list(p.o)
    for _ in range(n):
        u, _, _ = torch.linalg.svd(W[k], full_matrices=True)
        W[k] = u.T @ W[k]
        b[k] = u.T @ b[k]
        if psi is not None and k >= 1:
            psi[k - 1] = u.T @ psi[k - 1]
        W[k + 1] = W[k + 1] @ u
        b_star = float(b[k][-1])
        w_star = W[k + 1][:, -1].clone()
        W[k] = W[k][:-1]
        b[k] = b[k][:-1]
        if psi is not None and k >= 1:
            psi[k - 1] = psi[k - 1][:-1]
        W[k + 1] = W[k + 1][:, :-1]
        if p.intrinsic:
            o[k] = o[k] + b_star**2
        if psi is not None:
            psi[k] = psi[k] + b_star * w_star
        elif p.psi_mode == "expectation":
            raise NotImplementedError("the reference loop does not model psi='expectation'")
    return Plain(W, b, psi, o, p.intrinsic, p.psi_mode)


def dense_rotation(shape: tuple[int, ...], dim: int, r: Tensor) -> Tensor:
    """The matrix ``M`` with ``vec(t') = M vec(t)`` (row-major vec) for the change of basis
    ``c' = Rᵀ c`` of axis ``dim`` of a tensor of ``shape`` (1-D or 2-D)."""
    rt = r.T.contiguous()  # torch.kron refuses some transposed (non-contiguous) operands
    if len(shape) == 1:
        return rt
    a, c = shape
    if dim == 0:  # t' = Rᵀ t
        return torch.kron(rt, torch.eye(c, dtype=r.dtype))
    # t' = t R: each row is mapped by Rᵀ
    return torch.kron(torch.eye(a, dtype=r.dtype), rt)


def transport_rotation(t: Tensor, dim: int, r: Tensor, second_moment: bool = False) -> Tensor:
    """Apply :func:`dense_rotation` (element-wise squared for a second moment) to ``t``."""
    m = dense_rotation(tuple(t.shape), dim, r.to(t.dtype))
    if second_moment:
        m = m * m
    return (m @ t.reshape(-1)).reshape(t.shape)


def sparsify_loop(net: ip.IsotropicMLP, optimizer=None) -> list[int]:
    """Alternating full diagonalisation written as a loop of :func:`isoplastic.full_diagonalise`."""
    layers = []
    k = 1
    while k <= net.n_hidden - 1:
        ip.full_diagonalise(net, k, optimizer)
        layers.append(k)
        k += 2
    return layers


def closed_form_percent(n0: int, hidden: list[int], n_out: int) -> float:
    """Zeroed weight fraction in percent (generic hidden widths)."""
    widths = [n0, *hidden, n_out]
    total = sum(a * c for a, c in zip(widths[:-1], widths[1:]))
    zeroed = sum(widths[k] * widths[k + 1] - min(widths[k], widths[k + 1])
                 for k in range(1, len(widths) - 2, 2))
    return 100.0 * zeroed / total


def isclose(a: float, b: float, rel: float = 1e-12) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=rel)


# -- helpers shared by the tests (not references) --------------------------------------------------

def probe(net: ip.IsotropicMLP, seed: int = 1234, batch: int = 16) -> Tensor:
    """Probe inputs for ``net`` in its dtype."""
    gen = torch.Generator().manual_seed(seed)
    dtype = net.linears[0].weight.dtype
    return torch.randn(batch, net.widths[0], generator=gen, dtype=torch.float64).to(dtype)


def loss_fn(net: ip.IsotropicMLP, x: Tensor, seed: int = 7) -> Tensor:
    """Cross-entropy on fixed random labels plus the ψ penalty."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, net.widths[-1], (x.shape[0],), generator=gen)
    return torch.nn.functional.cross_entropy(net(x), y) + net.psi_penalty()


def train(net: ip.IsotropicMLP, opt: torch.optim.Optimizer, x: Tensor, steps: int) -> float:
    loss = torch.zeros(())
    for s in range(steps):
        opt.zero_grad()
        loss = loss_fn(net, x, seed=s)
        loss.backward()
        opt.step()
    return float(loss.detach())


def snapshot(net: torch.nn.Module, opt: torch.optim.Optimizer | None = None) -> dict:
    """Clones of every parameter, buffer, gradient and optimizer state tensor (by position)."""
    snap = {
        "params": [(n, p.detach().clone(), None if p.grad is None else p.grad.clone())
                   for n, p in net.named_parameters()],
        "buffers": [(n, b.clone()) for n, b in net.named_buffers()],
        "ids": [id(p) for p in net.parameters()],
        "widths": list(getattr(net, "widths", [])),
    }
    if opt is not None:
        snap["groups"] = [[id(p) for p in g["params"]] for g in opt.param_groups]
        snap["state"] = [
            {k: (v.clone() if isinstance(v, Tensor) else v) for k, v in opt.state[p].items()}
            if p in opt.state else None
            for g in opt.param_groups for p in g["params"]
        ]
    return snap


def same(a: Tensor | None, b: Tensor | None) -> bool:
    """Bit-identical, NaN positions included."""
    if a is None or b is None:
        return a is None and b is None
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(
        torch.nan_to_num(a, nan=0.0), torch.nan_to_num(b, nan=0.0))


def assert_identical(snap: dict, net: torch.nn.Module, opt: torch.optim.Optimizer | None = None
                     ) -> None:
    now = snapshot(net, opt)
    assert now["ids"] == snap["ids"], "parameter objects were replaced"
    assert now["widths"] == snap["widths"]
    for (n1, p1, g1), (n2, p2, g2) in zip(snap["params"], now["params"], strict=True):
        assert n1 == n2 and same(p1, p2) and same(g1, g2), f"parameter {n1} changed"
    for (n1, b1), (n2, b2) in zip(snap["buffers"], now["buffers"], strict=True):
        assert n1 == n2 and same(b1, b2), f"buffer {n1} changed"
    if opt is not None:
        assert now["groups"] == snap["groups"], "optimizer param_groups changed"
        for s1, s2 in zip(snap["state"], now["state"], strict=True):
            assert (s1 is None) == (s2 is None)
            if s1 is None:
                continue
            assert s1.keys() == s2.keys()
            for key in s1:
                if isinstance(s1[key], Tensor):
                    assert same(s1[key], s2[key]), f"optimizer state {key} changed"
                else:
                    assert s1[key] == s2[key]
