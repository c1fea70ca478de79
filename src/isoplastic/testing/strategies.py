"""Hypothesis strategies for isotropic networks (imports hypothesis; a test dependency).

* :func:`seeds`: integer seeds for ``torch.Generator``.
* :func:`widths_lists`: ``[n_0, n_1, …, n_L]`` with a bounded number of hidden layers.
* :func:`isotropic_mlps`: random :class:`~isoplastic.IsotropicMLP` networks with non-zero biases,
  ψ vectors and intrinsic lengths (see :func:`isoplastic.testing.random_isotropic_mlp`).
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from . import random_isotropic_mlp

INTRINSIC_LENGTH_MODES = ("none", "constant", "trainable")
PSI_MODES = ("none", "constant", "trainable", "trainable+decay", "expectation")


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``torch.Generator().manual_seed``."""
    return st.integers(min_value=0, max_value=2**31 - 1)


def widths_lists(min_hidden: int = 1, max_hidden: int = 3, min_width: int = 1, max_width: int = 6,
                 min_io: int = 1, max_io: int = 6) -> st.SearchStrategy[list[int]]:
    """``[n_0, hidden…, n_L]``: ``min_hidden..max_hidden`` hidden widths in
    ``min_width..max_width`` and input/output widths in ``min_io..max_io``."""
    hidden = st.lists(st.integers(min_width, max_width), min_size=min_hidden, max_size=max_hidden)
    io = st.integers(min_io, max_io)
    return st.builds(lambda a, h, b: [a, *h, b], io, hidden, io)


@st.composite
def isotropic_mlps(draw, widths: st.SearchStrategy[list[int]] | None = None,
                   intrinsic_length: str | None = None, psi: str | None = None,
                   dtype: torch.dtype = torch.float64):
    """A random :class:`~isoplastic.IsotropicMLP`; modes are drawn unless fixed by the caller."""
    w = draw(widths if widths is not None else widths_lists())
    il = intrinsic_length if intrinsic_length is not None else draw(
        st.sampled_from(INTRINSIC_LENGTH_MODES))
    ps = psi if psi is not None else draw(st.sampled_from(PSI_MODES))
    seed = draw(seeds())
    return random_isotropic_mlp(w, intrinsic_length=il, psi=ps, seed=seed, dtype=dtype)
