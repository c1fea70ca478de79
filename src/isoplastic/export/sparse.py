r"""Sparsity as speed: evaluate the diagonal layers left by :func:`isoplastic.sparsify` as scalings.

After alternating full diagonalisation, ``linears[1], linears[3], …`` of an
:class:`~isoplastic.IsotropicMLP` are rectangular diagonal: ``W_k = [diag(d) | 0]`` (or its
transpose). Their matmul ``h W_kᵀ`` is just ``d ∘ h[:, :m]`` (``m = min(out, in)``), padded with
zeros when ``out > in``. :func:`compile_sparse` turns such a network into a :class:`SparseMLP`
that evaluates diagonal layers element-wise and the others as dense matmuls, with the same
activations, gains and ψ terms, so its outputs equal the dense network's to round-off (exactly
the same products; only the order of additions of exact zeros differs).

Example:
    >>> import torch, isoplastic as ip
    >>> from isoplastic.export import compile_sparse
    >>> net = ip.IsotropicMLP([8, 6, 6, 6, 3]).double()
    >>> _ = ip.sparsify(net)
    >>> sp = compile_sparse(net)
    >>> x = torch.randn(4, 8, dtype=torch.float64)
    >>> bool((sp(x) - net.eval()(x)).abs().max() < 1e-12)
    True
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..core.model import IsoplasticBlock, require_blocks
from ..errors import TopologyError
from ..nn.chain import AffineChain


def _is_diagonal(w: Tensor) -> bool:
    m = min(w.shape)
    off = w.clone()
    off[torch.arange(m), torch.arange(m)] = 0
    return not bool(off.any())


class SparseMLP(nn.Module):
    """Inference module: dense layers as matmuls, diagonal layers as vector scalings.

    Attributes:
        kinds: ``"dense"`` or ``"diagonal"`` for each affine map ``i``.
        widths: ``[n_0, …, n_L]``.
        activations: copies of the source network's isotropic activations.

    Shapes:
        input ``(batch, n_0)`` (or images flattening to it); output ``(batch, n_L)``.
    """

    def __init__(self, weights: Sequence[Tensor], biases: Sequence[Tensor], kinds: Sequence[str],
                 activations: nn.ModuleList, psi: Sequence[Tensor] | None) -> None:
        super().__init__()
        self.kinds = list(kinds)
        self.shapes = [tuple(w.shape) for w in weights]
        self.widths = [self.shapes[0][1]] + [s[0] for s in self.shapes]
        for i, (w, b, kind) in enumerate(zip(weights, biases, kinds, strict=True)):
            if kind == "diagonal":
                m = min(w.shape)
                self.register_buffer(f"w{i}", torch.diagonal(w)[:m].clone())
            else:
                self.register_buffer(f"w{i}", w.detach().clone())
            self.register_buffer(f"b{i}", b.detach().clone())
        self.activations = activations
        self.n_psi = 0 if psi is None else len(psi)
        for k in range(self.n_psi):
            self.register_buffer(f"psi{k}", psi[k].detach().clone())  # type: ignore[index]

    def _affine(self, i: int, h: Tensor) -> Tensor:
        w = self.get_buffer(f"w{i}")
        b = self.get_buffer(f"b{i}")
        if self.kinds[i] == "dense":
            return torch.addmm(b, h, w.mT)
        out, inp = self.shapes[i]
        m = w.shape[0]
        if out <= inp:
            return torch.addcmul(b, h[:, :m], w)  # truncate the input to the diagonal
        z = b.expand(h.shape[0], out).clone()  # pad: rows beyond the diagonal see only the bias
        z[:, :m].addcmul_(h, w)
        return z

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1) if x.dim() > 2 else x
        if x.dim() != 2 or x.shape[1] != self.widths[0]:
            raise ValueError(f"SparseMLP expects inputs of shape (batch, {self.widths[0]}); got "
                             f"{tuple(x.shape)}")
        z = self._affine(0, x)
        for k, act in enumerate(self.activations):
            h, g = act.forward_with_gain(z)
            z = self._affine(k + 1, h)
            if self.n_psi:
                z = z + self.get_buffer(f"psi{k}") * g
        return z

    def parameter_count(self) -> int:
        """Stored numbers (diagonals count ``min(out, in)``; biases, ψ and ``o`` included)."""
        n = sum(b.numel() for name, b in self.named_buffers() if name[0] in "wbp")
        return n + sum(1 for a in self.activations if a.mode.value != "none")

    def extra_repr(self) -> str:
        return f"widths={self.widths}, kinds={self.kinds}"


@torch.no_grad()
def compile_sparse(net: nn.Module, diagonal: str | Sequence[int] = "sparsify") -> nn.Module:
    """Build a module computing the same function as ``net`` with diagonal layers as scalings.

    For a bare :class:`~isoplastic.IsotropicMLP` this returns a :class:`SparseMLP`. For a
    composite model it returns a copy of the model in eval mode in which every isoplastic block
    is replaced by its :class:`SparseMLP` (the other modules are copied as they are).

    Args:
        net: an :class:`~isoplastic.IsotropicMLP` (``psi`` of any mode; ``"expectation"`` has no
            ψ vectors and needs nothing extra at inference), or a module holding such blocks.
        diagonal: which ``linears[i]`` of each block to evaluate as diagonals. ``"sparsify"``
            (default): the layers :func:`isoplastic.sparsify` diagonalises,
            ``i = 1, 3, 5, … ≤ n_hidden − 1``; ``"auto"``: every layer whose off-diagonal
            entries are all exactly zero; or a list of indices.

    Raises:
        TopologyError: a block is not a chain of dense layers, an index is out of range, or a
            layer claimed to be diagonal has a non-zero off-diagonal entry (run
            :func:`isoplastic.sparsify` first, or pass ``diagonal="auto"``).
    """
    found = require_blocks(net, "compile_sparse")
    if "" in found:
        return _compile_block(found[""], diagonal)
    out = copy.deepcopy(net)
    for name in found:
        parent_name, _, attr = name.rpartition(".")
        parent = out.get_submodule(parent_name)
        setattr(parent, attr, _compile_block(out.get_submodule(name), diagonal))
    return out.eval()


def _compile_block(net: IsoplasticBlock, diagonal: str | Sequence[int]) -> nn.Module:
    layers = net.affines() if isinstance(net, AffineChain) else []
    if not layers or not all(type(a) is nn.Linear for a in layers):
        raise TopologyError(
            f"compile_sparse: {type(net).__name__} is not a chain of dense layers (it needs "
            "nn.Linear maps between its hidden spaces, as isoplastic.IsotropicMLP has); "
            "convolutional blocks have no sparse form yet"
        )
    linears, acts = layers, net.activations
    n_lin = len(linears)
    if diagonal == "sparsify":
        claimed = list(range(1, n_lin - 1, 2))
    elif diagonal == "auto":
        claimed = [i for i in range(n_lin) if _is_diagonal(linears[i].weight.detach())]
    elif isinstance(diagonal, str):
        raise TopologyError(f"compile_sparse: diagonal={diagonal!r}; use 'sparsify', 'auto' or "
                            "a list of layer indices")
    else:
        claimed = sorted({int(i) for i in diagonal})
        bad = [i for i in claimed if not 0 <= i < n_lin]
        if bad:
            raise TopologyError(f"compile_sparse: layer indices {bad} out of range 0..{n_lin - 1}")
    for i in claimed:
        w = linears[i].weight.detach()
        if not _is_diagonal(w):
            m = min(w.shape)
            off = w.clone()
            off[torch.arange(m), torch.arange(m)] = 0
            raise TopologyError(
                f"compile_sparse: linears[{i}] (shape {tuple(w.shape)}) is claimed diagonal but "
                f"has {int((off != 0).sum())} non-zero off-diagonal entries (largest "
                f"{float(off.abs().max()):.3g}); run isoplastic.sparsify(net) first, or pass "
                "diagonal='auto' to keep such layers dense"
            )
    kinds = ["diagonal" if i in claimed else "dense" for i in range(n_lin)]
    psi = list(net.psi) if len(net.psi) else None
    sp = SparseMLP([lin.weight.detach() for lin in linears], [lin.bias.detach() for lin in linears],
                   kinds, copy.deepcopy(acts), psi)
    return net.sparse_form(sp.eval()).eval()
