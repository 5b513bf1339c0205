import numpy as np
import pytest
import torch

import phr_cli.evaluation.metrics as evaluation
from phr_cli.data.cases import build_cases
from phr_cli.data.graph import PostData, build_graph
from phr_cli.evaluation.measures import metric_names
from phr_cli.evaluation.metrics import evaluate, ranking_metrics, sample_candidates


def make_posts(rows: list[tuple[str, str, list[str]]]) -> PostData:
    return PostData(
        users=[u for u, _, _ in rows], items=[i for _, i, _ in rows], hashtags=[t for _, _, t in rows],
        features={}, masks={},
    )


def test_metrics_by_hand() -> None:
    scores = np.array([[9.0, 8, 7, 6, 5, 4, 3, 2, 1, 0, -1, -2],
                       [0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]])
    relevant = [np.array([0, 2, 9]), np.array([0])]
    metrics = ranking_metrics(scores, relevant, ks=(5, 10), rng=np.random.default_rng(0))
    # row 0: top-5 = {0..4} holds 0 and 2; top-10 = {0..9} holds all three. row 1: 0 is last.
    assert metrics["P@5"] == pytest.approx((2 / 5 + 0) / 2)
    assert metrics["R@5"] == pytest.approx((2 / 3 + 0) / 2)
    assert metrics["A@5"] == pytest.approx((1 + 0) / 2)
    assert metrics["P@10"] == pytest.approx((3 / 10 + 0) / 2)
    assert metrics["R@10"] == pytest.approx((1 + 0) / 2)
    assert metrics["A@10"] == pytest.approx((1 + 0) / 2)
    # row 0 hits at ranks 1, 3 and 10 of |G| = 3; row 1 has no hit, so it adds 0 to every mean.
    assert metrics["F1@5"] == pytest.approx(2 * (2 / 5) * (2 / 3) / (2 / 5 + 2 / 3) / 2)
    assert metrics["F1@10"] == pytest.approx(2 * (3 / 10) * 1 / (3 / 10 + 1) / 2)
    ideal = 1 + 1 / np.log2(3) + 1 / np.log2(4)  # three relevant hashtags ranked first
    assert metrics["nDCG@5"] == pytest.approx((1 + 1 / np.log2(4)) / ideal / 2)
    assert metrics["nDCG@10"] == pytest.approx((1 + 1 / np.log2(4) + 1 / np.log2(11)) / ideal / 2)
    assert metrics["MAP@5"] == pytest.approx((1 / 1 + 2 / 3) / 3 / 2)  # precision at each hit, over |G|
    assert metrics["MAP@10"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 10) / 3 / 2)
    assert metrics["MRR@5"] == metrics["MRR@10"] == pytest.approx(1 / 2)
    assert list(metrics) == metric_names((5, 10))


def test_reciprocal_rank_counts_only_the_first_hit_within_k() -> None:
    scores = np.array([[5.0, 4, 3, 2, 1, 0]])
    assert ranking_metrics(scores, [np.array([2, 3])], ks=(2, 3))["MRR@3"] == pytest.approx(1 / 3)
    assert ranking_metrics(scores, [np.array([2, 3])], ks=(2, 3))["MRR@2"] == 0.0


def test_fewer_columns_than_k_still_divides_by_k() -> None:
    metrics = ranking_metrics(np.array([[1.0, 3.0, 2.0]]), [np.array([0, 1])], ks=(5,))
    # ranked 1, 2, 0: hits at ranks 1 and 3; the ideal ranks both first
    assert metrics == {"P@5": pytest.approx(2 / 5), "R@5": 1.0, "A@5": 1.0, "F1@5": pytest.approx(4 / 7),
                       "nDCG@5": pytest.approx((1 + 0.5) / (1 + 1 / np.log2(3))),
                       "MAP@5": pytest.approx((1 + 2 / 3) / 2), "MRR@5": 1.0}


def test_empty_ground_truth_is_refused() -> None:
    with pytest.raises(ValueError):
        ranking_metrics(np.zeros((1, 4)), [np.array([], dtype=np.int64)], ks=(2,))


@pytest.mark.parametrize("relevant_column", [1, 4])
def test_ties_are_broken_uniformly(relevant_column: int) -> None:
    # Column 0 is first; columns 1-4 tie for the second place: a tied relevant column
    # reaches the top 2 with probability 1/4 and the top 3 with 1/2, wherever it sits.
    scores = np.array([[3.0, 2, 2, 2, 2, 1, 0]])
    rng = np.random.default_rng(1)
    draws = 3000
    at_2 = at_3 = 0.0
    for _ in range(draws):
        metrics = ranking_metrics(scores, [np.array([relevant_column])], ks=(2, 3), rng=rng)
        at_2 += metrics["A@2"]
        at_3 += metrics["A@3"]
    for observed, expected in ((at_2 / draws, 0.25), (at_3 / draws, 0.5)):
        assert abs(observed - expected) < 4 * np.sqrt(expected * (1 - expected) / draws)


