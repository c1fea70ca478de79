"""Measuring how much a structural change altered a network's function.

With logits ``z`` before and ``z'`` after a change, on ``N`` probe inputs:

* ``eps_scaled = (100 / N) Σ_i ‖z'_i - z_i‖ / ‖z_i‖`` (percent),
* ``kl = (1 / N) Σ_i KL(softmax(z_i) ‖ softmax(z'_i))`` (nats),
* ``max_abs = max_{i,j} |z'_ij - z_ij|``,
* ``agreement`` = fraction of inputs whose arg-max class is unchanged.

Logits of shape ``(batch, classes)`` give one prediction per row. Logits with more axes, such as
a language model's ``(batch, T, vocab)``, hold one prediction per position: the last axis is the
class axis and every leading index is one of the ``N`` predictions (``N = batch·T``), so ``kl`` is
the mean KL divergence per token and ``agreement`` the fraction of tokens whose arg-max is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class FunctionChange:
    """How far two sets of logits are apart (see module docstring for the formulas)."""

    eps_scaled: float
    kl: float
    max_abs: float
    agreement: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def within(self, tolerance: float) -> bool:
        """True when ``eps_scaled`` (percent) is at most ``tolerance``."""
        return self.eps_scaled <= tolerance


def compare_logits(before: Tensor, after: Tensor) -> FunctionChange:
    """:class:`FunctionChange` between logits of shape ``(batch, classes)``, or ``(..., classes)``
    with one prediction per leading index (tokens of ``(batch, T, vocab)``; a 1-D tensor is one
    prediction)."""
    if before.shape != after.shape:
        raise ValueError(
            f"compare_logits: shapes differ, {tuple(before.shape)} vs {tuple(after.shape)}; "
            "compare outputs of networks with the same number of outputs"
        )
    # Checked before the reshape: ``reshape(0, -1)`` of an empty batch raises an obscure
    # RuntimeError ("cannot reshape tensor of 0 elements ...") instead of this message.
    if before.dim() == 0 or before.numel() == 0:
        raise ValueError("compare_logits: empty batch; pass at least one probe input")
    b = before.detach().to(torch.float64).reshape(-1, before.shape[-1])  # (N, classes)
    a = after.detach().to(torch.float64).reshape(b.shape)
    diff = a - b
    denom = b.norm(dim=1).clamp_min(torch.finfo(torch.float64).tiny)
    eps_scaled = float(100.0 * (diff.norm(dim=1) / denom).mean())
    logp = torch.log_softmax(b, dim=1)
    logq = torch.log_softmax(a, dim=1)
    kl = float((logp.exp() * (logp - logq)).sum(dim=1).mean())
    return FunctionChange(
        eps_scaled=eps_scaled,
        kl=max(kl, 0.0),
        max_abs=float(diff.abs().max()),
        agreement=float((a.argmax(1) == b.argmax(1)).double().mean()),
    )


@torch.no_grad()
def function_change(
    before: Callable[[Tensor], Tensor] | Tensor,
    after: Callable[[Tensor], Tensor] | Tensor,
    x: Tensor | None = None,
) -> FunctionChange:
    """Function change between two networks (or two logit tensors) on probe inputs ``x``.

    Args:
        before: a network (any callable ``x -> logits``) or its logits, shape ``(batch, classes)``
            or ``(batch, T, vocab)`` (one prediction per token).
        after: the changed network or its logits.
        x: probe inputs, shape ``(batch, ...)``; needed when ``before``/``after`` are callables.

    Example:
        >>> import torch, copy, isoplastic as ip
        >>> net = ip.IsotropicMLP([4, 6, 5, 3]).double()
        >>> before = copy.deepcopy(net)
        >>> _ = ip.left_diagonalise(net, 0)
        >>> ip.function_change(before, net, torch.randn(8, 4, dtype=torch.float64)).max_abs < 1e-12
        True
    """
    zb = before if isinstance(before, Tensor) else _call(before, x)
    za = after if isinstance(after, Tensor) else _call(after, x)
    return compare_logits(zb, za)


def _call(fn: Callable[[Tensor], Tensor], x: Tensor | None) -> Tensor:
    if x is None:
        raise ValueError("function_change: pass probe inputs x when comparing networks")
    was_training = getattr(fn, "training", None)
    if was_training:
        fn.eval()  # type: ignore[union-attr]
    try:
        return fn(x)
    finally:
        if was_training:
            fn.train()  # type: ignore[union-attr]
