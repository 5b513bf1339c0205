"""Content neighbours' helpers."""

from __future__ import annotations

import torch

from phr_cli.model import neighbours
from phr_cli.model.neighbours import row_cosines, unit_rows


def test_row_cosines_match_the_whole_gather_across_blocks(monkeypatch):
    monkeypatch.setattr(neighbours, "ROW_BLOCK", 7)  # several blocks and a partial last one
    generator = torch.Generator().manual_seed(0)
    left, right = torch.randn(11, 5, generator=generator), unit_rows(torch.randn(4, 5, generator=generator))
    left[3] = 0.0  # a zero row has cosine 0, not NaN
    left_rows = torch.randint(0, 11, (30,), generator=generator)
    left_rows[0] = 3
    right_rows = torch.randint(0, 4, (30,), generator=generator)
    expected = torch.nn.functional.cosine_similarity(left[left_rows], right[right_rows], dim=1)
    torch.testing.assert_close(row_cosines(left, left_rows, right, right_rows), expected)
    assert row_cosines(left, left_rows[:0], right, right_rows[:0]).shape == (0,)