def test_ties_within_a_batch_are_independent_of_column_order() -> None:
    rows = 20000
    scores = np.tile(np.array([5.0, 5, 5, 5, 5, 0]), (rows, 1))  # five-way tie for the top
    first = ranking_metrics(scores, [np.array([0])] * rows, ks=(1, 2), rng=np.random.default_rng(2))
    last = ranking_metrics(scores, [np.array([4])] * rows, ks=(1, 2), rng=np.random.default_rng(3))
    for metrics in (first, last):
        assert metrics["A@1"] == pytest.approx(0.2, abs=0.015)
        assert metrics["A@2"] == pytest.approx(0.4, abs=0.015)


def cases_with(relevant: list[list[int]]) -> evaluation.TestCases:
    return evaluation.TestCases(
        rows=np.arange(len(relevant)), users=np.zeros(len(relevant), dtype=np.int64),
        relevant=[np.asarray(r, dtype=np.int64) for r in relevant],
        n_posts=len(relevant), n_dropped_hashtags=0, n_dropped_cases=0,
    )


@pytest.mark.parametrize("n_hashtags", [1500, 5000])  # few / many hashtags besides most G
def test_sampled_candidates(n_hashtags: int) -> None:
    cases = cases_with([[0, 7, 99], [5], list(range(0, 400, 3)), list(range(100, n_hashtags - 1100))])
    negatives = sample_candidates(cases, n_hashtags, n_negatives=1000, seed=4)
    assert negatives.shape == (4, 1000)
    for row, truth in zip(negatives, cases.relevant):
        assert len(np.unique(row)) == 1000
        assert row.min() >= 0 and row.max() < n_hashtags
        assert not np.isin(row, truth).any()
    np.testing.assert_array_equal(negatives, sample_candidates(cases, n_hashtags, n_negatives=1000, seed=4))
    assert not np.array_equal(negatives, sample_candidates(cases, n_hashtags, n_negatives=1000, seed=5))


def test_fewer_candidates_when_fewer_exist() -> None:
    negatives = sample_candidates(cases_with([[1, 2, 3], [0]]), n_hashtags=1002, n_negatives=1000, seed=0)
    assert negatives.shape == (2, 1000)
    assert (negatives[0] >= 0).sum() == 999 and (negatives[1] >= 0).sum() == 1000
    assert set(negatives[0][negatives[0] >= 0]) == set(range(1002)) - {1, 2, 3}


@pytest.mark.parametrize("n_negatives", [3, 5])  # rejection path / random-key path
def test_negatives_are_uniform(n_negatives: int) -> None:
    rows = 8000
    negatives = sample_candidates(cases_with([[2, 5]] * rows), n_hashtags=10, n_negatives=n_negatives, seed=0)
    counts = np.bincount(negatives.ravel(), minlength=10)
    assert counts[2] == counts[5] == 0
    expected = rows * n_negatives / 8
    others = np.delete(counts, [2, 5])
    assert np.all(np.abs(others - expected) < 5 * np.sqrt(expected))


class HashScorer:
    """Distinct pseudo-random scores fixed by (post item, hashtag): no ties."""

    def __init__(self, n_hashtags: int) -> None:
        self.n_hashtags = n_hashtags
        self.calls = 0

    def score(self, users: np.ndarray, posts: PostData) -> np.ndarray:
        self.calls += 1
        seeds = [int(item) for item in posts.items]
        return np.stack([np.random.default_rng(s).permutation(self.n_hashtags).astype(float) for s in seeds])


def test_evaluate_matches_metrics_on_the_sampled_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluation, "NEGATIVE_BLOCK", 7)  # several blocks, cut by the batches
    rng = np.random.default_rng(0)
    n_hashtags, n_cases = 40, 30
    relevant = [np.sort(rng.choice(n_hashtags, size=rng.integers(1, 4), replace=False)) for _ in range(n_cases)]
    cases = cases_with([r.tolist() for r in relevant])
    posts = make_posts([("u", str(i), []) for i in range(n_cases)])
    scorer = HashScorer(n_hashtags)
    result = evaluate(scorer, posts, cases, protocol="both", ks=(5,), seed=3, batch_size=4, n_negatives=10)
    assert scorer.calls == 4 * 2 + 1  # batches of 4 within blocks of 7 (4 blocks + 2 cases), both protocols

    scores = scorer.score(cases.users, posts)
    negatives = sample_candidates(cases, n_hashtags, n_negatives=10, seed=3)
    sampled = [ranking_metrics(np.concatenate([scores[b, relevant[b]], scores[b, negatives[b]]])[None],
                               [np.arange(len(relevant[b]))], ks=(5,)) for b in range(n_cases)]
    full = ranking_metrics(scores, relevant, ks=(5,))
    for name in metric_names((5,)):
        assert result["sampled"]["all"][name] == pytest.approx(np.mean([m[name] for m in sampled]))
        assert result["full"]["all"][name] == pytest.approx(full[name])

    alone = evaluate(HashScorer(n_hashtags), posts, cases, protocol="sampled", ks=(5,), seed=3, batch_size=4,
                     n_negatives=10)
    assert alone["sampled"] == result["sampled"]


