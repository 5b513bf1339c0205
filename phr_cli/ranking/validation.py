"""The validation posts that calibration and the re-ranker fit on, and check on."""

from __future__ import annotations

import numpy as np

# The fewest validation cases that calibration and the re-ranker fit on: each fits on one
# half and checks on the other, and 100 cases are enough for P@5 to tell a change from noise.
MIN_FIT_CASES = 200


def validation_halves(n_cases: int, seed: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The rows (fit, check) that calibration and the re-ranker fit on and check on: halves of
    one seeded permutation of the cases (its first `limit` rows, if given). Both stages draw
    the same permutation, so the re-ranker's check half holds none of calibration's fit half."""
    chosen = np.random.default_rng(seed).permutation(n_cases)[:limit]
    return chosen[: len(chosen) // 2], chosen[len(chosen) // 2:]
