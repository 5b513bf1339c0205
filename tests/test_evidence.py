"""The count prior's tables and its recency term, against plain loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from phr_cli.model.evidence import PROFILE_WIDTH, SECONDS_PER_DAY, SIMILARITY_AMPLIFICATION, SparseCounts, TagEvidence

N_USERS, N_HASHTAGS, N_ITEMS = 4, 5, 6
DAY = SECONDS_PER_DAY

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_triples(seed: int = 0, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct (user, hashtag, item) triples and their posts' times (a post = user, item:
    every triple of one post has its time; some posts have none)."""
    rng = np.random.default_rng(seed)
    triples = np.unique(np.stack([rng.integers(N_USERS, size=n), rng.integers(N_HASHTAGS, size=n),
                                  rng.integers(N_ITEMS, size=n)], axis=1), axis=0)
    post_time = rng.uniform(0, 400, size=(N_USERS, N_ITEMS)) * DAY
    post_time[rng.random((N_USERS, N_ITEMS)) < 0.2] = np.nan
    times = post_time[triples[:, 0], triples[:, 2]]
    return torch.as_tensor(triples), torch.as_tensor(times)


def fitted(triples: torch.Tensor, times: torch.Tensor | None) -> TagEvidence:
    vectors = torch.randn(N_ITEMS, 3, generator=torch.Generator().manual_seed(0))
    return TagEvidence.fit(triples, N_USERS, N_ITEMS, N_HASHTAGS, vectors, neighbours=2, triple_times=times)


def reference_recency(triples, times, user: int, hashtag: int, day: float) -> float:
    total = 0.0
    for (u, j, _), t in zip(triples.tolist(), times.tolist()):
        if u == user and j == hashtag:
            gap = abs(day - t / DAY)
            total += 1.0 if math.isnan(gap) else (1.0 + gap) ** -0.5
    return total


def test_sparse_counts_match_a_dense_table():
    rng = np.random.default_rng(1)
    rows, columns = rng.integers(4, size=30), rng.integers(7, size=30)
    dense = np.zeros((4, 7))
    np.add.at(dense, (rows, columns), 1)
    table = SparseCounts.of_pairs(torch.as_tensor(rows), torch.as_tensor(columns), 7)
    asked = torch.tensor([2, -1, 0, 3])
    expected = np.vstack([dense[2], np.zeros(7), dense[0], dense[3]])
    np.testing.assert_array_equal(table.dense_rows(asked).numpy(), expected)
    np.testing.assert_array_equal(table.lookup(asked.unsqueeze(1), torch.arange(7)).numpy(), expected)


def test_recency_weighs_each_use_by_its_distance_in_time():
    triples, times = random_triples()
    evidence = fitted(triples, times)
    users = torch.tensor([0, 1, 2, 3, -1])
    days = torch.tensor([100.0, 350.0, float("nan"), 0.0, 10.0])
    rows = evidence.recency_rows(users, days)
    for b, (user, day) in enumerate(zip(users.tolist(), days.tolist())):
        for hashtag in range(N_HASHTAGS):
            expected = 0.0 if user < 0 else reference_recency(triples, times, user, hashtag, day)
            assert rows[b, hashtag].item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    pairs = evidence.recency(users, torch.arange(N_HASHTAGS).expand(len(users), -1), days)
    torch.testing.assert_close(pairs, rows)


def test_without_times_recency_is_the_user_count():
    triples, _ = random_triples(seed=2)
    evidence = fitted(triples, None)
    users = torch.arange(N_USERS)
    counts = evidence.user_counts.dense_rows(users)
    torch.testing.assert_close(evidence.recency_rows(users, torch.full((N_USERS,), 5.0)), counts)
    terms = evidence.term_rows(users, torch.full((N_USERS,), -1), torch.randn(N_USERS, 3))
    torch.testing.assert_close(terms["recent use"], evidence.weights[4] * counts.log1p())


def test_a_training_post_leaves_its_own_use_out():
    # One user used hashtag 0 on two items, 30 days apart; scoring the first post, only the
    # second use counts, at its distance.
    triples = torch.tensor([[0, 0, 0], [0, 0, 1], [1, 1, 2]])
    times = torch.tensor([10.0, 40.0, 0.0]) * DAY
    evidence = fitted(triples, times)
    evidence.prepare_training()
    with torch.no_grad():
        evidence.weights.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 0.0]))
    scores = evidence.score_training(torch.tensor([0]), torch.tensor([0]), torch.tensor([[0, 1]]),
                                     on_post=torch.tensor([[True, False]]))
    assert scores[0, 0].item() == pytest.approx(math.log1p(31.0 ** -0.5), rel=1e-5)
    assert scores[0, 1].item() == pytest.approx(0.0)


