"""The only place that touches optimizer state.

A structural change maps the coordinates of a hidden space: a rotation ``R`` (orthogonal), an
insertion of new coordinates, or a removal. Each optimizer state tensor of a parameter is moved
along with it by the rule of its *kind*:

=========  ==========================================  =============================================
kind       keys                                        rule under a rotation ``R`` on axis ``d``
=========  ==========================================  =============================================
first      ``momentum_buffer``, ``exp_avg``,           exactly like the parameter: ``m ← m ×_d R``
           ``grad_avg``
second     ``exp_avg_sq``, ``max_exp_avg_sq``,         element-wise squared rotation
           ``square_avg``, ``acc_delta``, ``sum``      ``v ← v ×_d (R∘R)`` (keeps the diagonal of
                                                       ``R diag(v) Rᵀ``; paper-notes §4.2)
keep       ``step``, ``mu_product``                    unchanged (scalars)
=========  ==========================================  =============================================

New coordinates get zero state, removed coordinates are dropped. The parameter objects are
kept (their ``.data`` is replaced), so ``optimizer.param_groups`` and ``optimizer.state`` keep
pointing at the live parameters. Optimizers outside :data:`SUPPORTED_OPTIMIZERS`, and state keys
outside :data:`STATE_KINDS`, are refused with :class:`~isoplastic.errors.UnsupportedOptimizerError`
before anything changes; :func:`register_optimizer` extends both tables.

The same table drives the state's input and output (last section): :func:`state_tensors` /
:func:`state_meta` / :func:`load_state_tensors` for checkpoints and broadcasts,
:func:`state_digest` and :func:`move_state` for distributed runs. No other module knows which
keys are scalars.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ..errors import NonFiniteError, OptimizerStateError, UnsupportedOptimizerError
from ..linalg import all_finite

FIRST = "first"
SECOND = "second"
KEEP = "keep"

STATE_KINDS: dict[str, str] = {
    "momentum_buffer": FIRST,
    "exp_avg": FIRST,
    "grad_avg": FIRST,
    "exp_avg_sq": SECOND,
    "max_exp_avg_sq": SECOND,
    "square_avg": SECOND,
    "acc_delta": SECOND,
    "sum": SECOND,
    "step": KEEP,
    "mu_product": KEEP,
}

SUPPORTED_OPTIMIZERS: list[type[torch.optim.Optimizer]] = [
    torch.optim.SGD,
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.RMSprop,
    torch.optim.Adagrad,
    torch.optim.NAdam,
    torch.optim.RAdam,
    torch.optim.Adadelta,
]


def register_optimizer(cls: type[torch.optim.Optimizer], state_kinds: dict[str, str]) -> None:
    """Allow ``cls`` and classify its state keys (each ``"first"``, ``"second"`` or ``"keep"``)."""
    for key, kind in state_kinds.items():
        if kind not in (FIRST, SECOND, KEEP):
            raise ValueError(f"state kind {kind!r} for key {key!r}; use 'first', 'second' or 'keep'")
        STATE_KINDS[key] = kind
    if cls not in SUPPORTED_OPTIMIZERS:
        SUPPORTED_OPTIMIZERS.append(cls)


def _supported_names() -> str:
    return ", ".join(c.__name__ for c in SUPPORTED_OPTIMIZERS)


def check_transportable(optimizer: torch.optim.Optimizer | None, params: Iterable[Tensor]) -> None:
    """Raise :class:`UnsupportedOptimizerError` unless every state tensor of ``params`` can move."""
    if optimizer is None:
        return
    if not isinstance(optimizer, tuple(SUPPORTED_OPTIMIZERS)):
        raise _unsupported_class(optimizer, "transport the state of {} through a change of basis")
    for p in params:
        for key, value in optimizer.state.get(p, {}).items():
            kind = STATE_KINDS.get(key)
            if kind is None:
                raise UnsupportedOptimizerError(
                    f"{type(optimizer).__name__} holds state {key!r}, whose transport is unknown; "
                    "classify it with isoplastic.register_optimizer(cls, {key: 'first' | 'second' "
                    "| 'keep'})"
                )
            if isinstance(value, Tensor) and kind != KEEP and value.shape != p.shape:
                raise UnsupportedOptimizerError(
                    f"{type(optimizer).__name__} state {key!r} has shape {tuple(value.shape)} but "
                    f"its parameter has shape {tuple(p.shape)}; only per-element state can be moved"
                )
            # A rotation mixes every entry of an axis: one NaN/Inf in a moment would spread to a
            # whole row/column of state (and then of parameters at the next step). Refuse it.
            if (isinstance(value, Tensor) and kind != KEEP and value.is_floating_point()
                    and not all_finite(value)):
                raise NonFiniteError(
                    f"{type(optimizer).__name__} state {key!r} of a parameter of shape "
                    f"{tuple(p.shape)} holds NaN or Inf; a structural change would spread it. "
                    "Reset the optimizer (or restore it from a checkpoint) first"
                )


def _along(t: Tensor, dim: int, mat: Tensor) -> Tensor:
    """Contract axis ``dim`` of ``t`` with the first index of ``mat``.

    ``t'[..i..] = Σ_j t[..j..] M[j, i]``. The first and last axes are contracted by one
    matrix product that writes the result in place order (no transposed copy). float16 and
    bfloat16 tensors are contracted in float32 and rounded once at the end, so a rotation costs
    them one rounding, not one per term (the result keeps ``t``'s dtype)."""
    out_dtype = t.dtype
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    mat = mat.to(dtype=t.dtype, device=t.device)
    dim = dim % t.dim()
    if dim == t.dim() - 1:
        res = t @ mat
    elif dim == 0:
        res = (mat.mT @ t.reshape(t.shape[0], -1)).reshape(mat.shape[1], *t.shape[1:])
    else:
        res = (t.movedim(dim, -1) @ mat).movedim(-1, dim).contiguous()
    return res.to(out_dtype)


def _scale(t: Tensor, dim: int, d: Tensor) -> Tensor:
    """``t`` with every slice ``i`` of axis ``dim`` multiplied by ``d[i]``."""
    shape = [1] * t.dim()
    shape[dim % t.dim()] = d.shape[0]
    return t * d.to(dtype=t.dtype, device=t.device).reshape(shape)


class CoordinateMap:
    """A change of the coordinates of one hidden space (rotation, insertion or removal)."""

    def apply(self, t: Tensor, dim: int, kind: str, init: Tensor | None = None) -> Tensor:
        raise NotImplementedError


class OrthogonalMap(CoordinateMap):
    """A change of basis ``c' = Rᵀ c`` by an orthogonal ``R`` (``(n, n)``), in whatever form
    the subclass holds it: every attached axis is contracted with ``R`` (first moments and
    parameters), second moments with ``R∘R``. :meth:`dense` builds ``R`` itself (for
    validation and references)."""

    n: int
    #: Where to get a valid map (named when a map is refused as not orthogonal).
    how_to_build: str

    def dense(self) -> Tensor:
        raise NotImplementedError

    def tensors(self) -> list[Tensor]:
        """The tensors the map is made of (checked for finiteness before it is applied)."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short description for :class:`~isoplastic.core.Change`'s listing."""
        raise NotImplementedError


class Rotation(OrthogonalMap):
    """New coordinates ``c' = Rᵀ c``: every attached axis is contracted with the dense ``R``
    (``O(n²)`` per slice of the axis)."""

    how_to_build = "isoplastic.random_orthogonal or torch.linalg.qr"

    def __init__(self, r: Tensor) -> None:
        self.r = r
        self.n = int(r.shape[0]) if r.dim() else 0

    def dense(self) -> Tensor:
        return self.r

    def tensors(self) -> list[Tensor]:
        return [self.r]

    def describe(self) -> str:
        return f"R{tuple(self.r.shape)}"

    def apply(self, t: Tensor, dim: int, kind: str, init: Tensor | None = None) -> Tensor:
        if kind == SECOND:
            return _along(t, dim, self.r * self.r)
        return _along(t, dim, self.r)


class Reflectors(OrthogonalMap):
    r"""The product of ``k`` Householder reflectors in compact WY form, ``H = I − V T Vᵀ``.

    ``V`` is ``(n, k)``, ``T`` ``(k, k)`` upper triangular (LAPACK's ``larft``); with
    ``M = T Vᵀ`` (``(k, n)``), ``H = I − V M``. Contracting an axis of length ``n`` (``m``
    slices) costs ``O(k n m)`` instead of the dense ``O(n² m)``:

    * first moments and parameters: ``t ×_d H = t − (t ×_d V) ×_d M``;
    * second moments: ``(H∘H)_{ij} = (δ_{ij} − (VM)_{ij})²``, i.e.

      .. math::
          H∘H = I − 2\,\mathrm{diag}(g) + \sum_{a,b} (v_a∘v_b)(m_a∘m_b)^T
              = \mathrm{diag}((1−g)^2) + \Big[\sum_{a,b} (v_a∘v_b)(m_a∘m_b)^T
                − \mathrm{diag}(g^2)\Big],

      with ``g = diag(VM)``, ``v_a`` the columns of ``V`` and ``m_a`` the rows of ``M``
      (``k(k+1)/2`` distinct products, ``a ≤ b``; rank ``k(k+1)/2``, ``O(k² n m)``). For a
      non-negative ``v`` the bracket is ``Σ_{j≠i} v_j (VM)_{ji}² ≥ 0``, so every entry of
      ``v ×_d (H∘H)`` is at least its own term ``v_i (1 − g_i)²``: the computed result is raised
      to that term where round-off in the low-rank sum took it lower, so it is never negative.
      The low-rank sum carries absolute round-off (about ``eps`` times the largest ``v_j`` it
      mixes in), where the dense product, a sum of non-negative terms, is accurate relatively.

    When ``2 k ≥ n`` (first kind) or ``k(k+1) ≥ n`` (second kind) the low-rank form costs more
    than the dense one, and the dense ``H`` (or ``H∘H``) is contracted instead. Built by
    :meth:`spanning`; ``V`` and ``T`` are kept in float64 and cast to each tensor's dtype.
    """

    how_to_build = "Reflectors.spanning"

    def __init__(self, v: Tensor, t: Tensor) -> None:
        self.v, self.t = v, t
        self.n = int(v.shape[0])
        self.m = t @ v.mT  # (k, n)

    @classmethod
    def spanning(cls, q: Tensor, positions: Sequence[int]) -> Reflectors:
        """Reflectors ``H`` whose columns at ``positions`` span the columns of ``q``.

        Args:
            q: orthonormal columns, ``(n, k)``, ``k < n`` (the factorisation runs in float64).
            positions: ``k`` distinct coordinates, sorted.

        With ``P`` the permutation that lists ``positions`` first (then the others in order),
        ``P q = Q̂ R`` (Householder QR, ``Q̂ = I − V̂ T V̂ᵀ``) and ``H = Pᵀ Q̂ P``, so
        ``H e_{positions[j]} = Pᵀ Q̂ e_j`` lies in ``span(q)``. Cost ``O(n k²)``.
        """
        n, k = q.shape
        q = q.to(torch.float64)
        pos = list(positions)
        chosen = set(pos)
        perm = torch.tensor(pos + [i for i in range(n) if i not in chosen], device=q.device)
        a, tau = torch.geqrf(q[perm])
        vh = a.tril(-1)
        vh.diagonal().fill_(1.0)
        t = torch.zeros(k, k, dtype=q.dtype, device=q.device)
        for j in range(k):  # larft, forward and columnwise: T[:j, j] = −τ_j T[:j, :j] V̂ᵀ v̂_j
            t[j, j] = tau[j]
            if j:
                t[:j, j] = -tau[j] * (t[:j, :j] @ (vh[:, :j].mT @ vh[:, j]))
        v = torch.empty_like(vh)
        v[perm] = vh
        return cls(v, t)

    def dense(self) -> Tensor:
        return torch.eye(self.n, dtype=self.v.dtype, device=self.v.device) - self.v @ self.m

    def tensors(self) -> list[Tensor]:
        return [self.v, self.t]

    def describe(self) -> str:
        return f"{self.v.shape[1]} Householder reflector(s) ({self.n}, {self.n})"

    def apply(self, t: Tensor, dim: int, kind: str, init: Tensor | None = None) -> Tensor:
        k = self.v.shape[1]
        rank = k * (k + 1) // 2 if kind == SECOND else k
        if 2 * rank >= self.n:
            h = self.dense()
            return _along(t, dim, h * h if kind == SECOND else h)
        out_dtype = t.dtype
        if t.dtype in (torch.float16, torch.bfloat16):  # one rounding at the end, as _along
            t = t.to(torch.float32)
        if kind != SECOND:
            return _low_rank(t, dim, self.v, self.m, t, alpha=-1.0).to(out_dtype)
        rows, cols = torch.triu_indices(k, k, device=self.v.device)
        twice = torch.where(rows == cols, 1.0, 2.0).to(self.v.dtype)
        left = self.v[:, rows] * self.v[:, cols]  # (n, r): v_a∘v_b, a ≤ b
        right = self.m[rows] * self.m[cols] * twice[:, None]  # (r, n): m_a∘m_b, ×2 off a = b
        g = (self.v * self.m.mT).sum(1)  # (n,) diag(VM)
        res = _low_rank(t, dim, left, right, _scale(t, dim, 1.0 - 2.0 * g))
        # v'_i = v_i (1 − g_i)² + Σ_{j≠i} v_j (VM)_{ji}² ≥ v_i (1 − g_i)²: round-off in the sum
        # of the others never takes an entry below its own term (nor below zero)
        torch.maximum(res, _scale(t, dim, (1.0 - g) ** 2), out=res)
        return res.to(out_dtype)


def _low_rank(t: Tensor, dim: int, a: Tensor, b: Tensor, base: Tensor, alpha: float = 1.0
              ) -> Tensor:
    """``base + alpha (t ×_d a) ×_d b`` for ``a`` ``(n, r)`` and ``b`` ``(r, n)``, axis ``dim`` of
    ``t`` of length ``n``; the sum is fused into the second matrix product. ``base`` has ``t``'s
    shape and dtype; ``a`` and ``b`` are cast to ``t``'s dtype."""
    a = a.to(dtype=t.dtype, device=t.device)
    b = b.to(dtype=t.dtype, device=t.device)
    dim = dim % t.dim()
    n = t.shape[dim]
    if dim == t.dim() - 1:
        flat = t.reshape(-1, n)
        out = torch.addmm(base.reshape(-1, n), flat @ a, b, alpha=alpha)
        return out.reshape(t.shape)
    if dim == 0:
        flat = t.reshape(n, -1)
        out = torch.addmm(base.reshape(n, -1), b.mT, a.mT @ flat, alpha=alpha)
        return out.reshape(t.shape)
    moved = _low_rank(t.movedim(dim, -1), -1, a, b, base.movedim(dim, -1), alpha)
    return moved.movedim(-1, dim).contiguous()


#: How new coordinates' second-moment state starts (see :class:`Insertion`).
NEWBORN_STATES = ("population", "zero")


class Insertion(CoordinateMap):
    """Append ``n`` coordinates; parameters take ``init`` (zeros if None).

    Optimizer state of new coordinates: first moments are zero. Second moments (kind
    ``"second"``) depend on ``newborn``:

    * ``"population"``: the median of the existing coordinates' values along the same
      axis, per slice (``(n_out, n_in)`` weight growing rows: each new row gets, column by
      column, the median over the old rows). Adam divides by ``sqrt(v̂)``; with ``v = 0`` and the
      optimizer's global step ``t`` already large, a newborn's first update is
      ``(1−β₁)g/sqrt((1−β₂)g²) ≈ 3.2`` times a normal step (β = (0.9, 0.999)), and it stays
      oversized for hundreds of steps. Seeded from the population, its updates start below the
      existing entries' and grow with its first moment.
    * ``"zero"`` (default): zeros (the paper's code, and PyTorch's own initial state). On the
      embedded digits scaffold runs (3 seeds) ``"population"`` did not train better (mean test
      accuracy 96.56 % against 96.75 %, one test sample apart), so it is not the default.
    """

    def __init__(self, n: int, newborn: str = "zero") -> None:
        if newborn not in NEWBORN_STATES:
            raise ValueError(f"newborn={newborn!r}; choose one of {NEWBORN_STATES}")
        self.n = n
        self.newborn = newborn

    def apply(self, t: Tensor, dim: int, kind: str, init: Tensor | None = None) -> Tensor:
        shape = list(t.shape)
        shape[dim] = self.n
        if init is not None:
            extra = init
        elif kind == SECOND and self.newborn == "population" and t.shape[dim] > 0:
            extra = t.median(dim=dim, keepdim=True).values.expand(shape)
        else:
            extra = torch.zeros(shape, dtype=t.dtype, device=t.device)
        return torch.cat([t, extra.to(dtype=t.dtype, device=t.device)], dim=dim)


class Removal(CoordinateMap):
    """Keep only the coordinates ``keep`` (a sorted index tensor), dropping the others."""

    def __init__(self, keep: Tensor) -> None:
        self.keep = keep

    def apply(self, t: Tensor, dim: int, kind: str, init: Tensor | None = None) -> Tensor:
        return t.index_select(dim, self.keep.to(t.device)).contiguous()


def transport_state(
    optimizer: torch.optim.Optimizer | None, param: Tensor, dim: int, cmap: CoordinateMap
) -> None:
    """Move ``param``'s optimizer state through ``cmap`` along axis ``dim`` (shapes are checked by
    :func:`check_transportable` first). The gradient is moved by the caller, with ``.data``."""
    if optimizer is None:
        return
    state = optimizer.state.get(param)
    if not state:
        return
    for key, value in list(state.items()):
        if not isinstance(value, Tensor) or STATE_KINDS[key] == KEEP or value.dim() == 0:
            continue
        state[key] = cmap.apply(value, dim, STATE_KINDS[key])


def state_entry(optimizer: torch.optim.Optimizer, param: Tensor) -> object:
    """A shallow copy of ``param``'s state entry (its tensors by reference), or ``None``.

    Transport replaces state tensors instead of writing into them, so the references stay the
    originals; :func:`restore_entry` puts them back."""
    entry = optimizer.state.get(param)
    return None if entry is None else dict(entry)


def restore_entry(optimizer: torch.optim.Optimizer, param: Tensor, entry: object) -> None:
    """Undo everything done to ``param``'s state since :func:`state_entry` returned ``entry``."""
    if entry is None:
        optimizer.state.pop(param, None)
    else:
        optimizer.state[param] = dict(entry)  # type: ignore[call-overload]


# =================================================================================================
# Optimizer-state I/O: checkpoints and distributed runs
# =================================================================================================
#
# Saving, loading, hashing and moving the state go through the same table as transport: a key of
# kind ``first``/``second`` is a per-element tensor of its parameter's shape and dtype, a key of
# kind ``keep`` is a 0-dim scalar (``step``, NAdam's ``mu_product``). A key outside the table is
# refused, never guessed.

def _unsupported_class(optimizer: torch.optim.Optimizer,
                       action: str = "save, load, hash or move the state of {}"
                       ) -> UnsupportedOptimizerError:
    """The refusal of an optimizer class outside :data:`SUPPORTED_OPTIMIZERS` (``action`` names
    what was asked, ``{}`` standing for the class)."""
    return UnsupportedOptimizerError(
        f"isoplastic cannot {action.format(type(optimizer).__name__)}; supported optimizers: "
        f"{_supported_names()}. Register a new one with "
        "isoplastic.register_optimizer(cls, {state_key: 'first' | 'second' | 'keep'})"
    )


def state_kind(key: str, optimizer: torch.optim.Optimizer | None = None) -> str:
    """The kind (``"first"``, ``"second"`` or ``"keep"``) of state key ``key``; raises
    :class:`UnsupportedOptimizerError` for a key outside :data:`STATE_KINDS`."""
    kind = STATE_KINDS.get(key)
    if kind is None:
        owner = type(optimizer).__name__ if optimizer is not None else "the optimizer"
        raise UnsupportedOptimizerError(
            f"{owner} holds state {key!r}, whose kind is unknown; classify it with "
            "isoplastic.register_optimizer(cls, {key: 'first' | 'second' | 'keep'})"
        )
    return kind


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """The optimizer's parameters in ``param_groups`` order; position ``i`` is the ``<i>`` of the
    state names of :func:`state_tensors`."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def _groups_by_param(optimizer: torch.optim.Optimizer) -> dict[int, dict]:
    return {id(p): group for group in optimizer.param_groups for p in group["params"]}


def _check_value(optimizer: torch.optim.Optimizer, name: str, p: Tensor, kind: str,
                 value: Tensor, *, dtype: bool = False) -> None:
    """Raise :class:`OptimizerStateError` unless ``value`` has the shape (and, per element and if
    ``dtype``, the dtype) that ``kind`` prescribes for parameter ``p``."""
    if kind == KEEP:
        if value.dim() != 0:
            raise OptimizerStateError(
                f"{type(optimizer).__name__} state {name} has shape {tuple(value.shape)}, but "
                "its key is of kind 'keep' (a scalar that no change of basis touches), which must "
                "be 0-dim; the state was made by a different optimizer or the key is misclassified")
        return
    if value.shape != p.shape:
        raise OptimizerStateError(
            f"{type(optimizer).__name__} state {name} has shape {tuple(value.shape)} but its "
            f"parameter has {tuple(p.shape)}; per-element state ({kind!r} moment) must have the "
            "parameter's shape - the state belongs to other parameters or other widths")
    if dtype and value.dtype != p.dtype:
        raise OptimizerStateError(
            f"{type(optimizer).__name__} state {name} has dtype {value.dtype} but its parameter "
            f"has {p.dtype}; convert the model and the state to one dtype before loading")


def _entries(optimizer: torch.optim.Optimizer
             ) -> list[tuple[str, Tensor, str, Tensor | bool | int | float]]:
    """``(name, parameter, kind, value)`` for every state entry, in parameter order and sorted key
    order, after checking the class, every key and every tensor shape against the table."""
    if not isinstance(optimizer, tuple(SUPPORTED_OPTIMIZERS)):
        raise _unsupported_class(optimizer)
    out = []
    for i, p in enumerate(optimizer_params(optimizer)):
        for key, value in sorted(optimizer.state.get(p, {}).items()):
            kind = state_kind(key, optimizer)
            name = f"{i}.{key}"
            if value is None:  # e.g. a momentum buffer not created yet: the same as absent
                continue
            if isinstance(value, Tensor):
                _check_value(optimizer, name, p, kind, value)
            elif kind != KEEP or not isinstance(value, (bool, int, float)):
                raise OptimizerStateError(
                    f"{type(optimizer).__name__} state {name} is a {type(value).__name__}; only "
                    "tensors and, for 'keep' keys, plain numbers can be saved")
            out.append((name, p, kind, value))
    return out


def state_tensors(optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    """Every state tensor of ``optimizer`` under the flat name ``"<i>.<key>"`` (``i``: position in
    :func:`optimizer_params`), detached, contiguous CPU copies ready for safetensors.

    Per-element moments have their parameter's shape ``(n_out, n_in, ...)``; ``keep`` scalars are
    0-dim. Non-tensor ``keep`` values (none in torch's own optimizers) are in
    :func:`state_numbers`. Raises :class:`UnsupportedOptimizerError` for an optimizer or key
    outside the table and :class:`OptimizerStateError` for a tensor of the wrong shape.
    """
    return {name: value.detach().cpu().contiguous().clone()
            for name, _, _, value in _entries(optimizer) if isinstance(value, Tensor)}


def state_numbers(optimizer: torch.optim.Optimizer) -> dict[str, bool | int | float]:
    """The non-tensor ``keep`` state values by the names of :func:`state_tensors` (JSON-able)."""
    return {name: value for name, _, _, value in _entries(optimizer)
            if not isinstance(value, Tensor)}


def _json_settings(optimizer: torch.optim.Optimizer, settings: dict, where: str) -> dict:
    """``settings`` without ``params``, refusing a value JSON cannot hold exactly."""
    def plain(v: object) -> bool:
        if isinstance(v, (tuple, list)):
            return all(plain(x) for x in v)
        return v is None or isinstance(v, (bool, int, float, str))

    out = {k: v for k, v in settings.items() if k != "params"}
    for k, v in out.items():
        if not plain(v):
            raise OptimizerStateError(
                f"{type(optimizer).__name__} {where} has {k}={type(v).__name__}; saved "
                "hyper-parameters must be numbers, strings, None or tuples of them (e.g. a float "
                "learning rate, not a tensor)")
    return out


def state_meta(optimizer: torch.optim.Optimizer) -> dict:
    """JSON-able description of ``optimizer`` besides its state tensors: the class name, its
    ``defaults``, every parameter group's hyper-parameters with its parameter count
    ``n_params``, and the non-tensor state under ``"scalars"`` (``{"<i>": {key: value}}``)."""
    scalars: dict[str, dict] = {}
    for name, value in state_numbers(optimizer).items():
        index, key = name.split(".", 1)
        scalars.setdefault(index, {})[key] = value
    groups = [_json_settings(optimizer, g, f"parameter group {j}") | {"n_params": len(g["params"])}
              for j, g in enumerate(optimizer.param_groups)]
    return {"class": type(optimizer).__name__, "groups": groups, "scalars": scalars,
            "defaults": _json_settings(optimizer, optimizer.defaults, "defaults")}


def _settings(saved: dict) -> dict:
    """Saved hyper-parameters back in the optimizer's own form (JSON lists become tuples)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k != "n_params"}


def _place(value: Tensor, kind: str, p: Tensor, group: dict, device: torch.device) -> Tensor:
    """Where a state tensor lives: per-element moments on ``device``; ``keep`` scalars on the CPU
    unless the group is ``capturable`` or ``fused`` (torch's own placement rule for them)."""
    if kind != KEEP or group.get("capturable") or group.get("fused"):
        return value.to(device)
    return value


def load_state_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor],
                       meta: dict | None = None, *, prefix: str = "") -> None:
    """Replace the state of ``optimizer`` (built over the same parameters, in the same order) by
    ``tensors`` named as :func:`state_tensors` names them (after ``prefix``; other names are
    ignored), and, if ``meta`` (from :func:`state_meta`) is given, its hyper-parameters (groups
    and defaults) and non-tensor state.

    Everything is validated before anything is written: the class, the group sizes, every name
    (``"<i>.<key>"`` with ``i`` a parameter position and ``key`` in :data:`STATE_KINDS`), every
    per-element shape and dtype against its parameter, every ``keep`` value 0-dim. Raises
    :class:`OptimizerStateError` or :class:`UnsupportedOptimizerError`; the optimizer is then
    unchanged. Per-element tensors are copied onto their parameter's device.
    """
    if not isinstance(optimizer, tuple(SUPPORTED_OPTIMIZERS)):
        raise _unsupported_class(optimizer)
    cls = type(optimizer).__name__
    params = optimizer_params(optimizer)
    if meta is not None:
        if meta.get("class") != cls:
            raise OptimizerStateError(f"the saved optimizer is {meta.get('class')!r}, not {cls}; "
                                      f"build a {meta.get('class')} (or use optimizer_from_meta)")
        sizes = [g["n_params"] for g in meta["groups"]]
        if sizes != [len(g["params"]) for g in optimizer.param_groups]:
            raise OptimizerStateError(
                f"the saved {cls} has parameter groups of sizes {sizes} but this one has "
                f"{[len(g['params']) for g in optimizer.param_groups]}; build it over the same "
                "parameters in the same groups")
    # the groups as they will be (``capturable``/``fused`` decide where scalars live)
    views = optimizer.param_groups if meta is None else [
        g | _settings(saved) for g, saved in zip(optimizer.param_groups, meta["groups"])]
    groups = {id(p): view for view in views for p in view["params"]}
    entries: dict[str, bool | int | float | Tensor] = {
        name[len(prefix):]: value for name, value in tensors.items() if name.startswith(prefix)}
    if meta is not None:
        for index, values in meta.get("scalars", {}).items():
            entries.update({f"{index}.{key}": value for key, value in values.items()})
    new: dict[int, dict] = {}
    for name, value in entries.items():
        index, _, key = name.partition(".")
        if not index.isdigit() or not key:
            raise OptimizerStateError(f"optimizer state name {prefix}{name!r} is not "
                                      "'<parameter index>.<state key>'")
        if int(index) >= len(params):
            raise OptimizerStateError(
                f"optimizer state {prefix}{name} is for parameter {index}, but the {cls} has "
                f"{len(params)} parameters; build it over the same parameters in the same order")
        p = params[int(index)]
        kind = state_kind(key, optimizer)
        if isinstance(value, Tensor):
            _check_value(optimizer, prefix + name, p, kind, value, dtype=True)
            value = _place(value.detach().clone(), kind, p, groups[id(p)], p.device)
        elif kind != KEEP:
            raise OptimizerStateError(f"optimizer state {prefix}{name} is a number, but "
                                      f"{key!r} is a per-element ({kind!r}) key")
        new.setdefault(int(index), {})[key] = value
    if meta is not None:
        optimizer.defaults.update(_settings(meta.get("defaults", {})))
        for group, saved in zip(optimizer.param_groups, meta["groups"], strict=True):
            group.update(_settings(saved))
    optimizer.state.clear()
    for index in sorted(new):
        optimizer.state[params[index]] = new[index]