def test_batches_with_fewer_candidates_than_k_are_padded() -> None:
    """Few hashtags and negatives: batches rank fewer than max K, and not all as many."""
    relevant = [[0], [1, 2, 3], [4], [0, 5]]
    cases = cases_with(relevant)
    posts = make_posts([("u", str(i), []) for i in range(len(relevant))])
    result = evaluate(HashScorer(6), posts, cases, protocol="sampled", ks=(5, 10), seed=0, batch_size=1,
                      n_negatives=1)
    # Every candidate is within the top 5: each case's ground truth is found in full.
    assert result["sampled"]["all"]["R@5"] == result["sampled"]["all"]["R@10"] == 1.0


def test_cases_drop_unseen_hashtags_and_count_cold_users() -> None:
    train = make_posts([("ann", "v1", ["cat", "dog"]), ("bob", "v2", ["dog", "sun"])])
    graph = build_graph(train)
    test = make_posts([
        ("ann", "v3", ["cat", "new"]),  # one hashtag dropped
        ("cid", "v4", ["sun"]),  # cold user
        ("bob", "v5", ["unseen", "other"]),  # case left empty
        ("dee", "v6", ["dog", "cat", "x"]),  # cold user, one hashtag dropped
    ])
    cases = build_cases(test, np.arange(4), graph)
    assert len(cases) == 3 and cases.n_posts == 4
    assert cases.n_dropped_hashtags == 4 and cases.n_dropped_cases == 1 and cases.n_cold == 2
    np.testing.assert_array_equal(cases.rows, [0, 1, 3])
    np.testing.assert_array_equal(cases.users, [graph.user_index["ann"], -1, -1])
    index = graph.hashtag_index
    expected = [[index["cat"]], [index["sun"]], sorted([index["dog"], index["cat"]])]
    assert [r.tolist() for r in cases.relevant] == expected

    class Oracle:
        """Perfect for warm users, useless (ground truth last) for cold ones."""

        def score(self, users: np.ndarray, posts: PostData) -> np.ndarray:
            scores = np.zeros((len(posts), graph.n_hashtags))
            for b, tags in enumerate(posts.hashtags):
                for tag in tags:
                    if tag in index:
                        scores[b, index[tag]] = 1.0 if users[b] >= 0 else -1.0
            return scores

    result = evaluate(Oracle(), test, cases, protocol="full", ks=(1,))
    assert result["counts"] == {"posts": 4, "cases": 3, "warm_cases": 1, "cold_cases": 2,
                                "dropped_hashtags": 4, "dropped_cases": 1}
    assert result["full"]["warm"] == {"cases": 1, **{name: 1.0 for name in metric_names((1,))}}
    assert result["full"]["cold"] == {"cases": 2, **{name: 0.0 for name in metric_names((1,))}}
    assert result["full"]["all"]["P@1"] == pytest.approx(1 / 3)
    assert "sampled" not in result


def test_nan_scores_rank_last() -> None:
    scores = np.array([[np.nan, 1.0, 0.0]])
    assert ranking_metrics(scores, [np.array([0])], ks=(2,))["A@2"] == 0.0


def test_tensor_scores_are_ranked_as_their_numpy_array_ties_included() -> None:
    rng = np.random.default_rng(5)
    n_hashtags, n_cases = 60, 25
    relevant = [np.sort(rng.choice(n_hashtags, size=rng.integers(1, 4), replace=False)) for _ in range(n_cases)]
    cases = cases_with([r.tolist() for r in relevant])
    posts = make_posts([("u", str(i), []) for i in range(n_cases)])
    scores = rng.integers(0, 3, size=(n_cases, n_hashtags)).astype(np.float32)  # many ties

    class Fixed:
        def __init__(self, as_tensor: bool) -> None:
            self.as_tensor = as_tensor

        def score(self, users, posts_):
            rows = scores[[int(item) for item in posts_.items]]
            return torch.from_numpy(rows) if self.as_tensor else rows

    results = [evaluate(Fixed(as_tensor), posts, cases, protocol="both", ks=(1, 5), seed=2, batch_size=8,
                        n_negatives=20) for as_tensor in (False, True)]
    assert results[0] == results[1]
    assert ranking_metrics(torch.from_numpy(scores), relevant, ks=(5,)) == ranking_metrics(scores, relevant, ks=(5,))
