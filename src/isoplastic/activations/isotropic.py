r"""Isotropic activations with an intrinsic length.

For a layer vector ``z`` (the feature axis ``dim``) and intrinsic length ``o``:

.. math::
    ρ(z; o) = \sqrt{|\,‖z‖^2 + o\,|}, \qquad g(z; o) = s(ρ)/ρ, \qquad φ(z; o) = g(z; o)\, z.

``φ`` commutes with every orthogonal ``R`` acting on the feature axis: ``φ(Rz) = Rφ(z)``, because
``‖Rz‖ = ‖z‖``. The gain ``g`` is one scalar per sample (per spatial position for convolutions).

The intrinsic length ``o`` behaves like the squared length of a phantom coordinate that is always
present: neurodegeneration folds a removed neuron's constant pre-activation ``b*`` into it,
``o ← o + b*²``, which keeps ``ρ`` and hence ``g`` unchanged.

Numerics: the gain is evaluated as a function of ``q = ρ²`` (see :mod:`.profiles`); for
``q < eps²`` an exact series replaces the closed form, so values and gradients of every order are
finite at ``z = 0`` (including ``o = 0``) and continuous across the switch. ``small_ball="paper"``
instead reproduces the author's code: ``g = tanh(√|o|)/√|o|`` if ``|o| > 0.01`` else 1 inside the ball
(a jump of about ``eps²/3`` at its edge).

Compilation: nothing branches in Python on tensor values under ``torch.compile`` or
``torch.export`` (one graph, no host synchronisation): the series, the closed form and the scaled
radius for an overflowing ``‖z‖²`` are all evaluated and selected with ``torch.where`` on clamped
operands, so every derivative stays finite. Eager mode reads ``min q, max q`` once per call to
skip the branches a batch does not need (see :func:`_may_branch`); values are the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..choices import Choice
from .profiles import (
    AbstractRadialProfile,
    TanhProfile,
    tanh_gain_fast,
    tanh_gain_slope,
)


class IntrinsicLength(Choice, argument="intrinsic_length"):
    """How the intrinsic length ``o`` is stored.

    * ``none``: ``o = 0`` always; structural changes do not update it.
    * ``constant``: a buffer (initially ``1e-6``) changed only by structural operations.
    * ``trainable``: a parameter stored as ``log o`` (so ``o > 0``), initially ``o = 1e-6``.
    """

    NONE = "none"
    CONSTANT = "constant"
    TRAINABLE = "trainable"


O_INIT = 1e-6
_HALF = (torch.float16, torch.bfloat16)

#: Use the fused autograd kernel for isotropic tanh (same values). Prefer the context manager
#: :func:`fused_kernel` to switching this by hand; it is read at every call (``torch.compile``
#: guards on it, so a change recompiles rather than reusing a stale graph).
FUSED = True


@contextmanager
def fused_kernel(enabled: bool) -> Iterator[None]:
    """Within the block, isotropic tanh uses the fused kernel (``True``) or the plain-autograd
    reference formula (``False``: for timing and debugging; same values); restored on exit.

    Example:
        >>> act = IsotropicTanh()
        >>> with fused_kernel(False):
        ...     h = act(torch.ones(2, 3))
    """
    global FUSED
    previous, FUSED = FUSED, bool(enabled)
    try:
        yield
    finally:
        FUSED = previous


def _may_branch() -> bool:
    """Whether the activation may read tensor values on the host to skip unneeded branches.

    Eager mode only: one host read per call (``min q``, ``max q``) selects the plain closed form
    for a batch without small-ball or overflowing rows (the usual case); it costs less than the
    ~50 small extra operations of the branch-free formulas (fused backward of the gain at
    batch 48, width 256 on CPU: 69 µs vs 174 µs). Under ``torch.compile`` / ``torch.export``
    tracing a value test would break the graph, so every branch is evaluated and selected with
    ``torch.where`` (the compiler fuses them): no graph break and no host synchronisation.
    """
    return not torch.compiler.is_compiling()


def _signed_q(sq: Tensor, may_be_negative: bool) -> Tensor:
    """``q = |sq|`` with derivative ``+1`` at ``sq = 0``: the identity when ``sq ≥ 0``.

    ``sq = ‖z‖² + o`` is negative only for a negative ``o``; ``|·|``'s own derivative at 0 (zero)
    would remove the ``g'(q)`` terms of the second derivative at ``z = 0`` for ``o = 0``.
    """
    if not may_be_negative:
        return sq
    return torch.where(sq >= 0, sq, -sq)


class IsotropicActivation(nn.Module):
    """``φ(z) = s(ρ)/ρ · z`` over axis ``dim`` with ``ρ = sqrt(|‖z‖² + o|)``.

    Args:
        profile: the radial profile ``s`` (default :class:`TanhProfile`).
        intrinsic_length: ``"none" | "constant" | "trainable"`` (see :class:`IntrinsicLength`).
        eps: radius of the small ball around ``ρ = 0`` where the series (or the paper's branch) is
            used.
        dim: the feature axis (``-1`` for ``(batch, n)``, ``1`` for ``(batch, C, H, W)``).
        small_ball: ``"series"`` (exact, default) or ``"paper"`` (the author's constant branch).
        o_init: initial intrinsic length for the constant and trainable modes.

    Shapes:
        input ``z``: ``(..., n, ...)`` with the feature axis at ``dim``; output: same shape.
        :meth:`forward_with_gain` also returns the gain, shape ``z`` with ``dim`` of size 1.

    Example:
        >>> act = IsotropicActivation(intrinsic_length="trainable")
        >>> z = torch.randn(5, 3)
        >>> act(z).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        profile: AbstractRadialProfile | None = None,
        intrinsic_length: str | IntrinsicLength = "none",
        eps: float = 1e-3,
        dim: int = -1,
        small_ball: str = "series",
        o_init: float = O_INIT,
    ) -> None:
        super().__init__()
        self.profile = profile if profile is not None else TanhProfile()
        self.mode = IntrinsicLength.parse(intrinsic_length)
        if not eps > 0:
            raise ValueError(f"eps={eps} must be positive (the small-ball radius, e.g. 1e-3)")
        if small_ball not in ("series", "paper"):
            raise ValueError(f"small_ball={small_ball!r}; choose 'series' or 'paper'")
        self.eps = float(eps)
        self.dim = dim
        self.small_ball = small_ball
        if self.mode is IntrinsicLength.TRAINABLE:
            if not o_init > 0:
                raise ValueError(f"o_init={o_init} must be > 0 for trainable (stored as log o)")
            self.log_o = nn.Parameter(torch.tensor(math.log(o_init)))
        elif self.mode is IntrinsicLength.CONSTANT:
            self.register_buffer("o_buffer", torch.tensor(float(o_init)))

    # -- intrinsic length -------------------------------------------------------------------
    @property
    def o(self) -> float:
        """The intrinsic length as a Python float (0 for mode ``none``)."""
        return float(self.o_tensor().detach())

    @o.setter
    def o(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"intrinsic length o={value} must be finite")
        with torch.no_grad():
            if self.mode is IntrinsicLength.NONE:
                if value != 0.0:
                    raise ValueError(
                        "this activation has intrinsic_length='none' (o fixed at 0); construct it "
                        "with intrinsic_length='constant' or 'trainable' to set o"
                    )
            elif self.mode is IntrinsicLength.CONSTANT:
                self.o_buffer.fill_(value)
            else:
                if not value > 0:
                    raise ValueError(
                        f"o={value}: a trainable intrinsic length is stored as log o and must be > 0"
                    )
                self.log_o.fill_(math.log(value))

    def o_tensor(self) -> Tensor:
        """``o`` as a 0-dim tensor that carries gradient in the trainable mode."""
        if self.mode is IntrinsicLength.TRAINABLE:
            return self.log_o.exp()
        if self.mode is IntrinsicLength.CONSTANT:
            return self.o_buffer
        return torch.zeros(())

    # -- forward ------------------------------------------------------------------------------
    def gain(self, z: Tensor) -> Tensor:
        """The scalar gain ``g(z; o)``: ``z``'s shape with axis ``dim`` reduced to size 1.

        Isotropic tanh with the exact series takes the fused kernel (analytic backward, no
        ``φ(z)`` formed): layers that only need ``g`` use this; the MLP, which computes
        ``W φ(z) + ψ g + b = g (W z + ψ) + b``, uses :meth:`gain_affine` (the product in the
        same node).
        """
        if z.dtype in _HALF:
            return self.gain(z.float()).to(z.dtype)
        if self._fast_path_ok(z):
            return self._fast(z, with_h=False)
        return self._gain_formula(z)

    def _gain_formula(self, z: Tensor) -> Tensor:
        sq = (z * z).sum(dim=self.dim, keepdim=True)
        o = None
        if self.mode is not IntrinsicLength.NONE:
            o = self.o_tensor().to(dtype=z.dtype, device=z.device)
            sq = sq + o
        q = _signed_q(sq, may_be_negative=self.mode is IntrinsicLength.CONSTANT)
        q_switch = self.eps * self.eps
        if self.small_ball == "paper":
            # clamped above too: where ‖z‖² overflowed, r·r's derivative 2r stays finite
            r = torch.sqrt(torch.clamp(q, min=q_switch, max=torch.finfo(q.dtype).max))
            outside = _unless_overflow(self.profile.gain(r * r, q_switch), q, z, o, self.dim,
                                       self.profile)
            return torch.where(q <= q_switch, self._paper_inside(o, q), outside)
        return _unless_overflow(self.profile.gain(q, q_switch), q, z, o, self.dim, self.profile)

    @staticmethod
    def _paper_inside(o: Tensor | None, q: Tensor) -> Tensor:
        """The paper's gain inside the small ball: ``tanh(√|o|)/√|o|`` if ``|o| > 0.01``, else 1.

        The ball is closed: it holds where ``q ≤ eps²`` (the edge included; the series of the
        default ``small_ball="series"`` holds only where ``q < eps²``).

        A constant of the forward pass (no gradient to ``o``, as in the author's code), selected
        with ``torch.where`` on a clamped radius so nothing branches on ``o``'s value.
        """
        if o is None:
            return torch.ones_like(q)
        a = o.detach().abs()
        r = torch.sqrt(torch.clamp(a, min=0.01))
        return torch.where(a > 0.01, torch.tanh(r) / r, torch.ones_like(r)).expand_as(q)

    def forward_with_gain(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(φ(z), g(z))``; the gain is reused by the ψ term of the next layer.

        float16 / bfloat16 inputs are evaluated in float32 and cast back: ``‖z‖²`` would
        overflow float16 already for ``‖z‖ > 256``.
        """
        if z.dtype in _HALF:
            h, g = self.forward_with_gain(z.float())
            return h.to(z.dtype), g.to(z.dtype)
        if self._fast_path_ok(z):
            return self._fast(z, with_h=True)
        g = self._gain_formula(z)
        return g * z, g

    def gain_affine(self, z: Tensor, u: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """``(b + g(z) ⊙ u, g(z))``: the gain applied to ``u`` and shifted by ``b``, as the MLP's
        next pre-activation ``z_{k+1} = g_k ⊙ (z_k Wᵀ + ψ_k) + b``.

        Shapes: ``z`` as for :meth:`gain`; ``u`` broadcastable with the gain (``(batch, m)``
        against ``(batch, 1)``); ``b`` broadcastable with the result (``(m,)``). Values are those
        of ``torch.addcmul(b, u, self.gain(z))``. Isotropic tanh with the exact series and equal
        float32/float64 dtypes runs as one autograd node with the gain's fused kernel (the
        product's gradients ``∂L/∂u = g ∂L/∂out``, ``∂L/∂b = Σ ∂L/∂out`` and the gain's
        ``⟨∂L/∂out, u⟩`` computed in its backward); other cases compose :meth:`gain` and
        ``addcmul``.
        """
        if self._fast_path_ok(z) and z.dtype not in _HALF and u.dtype == z.dtype == b.dtype:
            return self._fast(z, with_h=False, affine=(u, b))
        g = self.gain(z)
        return torch.addcmul(b, u, g.to(u.dtype)), g

    def forward(self, z: Tensor) -> Tensor:
        if z.dtype in _HALF:
            return self.forward_with_gain(z)[0]
        if self._fast_path_ok(z):
            return self._fast(z, with_h=True)[0]
        return self._gain_formula(z) * z

    # -- fast path ----------------------------------------------------------------------------
    def _fast_path_ok(self, z: Tensor) -> bool:
        """The fused kernel covers isotropic tanh with the exact series (the default)."""
        return (FUSED and type(self.profile) is TanhProfile and self.small_ball == "series"
                and z.is_floating_point())

    def _fast(self, z: Tensor, with_h: bool, affine: tuple[Tensor, Tensor] | None = None):
        o, log = None, False
        if self.mode is IntrinsicLength.TRAINABLE and self.log_o.dtype == z.dtype:
            o, log = self.log_o, True  # exp inside the kernel: one autograd node, not two
        elif self.mode is not IntrinsicLength.NONE:
            o = self.o_tensor().to(dtype=z.dtype, device=z.device)
        u, b = affine if affine is not None else (None, None)
        return _IsotropicTanhFn.apply(z, o, self.dim, self.eps * self.eps, with_h, log, u, b)

    def extra_repr(self) -> str:
        o = f", o={self.o:.3g}" if self.mode is not IntrinsicLength.NONE else ""
        return (f"profile={self.profile.name}, intrinsic_length={self.mode.value}{o}, "
                f"eps={self.eps}, dim={self.dim}")


def _scale_exponent(dtype: torch.dtype) -> int:
    """``k`` with ``(z·2⁻ᵏ)²`` finite for every finite ``z`` and, where ``‖z‖²`` overflows, far
    above the smallest normal number: ``5/8`` of the dtype's largest binary exponent (80 for
    float32, 640 for float64)."""
    return 5 * math.frexp(torch.finfo(dtype).max)[1] // 8


def _scaled_radius(z: Tensor, o: Tensor | None, dim: int) -> Tensor:
    """``ρ = sqrt(|‖z‖² + o|)`` without forming ``‖z‖²``: ``2ᵏ sqrt(|Σ(z 2⁻ᵏ)² + o 2⁻²ᵏ|)``.

    Scaling by a power of two is exact, so the result is finite for every finite ``z`` whose
    radius is (``‖z‖²`` overflows float32 above ~1.8e19) and as accurate as the unscaled sum.
    One fixed scale, not a per-row maximum: no extra reduction, and under ``torch.compile`` the
    sum fuses with ``‖z‖²``'s. Safe inside ``torch.where`` for every row: the radius is at least
    ``2ᵏ sqrt(tiny)`` (``≈ 1e5`` in float32) and every local derivative is finite, so a zero
    gradient from an unselected branch stays zero (no ``0 · ∞``).
    """
    k = _scale_exponent(z.dtype)
    down = 2.0 ** -k
    s = ((z * down) ** 2).sum(dim=dim, keepdim=True)
    if o is not None:
        s = s + o * down * down
    return torch.sqrt(s.abs().clamp_min(torch.finfo(s.dtype).tiny)) * 2.0 ** k


def _unless_overflow(g: Tensor, q: Tensor, z: Tensor, o: Tensor | None, dim: int,
                     profile: AbstractRadialProfile) -> Tensor:
    """``g`` with its entries where ``q`` overflowed to ``inf`` (``s(∞)/∞ = 0`` there) replaced
    by the profile's gain at the scaled radius (``≈ 1/ρ`` for tanh, so ``‖φ(z)‖ ≈ 1``).

    Branch-free except in eager mode (:func:`_may_branch`), which skips the scaled radius when
    no entry overflowed.
    """
    if not q.numel():
        return g
    bad = torch.isinf(q)
    if _may_branch() and not bool(bad.any()):
        return g
    return torch.where(bad, profile.gain_at_radius(_scaled_radius(z, o, dim)), g)


def _reference_tanh(z: Tensor, o: Tensor | None, dim: int, q_switch: float,
                    may_be_negative: bool = True) -> tuple[Tensor, Tensor]:
    """The plain-autograd formula of :meth:`IsotropicActivation.forward_with_gain` (tanh profile)."""
    sq = (z * z).sum(dim=dim, keepdim=True)
    if o is not None:
        sq = sq + o
    q = _signed_q(sq, may_be_negative and o is not None)
    g = _unless_overflow(TanhProfile().gain(q, q_switch), q, z, o, dim, TanhProfile())
    return g * z, g


class _IsotropicTanhFn(torch.autograd.Function):
    r"""Fused ``(h, g) = (g(q) z, g(q))`` (or ``g`` alone), ``q = |‖z‖² + o|``, with an analytic
    backward.

    Inputs ``(z, o, dim, q_switch, with_h, log_o, u, b)``: ``o`` is ``None``, the intrinsic
    length, or (``log_o=True``) the trainable parameter ``log o``, exponentiated inside. Forward
    values are bit-identical to :func:`_reference_tanh` (same operations on the same clamped
    operands). With ``u`` and ``b`` (and ``with_h=False``) the outputs are
    ``(addcmul(b, u, g), g)``: the affine step of the MLP in the same node (see below).

    No Python branch on tensor values under ``torch.compile`` / ``torch.export``: every case —
    the small-ball series, the closed form, the scaled radius where ``‖z‖²`` overflows — is
    evaluated and selected with ``torch.where`` on clamped operands, so unselected branches
    stay finite. In eager mode (:func:`_may_branch`) one host read of ``min q, max q`` per call
    lets a batch with neither small-ball nor overflowing rows (the usual case) take the plain
    closed form ``tanh(√q)/√q``, whose backward reuses ``tanh ρ``. Backward, with
    ``s = ⟨∂L/∂h, z⟩ + ∂L/∂g`` per sample and ``c = s · g'(q) · dq/d(‖z‖² + o)``:

    .. math:: ∂L/∂z = g\,∂L/∂h + 2c\,z, \qquad ∂L/∂o = Σ c, \qquad ∂L/∂\log o = o Σ c,

    i.e. ``(g I + 2 g'(q) z zᵀ)`` applied to the gradient, in three passes over ``(batch, n)``
    and one new buffer, instead of the dozen passes autograd makes. In the affine form
    ``out = b + g u`` the gradient ``∂L/∂g`` adds ``⟨∂L/∂out, u⟩`` (summed to ``g``'s shape), and
    ``∂L/∂u = g ∂L/∂out``, ``∂L/∂b = ∂L/∂out`` summed to ``b``'s shape: the operations of
    ``addcmul``'s own backward, so gradients are bit-identical to the composition, without its
    autograd node and its copies of ``u`` and ``g`` (scaled by ``value = 1``). Outside the small ball
    ``g'(q) = (1 − tanh²ρ − g)/(2q)``, the expression autograd evaluates through ``tanh(ρ)/ρ``;
    where ``q`` overflowed, ``g'`` is taken as 0. When a graph of the backward is requested
    (``create_graph=True``: double backward, gradgradcheck), the backward re-derives the
    gradient through the reference formula with autograd, so derivatives of every order stay
    available (the first derivatives are the same either way, to round-off).
    """

    @staticmethod
    def forward(ctx, z: Tensor, o: Tensor | None, dim: int, q_switch: float,  # type: ignore[override]
                with_h: bool = True, log_o: bool = False, u: Tensor | None = None,
                b: Tensor | None = None):
        sq = (z * z).sum(dim=dim, keepdim=True)
        o_val = o
        if o is not None:
            o_val = o.exp() if log_o else o
            sq = sq + o_val
        # ‖z‖² + o < 0 only for a raw o < 0 (exp(log o) > 0); |sq| = sq bit for bit otherwise
        nonneg = o is None or log_o
        q = sq if nonneg else sq.abs()
        closed_only = False
        if _may_branch() and q.numel():
            lo, hi = torch.aminmax(q)
            closed_only = lo.item() >= q_switch and hi.item() < math.inf  # NaN: False
        if closed_only:
            rho = torch.sqrt(q)
            t = torch.tanh(rho)
            g = t / rho
        else:
            g = tanh_gain_fast(q, q_switch)
            # rows whose ‖z‖² overflowed: the gain from the scaled radius (limit B2)
            g = _unless_overflow(g, q, z, o_val, dim, TanhProfile())
            t = None  # the backward takes the branch-free slope, with g'(∞) = 0
        ctx.dim = dim
        ctx.q_switch = q_switch
        ctx.nonneg = nonneg
        ctx.with_h = with_h
        ctx.log_o = log_o
        ctx.set_materialize_grads(False)
        ctx.affine = u is not None
        ctx.save_for_backward(z, sq, g, t, o, o_val, u, b)
        if ctx.affine:
            return torch.addcmul(b, u, g), g
        if not with_h:
            return g
        return g * z, g

    @staticmethod
    def backward(ctx, *grads: Tensor | None):  # type: ignore[override]
        z, sq, g, t, o, o_val, u, b = ctx.saved_tensors
        grad_out = grad_h = None
        if ctx.affine:
            grad_out, grad_g = grads
        elif ctx.with_h:
            grad_h, grad_g = grads
        else:
            grad_g = grads[0]
        if grad_out is None and grad_h is None and grad_g is None:
            return (None,) * 8
        if torch.is_grad_enabled():
            return _IsotropicTanhFn._backward_with_graph(ctx, z, o, u, b, grad_out, grad_h,
                                                         grad_g)
        dim = ctx.dim
        s = du = db = None
        if grad_out is not None:
            # addcmul's backward: ∂L/∂u = ∂L/∂out · g, ∂L/∂b and ∂L/∂g summed to their shapes
            if ctx.needs_input_grad[6]:
                du = grad_out * g
            if ctx.needs_input_grad[7]:
                db = grad_out.sum_to_size(b.shape)
            s = (grad_out * u).sum_to_size(g.shape)
        if grad_h is not None:
            s = (grad_h * z).sum(dim=dim, keepdim=True)
        if grad_g is not None:
            s = grad_g if s is None else s + grad_g
        q = sq if ctx.nonneg else sq.abs()
        if t is not None:
            # 2c = s (1 - t² - g) / q  (no point of this batch is in the small ball)
            c2 = (1.0 - t * t).sub_(g).div_(q).mul_(s)
        else:
            c2 = tanh_gain_slope(q, ctx.q_switch).mul_(s).mul_(2.0)
            # g'(∞) = 0 exactly, also where s itself overflowed (0 · ∞)
            c2 = torch.where(torch.isinf(q), torch.zeros_like(c2), c2)
        if not ctx.nonneg:  # dq/dsq = -1 where ‖z‖² + o < 0
            c2 = torch.where(sq < 0, -c2, c2)
        dz = do = None
        if ctx.needs_input_grad[0]:
            if grad_h is None:
                dz = c2 * z
            else:
                dz = grad_h * g
                dz.addcmul_(c2, z)
        if ctx.needs_input_grad[1] and o is not None:
            do = 0.5 * c2.sum()
            if ctx.log_o:
                do = do * o_val  # d/d log o = o d/do
            do = do.reshape(o.shape)
        return dz, do, None, None, None, None, du, db

    @staticmethod
    def _backward_with_graph(ctx, z, o, u, b, grad_out, grad_h, grad_g):
        """The gradients of every input (``z, o, …, u, b``) through the reference formula with
        autograd and ``create_graph``, for the inputs that need one (``None`` for the others:
        ``z`` may need none while the trainable ``o`` does)."""
        tensors = {0: z, 1: o, 6: u, 7: b}  # argument position -> tensor input
        wanted = [i for i, t in tensors.items() if t is not None and ctx.needs_input_grad[i]]
        inputs = [tensors[i] for i in wanted]
        with torch.enable_grad():
            o_val = o.exp() if o is not None and ctx.log_o else o
            h, g = _reference_tanh(z, o_val, ctx.dim, ctx.q_switch, not ctx.nonneg)
            pairs = [(h, grad_h), (g, grad_g)]
            if ctx.affine:
                pairs.append((torch.addcmul(b, u, g), grad_out))
            outs = [out for out, grad in pairs if grad is not None]
            grads = [grad for _, grad in pairs if grad is not None]
            # u and b are unused when only g carries a gradient: their gradient is None
            res = torch.autograd.grad(outs, inputs, grads, create_graph=True, allow_unused=True)
        out: list[Tensor | None] = [None] * 8
        for i, r in zip(wanted, res):
            out[i] = r
        return tuple(out)


class IsotropicTanh(IsotropicActivation):
    """Isotropic tanh: ``φ(z) = tanh(ρ)/ρ · z``, ``ρ = sqrt(|‖z‖² + o|)`` (the paper's activation).

    Example:
        >>> import torch, isoplastic as ip
        >>> act = ip.IsotropicTanh(intrinsic_length="constant")
        >>> act.o = 0.25
        >>> round(float(act.gain(torch.zeros(1, 4))), 6)  # tanh(0.5) / 0.5 (float32)
        0.924234
    """

    def __init__(
        self,
        intrinsic_length: str | IntrinsicLength = "none",
        eps: float = 1e-3,
        dim: int = -1,
        small_ball: str = "series",
        o_init: float = O_INIT,
    ) -> None:
        super().__init__(TanhProfile(), intrinsic_length, eps, dim, small_ball, o_init)