def optimizer_from_meta(param_groups: list[list[Tensor]] | list[Tensor], meta: dict
                        ) -> torch.optim.Optimizer:
    """A fresh optimizer of the class :func:`state_meta` recorded, over ``param_groups`` (one
    list per saved group, or a flat list split by the saved group sizes), with the saved
    hyper-parameters and no state. Only classes in :data:`SUPPORTED_OPTIMIZERS` are built."""
    by_name = {c.__name__: c for c in SUPPORTED_OPTIMIZERS}
    cls = by_name.get(meta.get("class", ""))
    if cls is None:
        raise UnsupportedOptimizerError(
            f"the saved optimizer {meta.get('class')!r} is not supported; supported optimizers: "
            f"{_supported_names()} (register_optimizer adds one)")
    sizes = [g["n_params"] for g in meta["groups"]]
    if param_groups and isinstance(param_groups[0], Tensor):
        flat = list(param_groups)
        if len(flat) != sum(sizes):
            raise OptimizerStateError(f"the saved {cls.__name__} has {sum(sizes)} parameters in "
                                      f"groups of {sizes}, but {len(flat)} were given")
        starts = [sum(sizes[:j]) for j in range(len(sizes))]
        param_groups = [flat[s:s + n] for s, n in zip(starts, sizes)]
    if [len(g) for g in param_groups] != sizes:
        raise OptimizerStateError(f"the saved {cls.__name__} has parameter groups of sizes "
                                  f"{sizes}, but {[len(g) for g in param_groups]} were given")
    optimizer = cls([{"params": list(g)} for g in param_groups])
    optimizer.defaults.update(_settings(meta.get("defaults", {})))
    for group, saved in zip(optimizer.param_groups, meta["groups"], strict=True):
        group.update(_settings(saved))
    return optimizer


