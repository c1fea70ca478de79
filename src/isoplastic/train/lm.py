r"""Language-model batches and held-out bits per character (next-character prediction).

A *window* of context length ``T`` starting at position ``s`` of a token sequence ``t`` is the
input ``t[s : s + T]`` with targets ``t[s + 1 : s + T + 1]``: the model predicts every character
of the window from the ones before it. Training draws windows at uniformly random starts
(:func:`random_starts`); evaluation cuts the held-out text into consecutive, non-overlapping
windows (:func:`eval_windows`), so every held-out character but the first is predicted once,
from up to ``T - 1`` characters of context inside its window.

Bits per character (bpc) are the mean cross-entropy in nats over all predicted characters
divided by ``ln 2`` (:func:`isoplastic.text.bits_per_char`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..text import bits_per_char


def windows(tokens: torch.Tensor, starts: torch.Tensor, context_length: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of the windows starting at ``starts``.

    Args:
        tokens: ``int64`` ``(N,)``.
        starts: ``int64`` ``(B,)`` with ``0 <= s <= N - T - 1``.
        context_length: ``T``.

    Returns:
        ``(x, y)``, both ``(B, T)``: ``x[b, i] = tokens[starts[b] + i]`` and
        ``y[b, i] = tokens[starts[b] + i + 1]``.
    """
    offsets = torch.arange(context_length, device=starts.device)
    idx = starts[:, None] + offsets  # (B, T)
    return tokens[idx], tokens[idx + 1]


def random_starts(n_tokens: int, context_length: int, shape: tuple[int, ...],
                  generator: torch.Generator) -> torch.Tensor:
    """Uniform window starts ``0..n_tokens - T - 1`` (``int64``, ``shape``)."""
    high = n_tokens - context_length  # exclusive: the last target is tokens[N - 1]
    if high < 1:
        raise ValueError(f"random_starts: {n_tokens} tokens hold no window of {context_length} "
                         "+ 1; use a longer text or a shorter context")
    return torch.randint(0, high, shape, generator=generator)


def eval_windows(tokens: torch.Tensor, context_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive non-overlapping windows over ``tokens`` ``(N,)``: ``(x, y)`` each ``(M, T)``
    with ``M = (N - 1) // T`` (a tail shorter than ``T`` predicted characters is dropped)."""
    m = (tokens.numel() - 1) // context_length
    if m < 1:
        raise ValueError(f"eval_windows: {tokens.numel()} tokens hold no window of "
                         f"{context_length} + 1; use a longer text or a shorter context")
    starts = torch.arange(m, device=tokens.device) * context_length
    return windows(tokens, starts, context_length)


def token_logits(logits: torch.Tensor) -> torch.Tensor:
    """``(B, T, V)`` logits as ``(B * T, V)``: one row per predicted character, so that
    :func:`isoplastic.verify.compare_logits` measures the function change per token."""
    return logits.reshape(-1, logits.shape[-1])


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
                  ) -> torch.Tensor:
    """Cross-entropy (nats) of ``(B, T, V)`` logits against ``(B, T)`` targets, over tokens."""
    return F.cross_entropy(token_logits(logits), targets.reshape(-1), reduction=reduction)


@torch.no_grad()
def evaluate_text(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 128) -> dict:
    """Held-out ``test_loss`` (nats per character), ``test_bpc`` and ``test_accuracy`` (the
    fraction of characters whose most likely prediction is right) of ``net`` on windows
    ``x``, ``y`` ``(M, T)``, in eval mode (the training flag is restored)."""
    was = net.training
    net.eval()
    total, correct = 0.0, 0
    try:
        for i in range(0, x.shape[0], batch):
            out = net(x[i:i + batch])  # (b, T, V)
            total += float(sequence_loss(out, y[i:i + batch], "sum"))
            correct += int((out.argmax(-1) == y[i:i + batch]).sum())
    finally:
        net.train(was)
    n = y.numel()
    loss = total / n
    return {"test_loss": loss, "test_bpc": bits_per_char(loss), "test_accuracy": correct / n}


def count_parameters(net: nn.Module) -> int:
    """Number of trained scalars of ``net``."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


__all__ = ["count_parameters", "eval_windows", "evaluate_text", "random_starts",
           "sequence_loss", "token_logits", "windows"]
