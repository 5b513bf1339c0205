"""Sparse products over a fixed structure, against dense matrices."""

from __future__ import annotations

import torch

from phr_cli.model.aggregate import SparsePattern


def test_sparse_product_merges_repeated_pairs_and_matches_the_dense_product_and_its_gradients():
    generator = torch.Generator().manual_seed(0)
    rows = torch.tensor([0, 2, 2, 1, 0, 2, 3])
    cols = torch.tensor([1, 0, 0, 4, 1, 3, 2])  # (0, 1) and (2, 0) twice
    pattern = SparsePattern.build(rows, cols, n_rows=5, n_cols=6)
    assert pattern.n_entries == 5
    pair_weights = torch.randn(len(rows), generator=generator, requires_grad=True)
    dense = torch.randn(6, 3, generator=generator, requires_grad=True)
    out = pattern.matmul(pattern.entry_weights(pair_weights), dense)

    matrix = torch.zeros(5, 6).index_put((rows, cols), pair_weights, accumulate=True)
    expected = matrix @ dense
    torch.testing.assert_close(out, expected)
    assert not out[4].any(), "a row without entries stays zero"
    upstream = torch.randn(5, 3, generator=generator)
    gradients = torch.autograd.grad((out * upstream).sum(), [pair_weights, dense])
    expected_gradients = torch.autograd.grad((expected * upstream).sum(), [pair_weights, dense])
    for actual, wanted in zip(gradients, expected_gradients):
        torch.testing.assert_close(actual, wanted)


def test_transposed_structure_is_the_transpose():
    rows, cols = torch.tensor([3, 0, 1, 1, 2]), torch.tensor([0, 2, 2, 1, 0])
    pattern = SparsePattern.build(rows, cols, n_rows=4, n_cols=3)
    weights = torch.arange(1.0, pattern.n_entries + 1)
    for offsets, columns, size in ((pattern.row_offsets, pattern.columns, (4, 3)),
                                   (pattern.transposed_offsets, pattern.transposed_columns, (3, 4))):
        # valid CSR structures, both ways: offsets, columns sorted and distinct within each row
        torch.sparse_csr_tensor(offsets, columns, torch.ones(len(columns)), size, check_invariants=True)
    forward = pattern.matrix(weights).to_dense()
    transposed = pattern.transposed_matrix(weights).to_dense()
    expected_entries = torch.zeros(4, 3, dtype=torch.bool).index_put((rows, cols), torch.tensor(True))
    torch.testing.assert_close(forward != 0, expected_entries)
    torch.testing.assert_close(transposed, forward.T)


def test_a_pattern_without_entries_gives_zeros_and_empty_gradients():
    pattern = SparsePattern.build(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 3, 4)
    weights = torch.zeros(0, requires_grad=True)
    dense = torch.randn(4, 2, requires_grad=True)
    out = pattern.matmul(weights, dense)
    assert out.shape == (3, 2) and not out.any()
    grad_weights, grad_dense = torch.autograd.grad(out.sum(), [weights, dense])
    assert grad_weights.shape == (0,) and not grad_dense.any()
