r"""Grouped isotropic networks: each hidden layer split into groups, each group its own isotropic
activation, so the network sits between the isotropic MLP (one group) and element-wise tanh
(one neuron per group).

Why (docs/quality.md): an isotropic MLP's logits are ``G_0(x)(A x + v_0) + Σ_j G_j(x) v_j``, a
linear classifier on ``x`` plus one scalar feature per hidden layer, whatever the width. With
``G`` groups per layer every group contributes its own gain, so the class grows with ``G``, while
each group keeps the continuous symmetry ``O(n_g)`` on which every exact operation rests.

One grouped layer ``d_in → (n_1, …, n_G) → d_out`` is the sum of ``G`` branches, each a
one-hidden-layer :class:`~isoplastic.IsotropicMLP` ``[d_in, n_g, d_out]``:

.. math::
    z_g = W^{in}_g x + b_g, \qquad
    y = Σ_{g=1}^{G} \big( g(z_g; o_g)\,(W^{out}_g z_g + ψ_g) + c_g \big),

with ``W^{in}_g`` ``(n_g, d_in)``, ``W^{out}_g`` ``(d_out, n_g)``, ``ψ_g`` ``(d_out,)`` and a
per-group intrinsic length ``o_g``. The contract's axes are whole tensor axes, so each group
needs tensors of its own: a branch is an existing :class:`~isoplastic.core.IsoplasticBlock`, its
hidden space ``"layers.l.groups.g.0"`` is found by :func:`~isoplastic.hidden_spaces`, and every
operation (rotation, diagonalisation, neurogenesis, neurodegeneration with ``o``/ψ compensation,
``neuroadapt``, ``sparsify``, optimizer transport) runs on one group without any code of its own.
A change in group ``g`` changes branch ``g``'s output only, so the other groups and layers are
untouched and every per-branch bound is a bound on the layer's output.

Output biases: only group 0's ``c_0`` is trained; ``c_g`` for ``g ≥ 1`` are frozen
(``requires_grad=False``, zero at construction). ``G`` trained copies of one bias would each
receive the same gradient and, under Adam, move the summed bias ``G`` times as fast as a single
bias. A frozen ``c_g`` still changes where the library writes it: ψ mode ``"expectation"`` folds
a removed neuron's ``mean(g) b* w*`` into it, exactly.

Depth: ``widths = [d_0, n_1, …, n_H, d_out]`` gives ``H`` grouped layers; between two of them the
sum ``y`` is a linear interface (no activation) of width ``interfaces[l]``, by default the next
hidden width ``n_{l+2}``. The map from hidden layer ``l`` to ``l+1`` is then the product
``W^{in}_{l+1} W^{out}_l`` (``n_{l+2} × d × n_{l+1}``), which can represent any dense
``n_{l+2} × n_{l+1}`` matrix when ``d ≥ min(n_{l+1}, n_{l+2})``: the same function class as a
plain MLP with grouped activations, at ``d (n_{l+1} + n_{l+2})`` weights per interface instead of
``n_{l+1} n_{l+2}`` (twice as many for equal widths) and a factorised (deep-linear) optimisation.

Forward: the group tensors are concatenated once per call (``torch.cat``), so a layer costs two
matrix products, one segment sum of ``z²`` and one gain evaluation for all groups, not ``G``
separate branch calls (measured by the step-time bench of ``isoplastic reproduce quality``). The
fused path covers the tanh profile with the exact series (the default); other settings, and
``fused=False``, run the branches one by one, which is the definition above. The fused gains do
not take the scaled-radius route of :class:`~isoplastic.IsotropicActivation` for ``‖z_g‖²``
beyond the dtype's range.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..activations import AbstractRadialProfile, IntrinsicLength, TanhProfile
from ..errors import TopologyError
from .chain import PsiMode, check_init, check_input_dtype, init_affine, psi_penalty
from .mlp import IsotropicMLP, _check_widths

__all__ = ["GroupedIsotropicMLP", "GroupedLayer", "split_groups"]


def split_groups(width: int, groups: int | Sequence[int], what: str = "hidden layer") -> list[int]:
    """Group widths of a hidden layer of ``width`` neurons.

    ``groups`` is a count ``G`` (``width`` split into ``G`` equal groups; ``G`` must divide it) or
    the list of group widths itself (positive, summing to ``width``)."""
    if isinstance(groups, bool):
        raise TypeError(f"groups={groups!r} for {what}: give a number of groups or a list of "
                        "group widths")
    if isinstance(groups, int):
        if groups < 1 or width % groups:
            divisors = [d for d in range(1, width + 1) if width % d == 0]
            raise ValueError(
                f"groups={groups} does not divide {what} of width {width} into equal groups; "
                f"choose a divisor of {width} ({', '.join(map(str, divisors))}) or give the "
                "group widths as a list")
        return [width // groups] * groups
    sizes = [int(n) for n in groups]
    if not sizes or any(n < 1 for n in sizes) or sum(sizes) != width:
        raise ValueError(
            f"group widths {sizes} for {what} of width {width}: give positive widths that sum "
            f"to {width}, e.g. {[width // 2, width - width // 2] if width > 1 else [1]}")
    return sizes


class GroupedLayer(nn.Module):
    """``y = Σ_g branch_g(x)``: ``G`` one-hidden-layer isotropic MLPs ``[d_in, n_g, d_out]``
    (``groups[g]``) summed (see the module docstring).

    Shapes: input ``(batch, d_in)``, output ``(batch, d_out)``.
    """

    def __init__(self, d_in: int, group_widths: Sequence[int], d_out: int, *,
                 intrinsic_length: str, psi: str, init: str, eps: float,
                 profile: AbstractRadialProfile | None, psi_decay: float, small_ball: str,
                 generator: torch.Generator | None, fused: bool = True) -> None:
        super().__init__()
        sizes = [int(n) for n in group_widths]
        self.groups = nn.ModuleList(
            IsotropicMLP([d_in, n, d_out], intrinsic_length=intrinsic_length, psi=psi,
                         eps=eps, profile=profile, psi_decay=psi_decay, small_ball=small_ball)
            for n in sizes)
        self.fused = bool(fused)
        # the whole layer is initialised as one d_in → Σn_g → d_out pair of matrices and split,
        # so that an orthogonal start is orthogonal across groups (and G = width reproduces the
        # element-wise MLP's initialisation draw for draw)
        whole = [nn.Linear(d_in, sum(sizes)), nn.Linear(sum(sizes), d_out)]
        init_affine(whole, init, generator)
        with torch.no_grad():
            rows = whole[0].weight.split(sizes, dim=0)
            cols = whole[1].weight.split(sizes, dim=1)
            for g, branch in enumerate(self.groups):
                branch.linears[0].weight.copy_(rows[g])
                branch.linears[0].bias.zero_()
                branch.linears[1].weight.copy_(cols[g])
                branch.linears[1].bias.zero_()
                if g:
                    branch.linears[1].bias.requires_grad_(False)
        self._index_cache: tuple[tuple[int, ...], torch.device, Tensor] | None = None

    @property
    def group_widths(self) -> list[int]:
        return [b.widths[1] for b in self.groups]

    def psi_penalty(self) -> Tensor:
        """``λ Σ_g ‖ψ_g‖²`` (ψ mode ``"trainable+decay"``) in one concatenation and one dot
        product, else 0."""
        first = self.groups[0]
        return psi_penalty([b.psi[0] for b in self.groups if len(b.psi)],  # type: ignore[arg-type]
                           first.psi_mode, first.psi_decay, first.linears[0].weight)

    def _segments(self, sizes: tuple[int, ...], device: torch.device) -> Tensor:
        """``(n,)``: the group of every neuron (cached per layout)."""
        cache = self._index_cache
        if cache is None or cache[0] != sizes or cache[1] != device:
            index = torch.repeat_interleave(torch.arange(len(sizes), device=device),
                                            torch.tensor(sizes, device=device))
            self._index_cache = cache = (sizes, device, index)
        return cache[2]

    def _fusable(self, x: Tensor) -> bool:
        acts = [b.activations[0] for b in self.groups]
        first = acts[0]
        return (self.fused and x.dtype not in (torch.float16, torch.bfloat16)
                and all(type(a.profile) is TanhProfile and a.small_ball == "series"
                        and a.mode is first.mode and a.eps == first.eps for a in acts))

    def forward(self, x: Tensor) -> Tensor:
        if not self._fusable(x):
            return self.reference(x)
        branches = list(self.groups)
        act = branches[0].activations[0]
        sizes = tuple(b.linears[0].weight.shape[0] for b in branches)
        w_in = torch.cat([b.linears[0].weight for b in branches])  # (n, d_in)
        b_in = torch.cat([b.linears[0].bias for b in branches])  # (n,)
        z = torch.addmm(b_in, x, w_in.mT)  # (batch, n)
        n_groups = len(sizes)
        if len(set(sizes)) == 1:
            q = z.unflatten(1, (n_groups, sizes[0])).square().sum(-1)  # (batch, G)
        else:
            index = self._segments(sizes, z.device)
            q = z.new_zeros(z.shape[0], n_groups).index_add(1, index, z * z)  # (batch, G)
        if act.mode is IntrinsicLength.TRAINABLE:  # one exp for every group's log o
            q = q + torch.stack([b.activations[0].log_o for b in branches]).exp().to(q.dtype)
        elif act.mode is IntrinsicLength.CONSTANT:
            q = q + torch.stack([b.activations[0].o_buffer for b in branches]).to(q.dtype)  # (G,)
            if act.mode is IntrinsicLength.CONSTANT:  # a raw o may be negative: ρ² = |‖z‖² + o|
                q = q.abs()
        if not bool(torch.isfinite(q).all()):
            # ‖z_g‖² overflowed (or z holds NaN/Inf): the activation's own gain handles both
            return self.reference(x)
        gain = act.profile.gain(q, act.eps * act.eps)  # (batch, G)
        if branches[0].psi_mode is PsiMode.EXPECTATION and self.training:
            for g, branch in enumerate(branches):
                branch._note_gain(0, gain[:, g:g + 1])
        if len(set(sizes)) == 1:
            per_neuron = gain.repeat_interleave(sizes[0], dim=1)  # (batch, n)
        else:
            per_neuron = gain.index_select(1, self._segments(sizes, z.device))
        w_out = torch.cat([b.linears[1].weight for b in branches], dim=1)  # (d_out, n)
        bias = torch.stack([b.linears[1].bias for b in branches]).sum(0)  # (d_out,)
        y = torch.addmm(bias, z * per_neuron, w_out.mT)  # (batch, d_out)
        if len(branches[0].psi):
            psi = torch.stack([b.psi[0] for b in branches])  # (G, d_out)
            y = y + gain @ psi
        return y

    def reference(self, x: Tensor) -> Tensor:
        """The definition, one branch at a time: ``Σ_g branch_g(x)``."""
        out = self.groups[0](x)
        for branch in list(self.groups)[1:]:
            out = out + branch(x)
        return out


class GroupedIsotropicMLP(nn.Module):
    """An MLP whose hidden layers are split into groups, each with its own isotropic activation.

    Args:
        widths: ``[d_in, n_1, …, n_H, d_out]``: input, hidden widths (sum over the groups), output.
        groups: one entry for every hidden layer, or one for all: a number of equal groups ``G``
            (it must divide the width; ``G = 1`` is the isotropic MLP, ``G = n`` element-wise
            tanh) or a list of group widths.
        interfaces: widths of the linear spaces between consecutive grouped layers (``H − 1``
            of them); default: the next hidden width.
        intrinsic_length, psi, init, eps, profile, psi_decay, small_ball: as for
            :class:`~isoplastic.IsotropicMLP`, for every group.
        generator: RNG of the initial weights.
        fused: concatenate the groups' tensors in the forward pass (two matrix products per
            layer); ``False`` runs the branches one by one.

    Hidden spaces (:func:`~isoplastic.hidden_spaces`): ``"layers.l.groups.g.0"``, one per group.

    Shapes: input ``(batch, d_in)`` (or images flattening to it); output ``(batch, d_out)``.

    Example:
        >>> import torch, isoplastic as ip
        >>> net = ip.GroupedIsotropicMLP([64, 32, 32, 10], groups=4)
        >>> net(torch.randn(5, 64)).shape, net.group_widths
        (torch.Size([5, 10]), [[8, 8, 8, 8], [8, 8, 8, 8]])
        >>> list(ip.hidden_spaces(net))[:2]
        ['layers.0.groups.0.0', 'layers.0.groups.1.0']
    """

    kind = "grouped"

    def __init__(
        self,
        widths: Sequence[int],
        groups: int | Sequence[int | Sequence[int]],
        *,
        interfaces: Sequence[int] | None = None,
        intrinsic_length: str = "trainable",
        psi: str = "trainable+decay",
        init: str = "orthogonal",
        eps: float = 1e-3,
        profile: AbstractRadialProfile | None = None,
        psi_decay: float = 0.1,
        small_ball: str = "series",
        generator: torch.Generator | None = None,
        fused: bool = True,
    ) -> None:
        super().__init__()
        widths = _check_widths(widths)
        hidden = widths[1:-1]
        if not hidden:
            raise ValueError(f"widths={widths}: a grouped MLP needs at least one hidden layer, "
                             "e.g. [784, 256, 10]")
        IntrinsicLength.parse(intrinsic_length)
        PsiMode.parse(psi)
        check_init(init)
        if isinstance(groups, int) and not isinstance(groups, bool):
            per_layer: list = [groups] * len(hidden)
        elif isinstance(groups, (str, bytes)) or not isinstance(groups, Sequence):
            raise TypeError(f"groups={groups!r}: give an int or one entry per hidden layer")
        else:
            per_layer = list(groups)
            if len(per_layer) != len(hidden):
                raise ValueError(f"groups has {len(per_layer)} entries for {len(hidden)} hidden "
                                 f"layers {hidden}; give one per hidden layer, or one int for all")
        sizes = [split_groups(n, g, f"hidden layer {k}")
                 for k, (n, g) in enumerate(zip(hidden, per_layer))]
        if interfaces is None:
            inter = list(hidden[1:])
        else:
            inter = [int(d) for d in interfaces]
            if len(inter) != len(hidden) - 1 or any(d < 1 for d in inter):
                raise ValueError(f"interfaces={inter}: give {len(hidden) - 1} positive widths, "
                                 "one between each pair of consecutive hidden layers")
        ends = [widths[0], *inter, widths[-1]]
        self.layers = nn.ModuleList(
            GroupedLayer(ends[k], sizes[k], ends[k + 1], intrinsic_length=intrinsic_length,
                         psi=psi, init=init, eps=eps, profile=profile, psi_decay=psi_decay,
                         small_ball=small_ball, generator=generator, fused=fused)
            for k in range(len(hidden)))
        self.fused = bool(fused)
        self.check_invariants()

    # -- structure -------------------------------------------------------------------------------
    @property
    def group_widths(self) -> list[list[int]]:
        """Per hidden layer, the width of each group (after any structural change)."""
        return [layer.group_widths for layer in self.layers]

    @property
    def interfaces(self) -> list[int]:
        return [layer.groups[0].widths[-1] for layer in list(self.layers)[:-1]]

    @property
    def widths(self) -> list[int]:
        """``[d_in, n_1, …, n_H, d_out]`` with ``n_l`` the sum of layer ``l``'s group widths."""
        first, last = self.layers[0].groups[0].widths, self.layers[-1].groups[0].widths
        return [first[0], *(sum(w) for w in self.group_widths), last[-1]]

    def check_invariants(self) -> None:
        """Raise :class:`TopologyError` if the groups of a layer disagree on its input or output
        width, or consecutive layers on the interface between them."""
        prev = None
        for k, layer in enumerate(self.layers):
            ends = {(b.widths[0], b.widths[-1]) for b in layer.groups}
            if len(ends) != 1:
                raise TopologyError(f"layers[{k}]: groups map between different widths {ends}")
            (d_in, d_out), = ends
            if prev is not None and d_in != prev:
                raise TopologyError(f"layers[{k}] takes {d_in} inputs, layers[{k - 1}] gives "
                                    f"{prev}")
            prev = d_out

    def psi_penalty(self) -> Tensor:
        """``λ Σ ‖ψ‖²`` over every group (``psi="trainable+decay"``), else 0."""
        total = self.layers[0].psi_penalty()
        for layer in list(self.layers)[1:]:
            total = total + layer.psi_penalty()
        return total

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        first = self.layers[0].groups[0].linears[0]
        x = check_input_dtype(self, x, first.weight)
        x = x.flatten(1) if x.dim() > 2 else x
        if x.dim() != 2 or x.shape[1] != first.weight.shape[1]:
            raise ValueError(f"{type(self).__name__} expects inputs of shape (batch, "
                             f"{first.weight.shape[1]}) (or images that flatten to it); got "
                             f"{tuple(x.shape)}")
        for layer in self.layers:
            x = layer(x)
        return x

    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture with its current group widths
        (``type(net)(**net.config())``; used by checkpoints)."""
        branch = self.layers[0].groups[0]
        act = branch.activations[0]
        return {
            "widths": self.widths,
            "groups": self.group_widths,
            "interfaces": self.interfaces,
            "intrinsic_length": act.mode.value,
            "psi": branch.psi_mode.value,
            "eps": act.eps,
            "psi_decay": branch.psi_decay,
            "small_ball": act.small_ball,
            "fused": self.fused,
        }