def reference_similar_posts(triples, user: int, hashtag: int, profile: np.ndarray) -> float:
    """Σ over the user's uses of the hashtag of max(0, cos(the used item's hashtag counts, profile))^2.5."""
    counts = np.zeros((N_ITEMS, N_HASHTAGS))
    for _, j, k in triples.tolist():
        counts[k, j] += 1
    total = 0.0
    for u, j, k in triples.tolist():
        if u == user and j == hashtag:
            cosine = counts[k] @ profile / (np.linalg.norm(counts[k]) * np.linalg.norm(profile))
            total += max(0.0, cosine) ** SIMILARITY_AMPLIFICATION
    return total


def test_similar_own_posts_weighs_each_use_by_how_alike_its_item_is():
    """A seen item's profile is its hashtag counts; a new one's, its content neighbours' shares."""
    triples, times = random_triples(seed=4, n=60)
    evidence = fitted(triples, times)
    with torch.no_grad():
        evidence.weights.zero_()
        evidence.weights[5] = 1.0
    users, items = torch.tensor([0, 1, 2, 3, -1, 2]), torch.tensor([0, 3, -1, 5, 1, -1])
    content = torch.randn(len(users), 3, generator=torch.Generator().manual_seed(1))
    terms = evidence.term_rows(users, items, content)
    shares = evidence.index.hashtag_shares(evidence.index.reduce(content), 2, exclude=items)
    item_counts = evidence.item_counts.dense_rows(items)
    for b, (user, item) in enumerate(zip(users.tolist(), items.tolist())):
        profile = (item_counts[b] if item >= 0 else shares[b]).numpy()
        for hashtag in range(N_HASHTAGS):
            expected = 0.0 if user < 0 else reference_similar_posts(triples, user, hashtag, profile)
            assert terms["similar own posts"][b, hashtag].item() == pytest.approx(math.log1p(expected), abs=1e-5)


def test_a_training_post_leaves_itself_out_of_similar_own_posts():
    # User 0 tagged item 0 with #0 and item 1 with #0 and #1; user 1 tagged item 0 with #1.
    # Scoring user 0's post of item 0: item 0 is profiled by user 1's #1 alone, item 1's
    # profile (#0, #1) is at cosine 1/√2 from it (amplified: 2^-1.25), and the post's own
    # use of #0 is left out.
    triples = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 1], [1, 1, 0]])
    evidence = fitted(triples, None)
    evidence.prepare_training()
    with torch.no_grad():
        evidence.weights.zero_()
        evidence.weights[5] = 1.0
    scores = evidence.score_training(torch.tensor([0]), torch.tensor([0]), torch.tensor([[0, 1, 2]]),
                                     on_post=torch.tensor([[True, False, False]]))
    expected = [math.log1p(2 ** -1.25), math.log1p(2 ** -1.25), 0.0]
    torch.testing.assert_close(scores[0], torch.tensor(expected))


def test_without_the_recency_term_there_is_no_recent_use_part():
    triples, times = random_triples(seed=3)
    vectors = torch.randn(N_ITEMS, 3, generator=torch.Generator().manual_seed(0))
    evidence = TagEvidence.fit(triples, N_USERS, N_ITEMS, N_HASHTAGS, vectors, neighbours=2, triple_times=times,
                               recency=False)
    terms = evidence.term_rows(torch.arange(N_USERS), torch.full((N_USERS,), -1), torch.randn(N_USERS, 3),
                               times=torch.full((N_USERS,), 100 * DAY, dtype=torch.float64))
    assert tuple(terms) == TagEvidence.terms(recency=False)
    assert "recent use" not in terms and "similar own posts" in terms


def test_item_profiles_keep_their_cosines_in_the_reduced_basis():
    """With more hashtags than PROFILE_WIDTH, profiles live in the leading singular vectors:
    items drawn from a few topics keep their cosines there; the basis is the same every fit."""
    rng = np.random.default_rng(5)
    n_users, n_items, n_hashtags = 30, 200, 3 * PROFILE_WIDTH
    topics = rng.random((8, n_hashtags)) < 0.05
    item_topic = rng.integers(8, size=n_items)
    triples = np.unique([(rng.integers(n_users), j, k) for k in range(n_items)
                         for j in np.flatnonzero(topics[item_topic[k]])], axis=0)
    vectors = torch.randn(n_items, 3, generator=torch.Generator().manual_seed(0))
    evidence = TagEvidence.fit(torch.as_tensor(triples), n_users, n_items, n_hashtags, vectors, neighbours=2)
    assert evidence.profile_basis.shape == (n_hashtags, PROFILE_WIDTH)
    exact = evidence.item_counts.dense_rows(torch.arange(n_items))
    exact = exact / exact.norm(dim=1, keepdim=True)
    reduced = evidence.item_profiles / evidence.item_profiles.norm(dim=1, keepdim=True)
    torch.testing.assert_close(reduced @ reduced.T, exact @ exact.T, atol=1e-4, rtol=0)
    again = TagEvidence.fit(torch.as_tensor(triples), n_users, n_items, n_hashtags, vectors, neighbours=2)
    assert torch.equal(again.profile_basis, evidence.profile_basis)
