"""Hashtags training never saw, scored by how well their words match the post's caption.

A column for a hashtag nobody used in training has no counts and no learned offsets: the
model scores it by its graph representation (from its words, `hashtag_text.HashtagsByText`,
or the mean one) and the mean bias, which on real data never lifts it into a top ten. Its
words, though, often say what the caption says (#radiohead under "Radiohead"). `WordsMatch`
adds to such a column `scale · cos(words, caption) + offset`: the hashtag's words embedded as
the store embedded its captions (`hashtag_text.HashtagEmbedder`), against the post's caption
embedding (the store's textual features, in the same projected space).

The two numbers are chosen as calibration chooses its scales, by the validation metric: on
the checkpoint's validation posts, which stand for the deployment, with the hashtags of those
posts that training never saw as the new columns (`fit_words_match`). The choice maximises
the right hashtags, known and new, among each post's first K: a new hashtag takes a known
one's place where it is right more often than the known one it displaces (the probability
ranking principle), and where no new hashtag is, the known ranking stays as it was. The
whole fit is one grid over the posts' scores, held once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from phr_cli.data.cases import TestCases
from phr_cli.data.graph import PostData
from phr_cli.evaluation.metrics import Scorer, ranked_hits

CAPTION_MODALITY = "textual"  # the store's caption embeddings, in the space HashtagEmbedder projects to
# Scales tried, in units of the spread of the known hashtags' top scores (0: the model's own order of new columns).
SCALE_STEPS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
OFFSET_QUANTILES = 41  # offsets tried per scale: quantiles of how far each post's best new column lies below its K-th
PAST_A_TIE = 1e-3  # how far past a quantile an offset lies, in units of the spread
BATCH_POSTS = 512


@dataclass
class WordsMatch:
    """`scale · cos(words, caption) + offset` added to new columns' scores, and what its fit found."""

    scale: float
    offset: float
    k: int  # the K of the fit's top K
    posts: int  # validation posts (the fit's cases)
    with_new: int  # of them, posts with a hashtag training never saw
    new_hits: int  # right new hashtags among the posts' first K, with the part
    known_hits: int  # right known hashtags there, with the part
    known_hits_without: int  # right known hashtags there, without it

    def to_dict(self) -> dict:
        return asdict(self)


def unit_rows(vectors: np.ndarray | Tensor) -> Tensor:
    """Rows scaled to unit length (zero rows stay zero)."""
    vectors = torch.as_tensor(np.asarray(vectors, np.float32) if isinstance(vectors, np.ndarray) else vectors).float()
    return vectors / vectors.norm(dim=1, keepdim=True).clamp(min=1e-12)


def caption_similarity(posts: PostData, hashtag_vectors: Tensor) -> Tensor:
    """(len(posts), new hashtags): cosine of each post's caption embedding with each hashtag's
    words (unit rows); 0 for a post without a caption."""
    captions = unit_rows(posts.features[CAPTION_MODALITY])
    captions[~torch.as_tensor(np.asarray(posts.masks[CAPTION_MODALITY], bool))] = 0.0
    return captions @ hashtag_vectors.to(captions).T


class WithWordsMatch:
    """A scorer of known plus new columns (the new ones last), with `WordsMatch` added to the new ones."""

    def __init__(self, scorer: Scorer, n_known: int, hashtag_vectors: Tensor, match: WordsMatch) -> None:
        self.scorer, self.n_known, self.match = scorer, n_known, match
        self.hashtag_vectors = unit_rows(hashtag_vectors)

    def score(self, users: np.ndarray, posts: PostData) -> Tensor:
        scores = torch.as_tensor(self.scorer.score(users, posts)).clone()
        similarity = caption_similarity(posts, self.hashtag_vectors).to(scores)
        scores[:, self.n_known:] += self.match.scale * similarity + self.match.offset
        return scores


