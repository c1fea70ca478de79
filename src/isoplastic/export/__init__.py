"""Exporting trained networks for inference (sparse evaluation of diagonalised layers)."""

from .sparse import SparseMLP as SparseMLP
from .sparse import compile_sparse as compile_sparse