def state_digest(optimizer: torch.optim.Optimizer) -> bytes:
    """sha256 of the class, every group's hyper-parameters and every state entry (name, dtype,
    shape and raw bytes of tensors; ``repr`` of numbers), in parameter and key order."""
    h = hashlib.sha256(type(optimizer).__name__.encode())
    for group in optimizer.param_groups:
        h.update(repr(sorted((k, v) for k, v in group.items() if k != "params")).encode())
        h.update(f"|{len(group['params'])}|".encode())
    for name, _, _, value in _entries(optimizer):
        if isinstance(value, Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            h.update(f"{name}|{t.dtype}|{tuple(value.shape)}|".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(f"{name}={value!r}|".encode())
    return h.digest()


def move_state(optimizer: torch.optim.Optimizer, device: torch.device | str) -> None:
    """Move the state tensors of ``optimizer`` to ``device`` (after the model was moved there):
    per-element moments always, ``keep`` scalars only for ``capturable``/``fused`` groups (torch
    keeps them on the CPU otherwise). Unknown keys are refused before anything moves."""
    device = torch.device(device)
    groups = _groups_by_param(optimizer)
    entries = _entries(optimizer)
    for name, p, kind, value in entries:
        if isinstance(value, Tensor):
            optimizer.state[p][name.split(".", 1)[1]] = _place(value, kind, p, groups[id(p)],
                                                                 device)
