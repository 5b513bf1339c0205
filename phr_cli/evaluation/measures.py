"""What an evaluation reports, without torch (the CLI and the plots read it): the metrics, the
K they are taken at and the sampled protocol's negatives (docs/evaluation.md)."""

from __future__ import annotations

from collections.abc import Sequence

# Each reported at every K, in this order.
METRICS = ("P", "R", "A", "F1", "nDCG", "MAP", "MRR")
KS = (5, 10)
NEGATIVES = 1000  # the sampled protocol's hashtags drawn beside the ground truth


def metric_names(ks: Sequence[int] = KS) -> list[str]:
    """Every metric reported, in its order: each of METRICS at each K."""
    return [f"{metric}@{k}" for k in ks for metric in METRICS]
