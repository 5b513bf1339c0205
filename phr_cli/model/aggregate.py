"""Sparse aggregation over a fixed edge structure whose weights change every step.

GCN-PHR's messages are weighted sums over edges: out[r] = Σ_e w_e · dense[c_e]. The
edges (rows r, columns c) are the training graph's and never change; the weights (the
attention α) change every step. `SparsePattern` sorts and merges the edges once, in
compressed-row (CSR) form for the matrix and for its transpose; `SparsePattern.matmul`
runs the product as a CSR matrix times a dense one, with a backward that is again a CSR
product (by the transpose) plus a sampled dense product (SDDMM) for the weights. On a CPU
the CSR kernels are several times faster than the same products in COO form, and both are
far faster than gathering an (edges, d) message matrix and `index_add_`-ing it back, as
autograd would differentiate it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

# torch flags every CSR tensor as a beta feature; the kernels used here are stable ones.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state",
                        module=r"phr_cli\.model\.aggregate")


def _compressed(rows: Tensor, n_rows: int) -> Tensor:
    """CSR row offsets (n_rows + 1,) of entries sorted by row."""
    counts = torch.bincount(rows, minlength=n_rows)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


@dataclass(frozen=True)
class SparsePattern:
    """The structure of an (n_rows, n_cols) sparse matrix given as (row, col) pairs, which may
    repeat: repeated pairs become one entry whose weight is the sum of theirs."""

    n_rows: int
    n_cols: int
    row_offsets: Tensor  # (n_rows + 1,) CSR offsets of the distinct entries, sorted by row then column
    columns: Tensor  # (E,) their columns
    transposed_offsets: Tensor  # (n_cols + 1,) the transpose's CSR offsets
    transposed_columns: Tensor  # (E,) the transpose's columns (rows of the matrix)
    transpose_order: Tensor  # (E,) the entry (position in the matrix's order) of each transposed entry
    entry_of_pair: Tensor  # (N,) the entry each input pair was merged into

    @classmethod
    def build(cls, rows: Tensor, cols: Tensor, n_rows: int, n_cols: int) -> SparsePattern:
        keys, entry_of_pair = torch.unique(rows * n_cols + cols, return_inverse=True)  # sorted: row, then col
        entry_rows, entry_cols = keys // n_cols, keys % n_cols
        transpose_order = torch.argsort(entry_cols * n_rows + entry_rows)
        return cls(
            n_rows=n_rows,
            n_cols=n_cols,
            row_offsets=_compressed(entry_rows, n_rows),
            columns=entry_cols,
            transposed_offsets=_compressed(entry_cols, n_cols),
            transposed_columns=entry_rows[transpose_order],
            transpose_order=transpose_order,
            entry_of_pair=entry_of_pair,
        )

    @property
    def n_entries(self) -> int:
        return len(self.columns)

    def entry_weights(self, pair_weights: Tensor) -> Tensor:
        """The weight of each entry from the weights of the input pairs (summed where they repeat)."""
        return pair_weights.new_zeros(self.n_entries).index_add(0, self.entry_of_pair, pair_weights)

    def matrix(self, entry_weights: Tensor) -> Tensor:
        """The (n_rows, n_cols) CSR matrix with these entry weights (E,)."""
        # `build` makes a valid structure (tests check it); checking it every step would cost a pass.
        return torch.sparse_csr_tensor(self.row_offsets, self.columns, entry_weights, (self.n_rows, self.n_cols),
                                       check_invariants=False)

    def transposed_matrix(self, entry_weights: Tensor) -> Tensor:
        """The (n_cols, n_rows) CSR transpose of `matrix(entry_weights)`."""
        return torch.sparse_csr_tensor(self.transposed_offsets, self.transposed_columns,
                                       entry_weights[self.transpose_order], (self.n_cols, self.n_rows),
                                       check_invariants=False)

    def matmul(self, entry_weights: Tensor, dense: Tensor) -> Tensor:
        """(n_rows, d): the matrix with these entry weights (E,) times `dense` (n_cols, d),
        differentiable in both."""
        return _SparseProduct.apply(entry_weights, dense, self)


class _SparseProduct(torch.autograd.Function):
    """A · dense for A with a fixed pattern: d dense = Aᵀ · d out, d A_e = <d out[row_e], dense[col_e]>."""

    @staticmethod
    def forward(ctx: Any, weights: Tensor, dense: Tensor, pattern: SparsePattern) -> Tensor:
        ctx.save_for_backward(weights, dense)
        ctx.pattern = pattern
        return pattern.matrix(weights) @ dense

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        weights, dense = ctx.saved_tensors
        pattern: SparsePattern = ctx.pattern
        grad_weights = grad_dense = None
        if ctx.needs_input_grad[0] and pattern.n_entries == 0:
            grad_weights = torch.zeros_like(weights)  # CUDA's kernel would be called with no entries
        elif ctx.needs_input_grad[0]:
            # (d out · denseᵀ) at the pattern's entries only: a sampled dense product.
            grad_weights = torch.sparse.sampled_addmm(pattern.matrix(torch.zeros_like(weights)), grad.contiguous(),
                                                      dense.T, beta=0.0).values()
        if ctx.needs_input_grad[1]:
            grad_dense = pattern.transposed_matrix(weights) @ grad.contiguous()
        return grad_weights, grad_dense, None
