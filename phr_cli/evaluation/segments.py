"""Every metric by segment of the test cases (docs/evaluation.md), and catalogue coverage.

- user activity: the case's user's training posts, in ACTIVITY bins (0 is a cold user);
- hashtag frequency: head, torso and tail hashtags by training uses (FREQUENCY_CUTS); a
  class's figures count only its hashtags as relevant, over the cases that have one;
- item: a new video (no training post) or one seen in training;
- coverage@K: the share of all known hashtags that are in at least one case's top K.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from phr_cli.data.dataset import SplitPosts
from phr_cli.evaluation.metrics import RankedCases, case_metrics, mean_metrics

# (name, fewest, most) training posts of the case's user; None: no upper bound.
ACTIVITY = (("0 (cold)", 0, 0), ("1–5", 1, 5), ("6–20", 6, 20), (">20", 21, None))
# Hashtags sorted by training uses, most first: head while the uses before a hashtag are under
# the first share of all uses, tail once they reach the second; torso between.
FREQUENCY_CUTS = (1 / 3, 2 / 3)
FREQUENCY_CLASSES = ("head", "torso", "tail")
COVERAGE_K = 5


@dataclass
class CaseGroups:
    """What places each test case (and each hashtag) in a segment; the same for every method."""

    activity: np.ndarray  # (cases,) training posts of the case's user
    new_item: np.ndarray  # (cases,) bool: the post's video has no training post
    hashtag_class: np.ndarray  # (hashtags,) index into FREQUENCY_CLASSES

    def describe(self) -> dict:
        """How many hashtags each frequency class holds, and the cut points, for the JSON."""
        counts = np.bincount(self.hashtag_class, minlength=len(FREQUENCY_CLASSES))
        return {"hashtags": dict(zip(FREQUENCY_CLASSES, counts.tolist())),
                "frequency_cuts": list(FREQUENCY_CUTS), "activity": [list(bin_) for bin_ in ACTIVITY],
                "coverage_k": COVERAGE_K}


def hashtag_classes(uses: np.ndarray) -> np.ndarray:
    """FREQUENCY_CLASSES index of each hashtag given its training uses (ties: the lower index first)."""
    order = np.argsort(-uses, kind="stable")
    before = (np.cumsum(uses[order]) - uses[order]) / max(float(uses.sum()), 1.0)
    classes = np.empty(len(uses), dtype=np.int64)
    classes[order] = np.searchsorted(np.asarray(FREQUENCY_CUTS), before, side="right")
    return classes


def case_groups(data: SplitPosts) -> CaseGroups:
    graph, test = data.graph, data.test
    posts_of = Counter(data.posts.users[row] for row in data.split.train.tolist())
    activity = np.asarray([posts_of[data.posts.users[row]] for row in test.rows.tolist()], dtype=np.int64)
    new_item = graph.item_ids(data.posts.subset(test.rows)) < 0
    uses = np.bincount(graph.triples[:, 1], minlength=graph.n_hashtags).astype(np.float64)
    return CaseGroups(activity, new_item, hashtag_classes(uses))


def segment_metrics(outcome: RankedCases, relevant: Sequence[np.ndarray], groups: CaseGroups,
                    ks: Sequence[int]) -> dict:
    """{"user activity": {bin: means}, "hashtag frequency": {class: means}, "item": {"new" | "seen":
    means}, "coverage@K": share}; means as `metrics.mean_metrics` gives them."""
    by_activity = {name: mean_metrics(outcome.metrics, (groups.activity >= low)
                                      & (groups.activity <= (high if high is not None else np.inf)))
                   for name, low, high in ACTIVITY}
    by_frequency = {}
    for index, name in enumerate(FREQUENCY_CLASSES):
        kept = [r[groups.hashtag_class[r] == index] for r in relevant]
        has = np.asarray([len(r) > 0 for r in kept], dtype=bool)
        metrics = case_metrics(outcome.ranked[has], [r for r in kept if len(r)], ks) if has.any() else {}
        by_frequency[name] = mean_metrics(metrics, np.ones(int(has.sum()), dtype=bool))
    by_item = {"new": mean_metrics(outcome.metrics, groups.new_item),
               "seen": mean_metrics(outcome.metrics, ~groups.new_item)}
    suggested = np.unique(outcome.ranked[:, :COVERAGE_K])
    coverage = np.count_nonzero(suggested >= 0) / max(len(groups.hashtag_class), 1)
    return {"user activity": by_activity, "hashtag frequency": by_frequency, "item": by_item,
            f"coverage@{COVERAGE_K}": coverage}
