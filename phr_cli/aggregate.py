"""Sparse aggregation over a fixed edge structure whose weights change every step.

GCN-PHR's messages are weighted sums over edges: out[r] = Σ_e w_e · dense[c_e]. The
edges (rows r, columns c) are the training graph's and never change; the weights (the
attention α) change every step. `SparsePattern` sorts and merges the edges once;
`SparsePattern.matmul` runs the product as a sparse matrix times a dense one, with a
backward that is again a sparse product (by the transpose, whose order is also
precomputed) plus one dot product per edge for the weights. Gathering a (edges, d)
message matrix and `index_add_`-ing it back, as autograd would differentiate it, is
several times slower on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class SparsePattern:
    """The structure of an (n_rows, n_cols) sparse matrix given as (row, col) pairs, which may
    repeat: repeated pairs become one entry whose weight is the sum of theirs."""

    n_rows: int
    n_cols: int
    indices: Tensor  # (2, E) distinct entries sorted by row then column (coalesced COO)
    transposed: Tensor  # (2, E) the transpose's entries, coalesced
    transpose_order: Tensor  # (E,) the entry (position in `indices`) of each transposed entry
    entry_of_pair: Tensor  # (N,) the entry each input pair was merged into

    @classmethod
    def build(cls, rows: Tensor, cols: Tensor, n_rows: int, n_cols: int) -> SparsePattern:
        keys, entry_of_pair = torch.unique(rows * n_cols + cols, return_inverse=True)  # sorted: row, then col
        entry_rows, entry_cols = keys // n_cols, keys % n_cols
        transpose_order = torch.argsort(entry_cols * n_rows + entry_rows)
        return cls(
            n_rows=n_rows,
            n_cols=n_cols,
            indices=torch.stack([entry_rows, entry_cols]),
            transposed=torch.stack([entry_cols[transpose_order], entry_rows[transpose_order]]),
            transpose_order=transpose_order,
            entry_of_pair=entry_of_pair,
        )

    @property
    def n_entries(self) -> int:
        return self.indices.shape[1]

    def entry_weights(self, pair_weights: Tensor) -> Tensor:
        """The weight of each entry from the weights of the input pairs (summed where they repeat)."""
        return pair_weights.new_zeros(self.n_entries).index_add(0, self.entry_of_pair, pair_weights)

    def matmul(self, entry_weights: Tensor, dense: Tensor) -> Tensor:
        """(n_rows, d): the matrix with these entry weights (E,) times `dense` (n_cols, d),
        differentiable in both."""
        return _SparseProduct.apply(entry_weights, dense, self)


def _sparse(indices: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    # The structure was checked when built; checking it again every step would cost a pass.
    return torch.sparse_coo_tensor(indices, values, size, is_coalesced=True, check_invariants=False)


class _SparseProduct(torch.autograd.Function):
    """A · dense for A with a fixed pattern: d dense = Aᵀ · d out, d A_e = <d out[row_e], dense[col_e]>."""

    @staticmethod
    def forward(ctx: Any, weights: Tensor, dense: Tensor, pattern: SparsePattern) -> Tensor:
        ctx.save_for_backward(weights, dense)
        ctx.pattern = pattern
        return torch.sparse.mm(_sparse(pattern.indices, weights, (pattern.n_rows, pattern.n_cols)), dense)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        weights, dense = ctx.saved_tensors
        pattern: SparsePattern = ctx.pattern
        grad_weights = grad_dense = None
        if ctx.needs_input_grad[0]:
            rows, cols = pattern.indices
            grad_weights = (grad.index_select(0, rows) * dense.index_select(0, cols)).sum(dim=1)
        if ctx.needs_input_grad[1]:
            transposed = _sparse(pattern.transposed, weights[pattern.transpose_order], (pattern.n_cols, pattern.n_rows))
            grad_dense = torch.sparse.mm(transposed, grad.contiguous())
        return grad_weights, grad_dense, None
