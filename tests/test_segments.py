"""Segments: the head/torso/tail cut points and metrics with only a class's hashtags relevant."""

from __future__ import annotations

import numpy as np
import pytest

from phr_cli.evaluation.metrics import RankedCases, case_metrics
from phr_cli.evaluation.segments import CaseGroups, hashtag_classes, segment_metrics


def test_head_holds_the_first_third_of_uses_and_tail_the_last():
    uses = np.array([1, 50, 10, 10, 20, 9])  # 100 uses; sorted 50, 20, 10, 10, 9, 1
    # uses before each: 50 → 0 (head), 20 → 50 (torso), 10 → 70 (tail), … all tail after
    np.testing.assert_array_equal(hashtag_classes(uses), [2, 0, 2, 2, 1, 2])


def test_segments_split_the_cases_and_restrict_the_ground_truth():
    ranked = np.array([[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 1, 3, 4]])
    relevant = [np.array([0, 4]), np.array([0]), np.array([1, 4])]
    outcome = RankedCases(ranked, case_metrics(ranked, relevant, (1, 5)))
    groups = CaseGroups(activity=np.array([0, 3, 30]), new_item=np.array([True, False, False]),
                        hashtag_class=np.array([0, 1, 1, 2, 2]))
    segments = segment_metrics(outcome, relevant, groups, (1, 5))
    assert segments["user activity"]["0 (cold)"] == {"cases": 1, **{k: v[0] for k, v in outcome.metrics.items()}}
    assert segments["user activity"]["6–20"] == {"cases": 0}
    assert segments["item"]["seen"]["cases"] == 2
    # head = hashtag 0: cases 0 and 1, ranked 1st and 5th; tail = 3 and 4: cases 0 (5th) and 2 (5th)
    assert segments["hashtag frequency"]["head"]["cases"] == 2
    assert segments["hashtag frequency"]["head"]["P@1"] == pytest.approx(0.5)
    assert segments["hashtag frequency"]["tail"]["R@5"] == 1.0 and segments["hashtag frequency"]["tail"]["A@1"] == 0
    assert segments["coverage@5"] == 1.0
