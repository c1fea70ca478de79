"""Symmetry operations: orthogonal reparameterisation and SVD diagonalisation."""
