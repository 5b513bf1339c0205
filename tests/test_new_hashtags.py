"""New hashtags scored by their words' match with the caption (ranking/new_hashtags.py)."""

from __future__ import annotations

import numpy as np
import torch

from phr_cli.data.cases import TestCases
from phr_cli.data.graph import PostData
from phr_cli.ranking.new_hashtags import HeldScores, WithWordsMatch, WordsMatch, caption_similarity, fit_words_match

N_KNOWN = 3


class FixedScores:
    """Each post's row of a fixed score matrix (known columns, then new ones)."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def score(self, users: np.ndarray, posts: PostData) -> np.ndarray:
        return self.scores[[int(key) for key in posts.items]]


def posts_with_captions(captions: np.ndarray) -> PostData:
    n = len(captions)
    return PostData([f"u{row}" for row in range(n)], [str(row) for row in range(n)], [[] for _ in range(n)],
                    {"textual": captions.astype(np.float32)}, {"textual": np.ones(n, bool)})


def cases_of(relevant: list[list[int]]) -> TestCases:
    n = len(relevant)
    return TestCases(np.arange(n), np.zeros(n, np.int64), [np.asarray(r, np.int64) for r in relevant], n, 0, 0)


def scene(new_right: list[bool], known_right: list[bool] | None = None
          ) -> tuple[FixedScores, PostData, TestCases, torch.Tensor]:
    """Posts whose caption is new hashtag 0's words, whose new hashtag 0 is right where
    new_right says, and whose best known column is right where known_right says (default:
    always; the other known columns never are)."""
    n = len(new_right)
    known_right = [True] * n if known_right is None else known_right
    captions = np.zeros((n, 4))
    captions[:, 0] = 1.0
    # The model's own new-column scores sit far below every known one.
    scores = np.tile(np.array([3.0, 2.0, 1.0, -50.0, -50.0]), (n, 1))
    relevant = [[0] * known + [N_KNOWN] * new for new, known in zip(new_right, known_right)]
    return FixedScores(scores), posts_with_captions(captions), cases_of(relevant), torch.eye(4)[:2]


def test_caption_similarity_is_the_cosine_and_zero_without_a_caption() -> None:
    posts = posts_with_captions(np.array([[3.0, 4.0], [1.0, 0.0]]))
    posts.masks["textual"][1] = False
    similarity = caption_similarity(posts, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    torch.testing.assert_close(similarity, torch.tensor([[0.6, 0.8], [0.0, 0.0]]))


def test_held_scores_count_the_hits_a_part_brings_into_the_first_k() -> None:
    scorer, posts, cases, vectors = scene([True, False])
    held = HeldScores.of(scorer, posts, cases, N_KNOWN, vectors, k=2)
    assert held.k == 2 and held.new_relevant.tolist() == [[True, False], [False, False]]
    new, known = held.hits(0.0, 0.0)  # the model's own new scores: no new hashtag in a top 2
    assert new.tolist() == [0, 0] and known.tolist() == [1, 1]
    new, known = held.hits(10.0, 50.0)  # the matching new hashtag scores 10 > 3: first, the known ones move down
    assert new.tolist() == [1, 0] and known.tolist() == [1, 1]
    new, known = held.hits(100.0, 60.0)  # both new hashtags above every known one: the right known one is out
    assert new.tolist() == [1, 0] and known.tolist() == [0, 0]


def test_the_fit_takes_a_known_place_only_where_the_new_hashtag_is_right_more_often() -> None:
    # The new hashtag is right in 3 posts of 4, the known one in its place in 1: it takes the place.
    scorer, posts, cases, vectors = scene([True, True, True, False], [False, False, False, True])
    match = fit_words_match(scorer, posts, cases, N_KNOWN, vectors, k=1)
    assert match is not None and (match.posts, match.with_new) == (4, 3)
    assert (match.new_hits, match.known_hits, match.known_hits_without) == (3, 0, 1)
    # Right in 3 posts of 4 against a known one right in all 4: the known ranking stays.
    scorer, posts, cases, vectors = scene([True, True, True, False])
    match = fit_words_match(scorer, posts, cases, N_KNOWN, vectors, k=1)
    assert match is not None and (match.new_hits, match.known_hits) == (0, 4)
    # At K = 2 the new hashtag can take the second place, whose known one is never right: it is taken.
    match = fit_words_match(scorer, posts, cases, N_KNOWN, vectors, k=2)
    assert match is not None and (match.new_hits, match.known_hits) == (3, 4)


def test_no_fit_without_a_new_hashtag_and_the_part_lands_on_new_columns_only() -> None:
    scorer, posts, cases, vectors = scene([False, False])
    assert fit_words_match(scorer, posts, cases, N_KNOWN, vectors) is None
    scored = WithWordsMatch(scorer, N_KNOWN, vectors, WordsMatch(2.0, 1.0, 5, 2, 0, 0, 0, 0))
    scores = scored.score(np.zeros(2, np.int64), posts)
    assert scores[:, :N_KNOWN].tolist() == [[3.0, 2.0, 1.0]] * 2
    torch.testing.assert_close(scores[:, N_KNOWN:], torch.tensor([[-47.0, -49.0]] * 2, dtype=scores.dtype))
