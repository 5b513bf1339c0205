"""Paired significance tests of the model against each baseline, over the same test cases.

Two tests per metric (docs/evaluation.md): Student's paired t-test (`scipy.stats.ttest_rel`,
the test ranx's `compare` runs) and Fisher's randomisation test (Smucker et al., CIKM 2007:
each case's two values swapped at random, i.e. the sign of its difference flipped). Each
p-value is corrected with Holm–Bonferroni for the number of baselines (one family per
protocol, metric and test). ranx's own randomisation test draws its permutations in numba's
parallel threads, whose random streams its seed does not fix: the same call gives other
p-values from run to run. The sign flips are drawn here from numpy with the evaluation's seed,
so a verdict is the same on every machine.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import ttest_rel

# The metrics tested, at the smallest K evaluated: every test is a comparison more to correct for.
TESTED = ("P", "nDCG")
PERMUTATIONS = 10_000
# Marks of a baseline that differs from the model: the larger of its two corrected p-values below each level.
MARKS = ((0.01, "**"), (0.05, "*"))
_SIGNS_PER_CHUNK = 2_000_000  # sign draws held at once


def tested_metrics(ks: list[int]) -> list[str]:
    return [f"{metric}@{min(ks)}" for metric in TESTED]


def randomisation_test(a: np.ndarray, b: np.ndarray, seed: int = 0, permutations: int = PERMUTATIONS) -> float:
    """Two-sided p-value of Fisher's paired randomisation test of mean(a) = mean(b):
    (1 + the permutations whose |sum of differences| reaches the observed) / (1 + permutations)."""
    differences = (np.asarray(a, np.float64) - np.asarray(b, np.float64))
    differences = differences[differences != 0]  # a tie stays a tie whatever the swap
    observed = abs(differences.sum())
    if not len(differences):
        return 1.0
    # A sum in another order (BLAS's, by thread count) differs from `observed` in its last bits:
    # the margin is absolute, so that a true sum of 0 (observed ~1e-17) counts every permutation.
    reached = observed - 1e-9 * float(np.abs(differences).sum())
    rng = np.random.default_rng(seed)
    rows = max(1, _SIGNS_PER_CHUNK // len(differences))
    extreme = 0
    for start in range(0, permutations, rows):
        signs = rng.integers(0, 2, size=(min(rows, permutations - start), len(differences))) * 2.0 - 1.0
        extreme += int(np.count_nonzero(np.abs(signs @ differences) >= reached))
    return (extreme + 1) / (permutations + 1)


def student_test(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of the paired t-test; 1 when the two never differ (no evidence either way)."""
    if np.array_equal(a, b):
        return 1.0
    with warnings.catch_warnings():  # a constant difference: t is infinite, scipy warns and returns 0
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_rel(a, b).pvalue)
    return 1.0 if np.isnan(p) else p


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the given order (scipy has no Holm; statsmodels is not a dependency)."""
    order = np.argsort(p_values, kind="stable")
    adjusted = np.empty(len(p_values))
    running = 0.0
    for place, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - place) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def mark(p_value: float) -> str:
    return next((symbol for level, symbol in MARKS if p_value < level), "")


def compare_to_model(model: dict[str, np.ndarray], baselines: dict[str, dict[str, np.ndarray]], metrics: list[str],
                     seed: int = 0) -> dict[str, dict[str, dict[str, float | str]]]:
    """{baseline: {metric: {"student", "fisher", "student_holm", "fisher_holm", "mark"}}}: each
    baseline's per-case values against the model's, corrected for the number of baselines."""
    tests: dict[str, dict[str, dict[str, float | str]]] = {name: {} for name in baselines}
    for metric in metrics:
        raw = {name: {"student": student_test(model[metric], values[metric]),
                      "fisher": randomisation_test(model[metric], values[metric], seed)}
               for name, values in baselines.items()}
        for test in ("student", "fisher"):
            for name, adjusted in zip(raw, holm([raw[name][test] for name in raw])):
                raw[name][f"{test}_holm"] = adjusted
        for name, result in raw.items():
            tests[name][metric] = {**result, "mark": mark(max(result["student_holm"], result["fisher_holm"]))}
    return tests
