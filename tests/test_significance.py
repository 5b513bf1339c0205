"""The paired tests: Holm's correction, the randomisation test's p-value and its fixed seed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import permutation_test

from phr_cli.evaluation.significance import compare_to_model, holm, mark, randomisation_test, student_test


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1, each at least the one before
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_randomisation_agrees_with_scipy_s_exact_test():
    rng = np.random.default_rng(3)
    a, b = rng.random(10), rng.random(10) + 0.2
    exact = permutation_test((a, b), lambda x, y, axis=-1: np.mean(x - y, axis=axis), vectorized=True,
                             permutation_type="samples").pvalue  # 2^10 pairings: all of them
    ours = randomisation_test(a, b, seed=0, permutations=20_000)
    assert ours == pytest.approx(exact, abs=4 * np.sqrt(exact * (1 - exact) / 20_000))


def test_verdicts_are_fixed_by_the_seed_and_ties_carry_no_evidence():
    rng = np.random.default_rng(4)
    a, b = (rng.random(200) < 0.3) / 5, (rng.random(200) < 0.2) / 5
    assert randomisation_test(a, b, seed=1) == randomisation_test(a, b, seed=1)
    assert randomisation_test(a, a, seed=1) == 1.0 and student_test(a, a) == 1.0
    tests = compare_to_model({"P@5": a}, {"same": {"P@5": a}, "worse": {"P@5": np.zeros(200)}}, ["P@5"])
    assert tests["same"]["P@5"]["mark"] == "" and tests["worse"]["P@5"]["mark"] == "**"
    assert tests["worse"]["P@5"]["student_holm"] == pytest.approx(min(1.0, 2 * tests["worse"]["P@5"]["student"]))
    assert (mark(0.009), mark(0.04), mark(0.05)) == ("**", "*", "")