@dataclass
class HeldScores:
    """What the fit reads of each post, held once: the K best known scores (sorted) and whether
    each is right, the new columns' scores without the part, their caption similarity, and
    which new columns are right."""

    known_top: Tensor  # (posts, K)
    known_hit: Tensor  # (posts, K) bool
    new_scores: Tensor  # (posts, new hashtags)
    similarity: Tensor  # (posts, new hashtags)
    new_relevant: Tensor  # (posts, new hashtags) bool

    @classmethod
    def of(cls, scorer: Scorer, posts: PostData, cases: TestCases, n_known: int, hashtag_vectors: Tensor,
           k: int) -> HeldScores:
        """For `scorer`, which scores the n_known columns and then one per row of hashtag_vectors
        (the new hashtags' words), and cases, each with its relevant columns, known and new."""
        vectors = unit_rows(hashtag_vectors)
        known_top, known_hit, new_scores, similarity = [], [], [], []
        for start in range(0, len(cases), BATCH_POSTS):
            chosen = np.arange(start, min(start + BATCH_POSTS, len(cases)))
            batch = posts.subset(cases.rows[chosen])
            scores = torch.as_tensor(scorer.score(cases.users[chosen], batch)).float().cpu()
            top, columns = scores[:, :n_known].topk(min(k, n_known), dim=1)
            known_top.append(top)
            known_hit.append(torch.as_tensor(ranked_hits(columns.numpy(), [cases.relevant[r] for r in chosen])))
            new_scores.append(scores[:, n_known:])
            similarity.append(caption_similarity(batch, vectors))
        held_new = torch.cat(new_scores)
        new_relevant = torch.zeros_like(held_new, dtype=torch.bool)
        for row, truth in enumerate(cases.relevant):
            new_relevant[row, torch.as_tensor(truth[truth >= n_known] - n_known)] = True
        return cls(torch.cat(known_top), torch.cat(known_hit), held_new, torch.cat(similarity), new_relevant)

    @property
    def k(self) -> int:
        return self.known_top.shape[1]

    def hits(self, scale: float, offset: float) -> tuple[Tensor, Tensor]:
        """(posts,) right new and right known hashtags among each post's first K, with the part."""
        moved = self.new_scores + scale * self.similarity + offset
        new_top, new_columns = moved.topk(min(self.k, moved.shape[1]), dim=1)
        merged = torch.cat([self.known_top, new_top], dim=1)
        hit = torch.cat([self.known_hit, self.new_relevant.gather(1, new_columns)], dim=1)
        is_new = torch.cat([torch.zeros_like(self.known_hit), torch.ones_like(new_top, dtype=torch.bool)], dim=1)
        # Ties between a known and a new score go to the known one (listed first, and the sort is stable).
        order = torch.sort(merged, dim=1, descending=True, stable=True).indices[:, :self.k]
        return (hit & is_new).gather(1, order).sum(dim=1), (hit & ~is_new).gather(1, order).sum(dim=1)

    def spread(self) -> float:
        """The spread of the posts' top known scores: the unit of the scales tried."""
        return float((self.known_top[:, 0] - self.known_top[:, -1]).std()) or 1.0


def fit_words_match(scorer: Scorer, posts: PostData, cases: TestCases, n_known: int, hashtag_vectors: Tensor,
                    k: int = 5) -> WordsMatch | None:
    """The scale and offset (module docstring) for `scorer` and cases as `HeldScores.of` reads
    them (validation posts); None when no case has a new hashtag."""
    if not any(bool((c >= n_known).any()) for c in cases.relevant):
        return None
    held = HeldScores.of(scorer, posts, cases, n_known, hashtag_vectors, k)
    known_hits_without = int(held.known_hit.sum())
    with_new = int(held.new_relevant.any(dim=1).sum())
    best: WordsMatch | None = None
    spread = held.spread()
    for step in SCALE_STEPS:
        scale = step * spread
        # How far each post's best new column lies below its K-th known one: an offset just past
        # a quantile of these puts a new column into that share of the posts' top K (at the
        # quantile itself it would tie with the K-th known one, and ties go to the known); the
        # smallest, not passed, lets none in.
        gaps = (held.known_top[:, -1] - (held.new_scores + scale * held.similarity).max(dim=1).values).double()
        quantiles = torch.quantile(gaps, torch.linspace(0, 1, OFFSET_QUANTILES, dtype=torch.float64))
        for offset in [float(gaps.min()), *(float(q) + PAST_A_TIE * spread for q in quantiles)]:
            new, known = (int(hits.sum()) for hits in held.hits(scale, offset))
            if best is None or new + known > best.new_hits + best.known_hits:
                best = WordsMatch(scale, offset, held.k, len(cases), with_new, new, known, known_hits_without)
    assert best is not None
    return best

