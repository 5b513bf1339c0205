"""Baselines of the evaluation protocol (docs/evaluation.md), each fitted on the training graph and implementing Scorer.

Popularity counts are taken over the graph's distinct (user, hashtag, item) triples: one
count per post that carries the hashtag. Every popularity score breaks its ties by global
popularity (a cold user or a new item thus falls back to it), so no baseline is helped or
hurt by the evaluator's random tie-breaking.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from phr_cli.data.cases import TestCases
from phr_cli.data.graph import MODALITIES, Graph, PostData
from phr_cli.data.posts import caption_without_hashtags
from phr_cli.errors import DataError
from phr_cli.evaluation.metrics import ProtocolName, evaluate, ranking_metrics
from phr_cli.model.hashtag_text import hashtag_words
from phr_cli.model.neighbours import ContentIndex, content_vectors
from phr_cli.model.pitf import PITF

# Weight of the global-popularity tie-breaker inside PopularityMix's [0, 1] scores: far
# below any difference between two mix values, far above float64 resolution.
_MIX_TIE_WEIGHT = 1e-9
# A caption's words: runs of letters or digits (as `hashtag_text.hashtag_words` splits a hashtag).
_WORD = re.compile(r"\d+|[^\W\d_]+")


def _global_counts(graph: Graph) -> np.ndarray:
    return np.bincount(graph.triples[:, 1], minlength=graph.n_hashtags).astype(np.float64)


def _tie_breaker(graph: Graph) -> np.ndarray:
    """Global counts scaled into [0, 1): added to integer counts, it orders their ties
    by global popularity without reordering anything else."""
    counts = _global_counts(graph)
    return counts / (counts.max(initial=0.0) + 1.0)


def _count_matrix(rows: np.ndarray, n_rows: int, graph: Graph) -> sp.csr_matrix:
    """(n_rows, n_hashtags) counts of triples, rows given by one triple column."""
    data = np.ones(len(rows), dtype=np.float64)
    return sp.csr_matrix((data, (rows, graph.triples[:, 1])), shape=(n_rows, graph.n_hashtags))


def _rows_of(matrix: sp.csr_matrix, index: np.ndarray) -> np.ndarray:
    """Dense rows of matrix for each index, zeros where the index is -1."""
    dense = np.zeros((len(index), matrix.shape[1]), dtype=np.float64)
    known = index >= 0
    if known.any():
        dense[known] = matrix[index[known]].toarray()
    return dense


class GlobalPopularity:
    """Hashtags ranked by how many training posts carry them, whoever the user."""

    def __init__(self, graph: Graph) -> None:
        self.counts = _global_counts(graph)

    def score(self, users: np.ndarray, posts: PostData) -> np.ndarray:
        return np.tile(self.counts, (len(posts), 1))


class UserPopularity:
    """MP_u: the user's own hashtag counts; global popularity orders ties and cold users."""

    def __init__(self, graph: Graph) -> None:
        self.counts = _count_matrix(graph.triples[:, 0], graph.n_users, graph)
        self.tie_breaker = _tie_breaker(graph)

    def score(self, users: np.ndarray, posts: PostData) -> np.ndarray:
        return _rows_of(self.counts, np.asarray(users)) + self.tie_breaker


class ItemPopularity:
    """MP_r: the hashtags training posts put on the same item; global popularity orders
    ties, and is all that is left for an item unseen in training (a new video)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.counts = _count_matrix(graph.triples[:, 2], graph.n_items, graph)
        self.tie_breaker = _tie_breaker(graph)

    def score(self, users: np.ndarray, posts: PostData) -> np.ndarray:
        return _rows_of(self.counts, self.graph.item_ids(posts)) + self.tie_breaker


def _max_normalised(counts: sp.csr_matrix) -> sp.csr_matrix:
    """Each row divided by its maximum: a user's (item's) favourite hashtag scores 1
    however many posts they have, so neither source dominates by sheer volume."""
    row_max = counts.max(axis=1).toarray().ravel()
    scale = np.divide(1.0, row_max, out=np.zeros_like(row_max), where=row_max > 0)
    return sp.csr_matrix(sp.diags(scale) @ counts)


class PopularityMix:
    """β·MP_u + (1−β)·MP_r (the "most popular ρ-mix" of Jäschke et al. 2007), each side
    divided by its user's / item's maximum count; an absent side (cold user, new item)
    contributes zeros, and global popularity orders the remaining ties."""

    def __init__(self, graph: Graph, beta: float = 0.5) -> None:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must lie in [0, 1], got {beta}")
        self.graph = graph
        self.beta = beta
        self.user_shares = _max_normalised(_count_matrix(graph.triples[:, 0], graph.n_users, graph))
        self.item_shares = _max_normalised(_count_matrix(graph.triples[:, 2], graph.n_items, graph))
        self.tie_breaker = _MIX_TIE_WEIGHT * _tie_breaker(graph)

    def score(self, users: np.ndarray, posts: PostData) -> np.ndarray:
        user_part = _rows_of(self.user_shares, np.asarray(users))
        item_part = _rows_of(self.item_shares, self.graph.item_ids(posts))
        return self.beta * user_part + (1.0 - self.beta) * item_part + self.tie_breaker


def tune_beta(graph: Graph, posts: PostData, cases: TestCases,
              grid: Sequence[float] = tuple(np.round(np.linspace(0.0, 1.0, 11), 2)),
              metric: str = "P@5", protocol: ProtocolName = "full", seed: int = 0) -> tuple[float, dict[float, float]]:
    """β of PopularityMix maximising metric on validation cases (first of equals), and the
    metric for every β of the grid."""
    if protocol == "both":
        raise ValueError("tune β on one protocol: 'sampled' or 'full'")
    k = int(metric.split("@")[1])
    mix = PopularityMix(graph)
    values = {}
    for beta in grid:
        mix.beta = float(beta)
        scores = evaluate(mix, posts, cases, protocol=protocol, ks=(k,), seed=seed)
        values[float(beta)] = scores[protocol]["all"][metric]
    best = max(values, key=lambda b: values[b])
    return best, values








class ContentNeighbours:
    """Content kNN fused with the user's popularity: β·MP_u + (1−β)·S_k, where S_k is the
    similarity-weighted hashtag shares of the k training items whose content is closest to
    the post's (`neighbours.ContentIndex`; a post of a training item finds that item first),
    and MP_u the user's counts divided by their maximum. Global popularity orders the
    remaining ties. The honest bar for a model that sees a new video through its content.
    """

    def __init__(self, graph: Graph, k: int = 20, beta: float = 0.5) -> None:
        self.k, self.beta = k, beta
        self.modalities = [m for m in MODALITIES if m in graph.item_features and graph.item_masks[m].any()]
        self.mean, self.std = {}, {}
        for m in self.modalities:
            present = torch.as_tensor(graph.item_features[m][graph.item_masks[m]], dtype=torch.float32)
            self.mean[m] = present.mean(dim=0)
            self.std[m] = present.std(dim=0, unbiased=False).clamp(min=1e-6)
        vectors = self._vectors(graph.item_features, graph.item_masks)
        pairs = torch.as_tensor(graph.triples[:, [2, 1]])
        self.index = ContentIndex.fit(vectors, pairs, graph.n_hashtags)
        self.user_shares = self.user_shares_of(graph)
        self.tie_breaker = self.tie_breaker_of(graph)

    @staticmethod
    def user_shares_of(graph: Graph) -> sp.csr_matrix:
        """MP_u: each user's counts divided by their maximum."""
        return _max_normalised(_count_matrix(graph.triples[:, 0], graph.n_users, graph))

    @staticmethod
    def tie_breaker_of(graph: Graph) -> np.ndarray:
        return _MIX_TIE_WEIGHT * _tie_breaker(graph)

    def _vectors(self, features: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> torch.Tensor:
        return content_vectors([
            ((torch.as_tensor(np.asarray(features[m]), dtype=torch.float32) - self.mean[m]) / self.std[m],
             torch.as_tensor(np.asarray(masks[m]), dtype=torch.bool))
            for m in self.modalities])

    def neighbour_shares(self, posts: PostData, k: int | None = None) -> np.ndarray:
        """(len(posts), n_hashtags) S_k of each post."""
        queries = self.index.reduce(self._vectors(posts.features, posts.masks))
        return self.index.hashtag_shares(queries, k or self.k).numpy().astype(np.float64)

    def combine(self, users: np.ndarray, shares: np.ndarray) -> np.ndarray:
        return self.beta * _rows_of(self.user_shares, np.asarray(users)) + (1.0 - self.beta) * shares \
            + self.tie_breaker

    def score(self, users: np.ndarray, posts: PostData) -> np.ndarray:
        return self.combine(users, self.neighbour_shares(posts))


def tune_content_neighbours(
    graph: Graph, posts: PostData, cases: TestCases, neighbours: Sequence[int] = (5, 10, 20, 50),
    betas: Sequence[float] = tuple(np.round(np.linspace(0.0, 1.0, 11), 2)), metric: str = "P@5", seed: int = 0,
) -> tuple[ContentNeighbours, dict[tuple[int, float], float]]:
    """ContentNeighbours with the k and β that maximise metric (full ranking) on validation
    cases (first of equals), and the metric of every pair of the grid. Each k's neighbour
    shares are computed once; only the fusion changes with β."""
    k_of_metric = int(metric.split("@")[1])
    model = ContentNeighbours(graph)
    validation = posts.subset(cases.rows)
    values: dict[tuple[int, float], float] = {}
    for k in neighbours:
        shares = model.neighbour_shares(validation, k)
        for beta in betas:
            model.beta = float(beta)
            scores = model.combine(cases.users, shares)
            values[(k, float(beta))] = ranking_metrics(scores, cases.relevant, ks=(k_of_metric,),
                                                       rng=np.random.default_rng(seed))[metric]
    model.k, model.beta = max(values, key=lambda pair: values[pair])
    return model, values


def caption_words(caption: str) -> set[str]:
    """The words of a caption as `CaptionWords` compares them: lower case, its hashtags
    removed (they are the labels)."""
    text = caption_without_hashtags(caption).lower()
    return set(_WORD.findall(text))


class CaptionWords:
    """A hashtag is suggested when its words (`hashtag_text.hashtag_words`) appear in the post's
    caption: its score is the share of its words the caption holds; global popularity orders
    ties (a hashtag unseen in training has none, so it follows the seen ones of equal share).
    Ranks any vocabulary, hashtags unseen in training included; needs the posts' captions."""

    def __init__(self, hashtags: Sequence[str], counts: np.ndarray) -> None:
        words = [dict.fromkeys(hashtag_words(h)) for h in hashtags]
        self.vocabulary = {w: column for column, w in enumerate(dict.fromkeys(w for ws in words for w in ws))}
        rows = np.repeat(np.arange(len(words)), [len(ws) for ws in words])
        columns = np.fromiter((self.vocabulary[w] for ws in words for w in ws), np.int64, len(rows))
        shares = np.repeat([1.0 / max(1, len(ws)) for ws in words], [len(ws) for ws in words])
        # (vocabulary, hashtags): each word's share of each hashtag that holds it.
        self.word_shares = sp.csr_matrix((shares, (columns, rows)), shape=(len(self.vocabulary), len(words)))
        counts = np.asarray(counts, np.float64)
        self.tie_breaker = _MIX_TIE_WEIGHT * counts / (counts.max(initial=0.0) + 1.0)

    @classmethod
    def from_graph(cls, graph: Graph) -> CaptionWords:
        return cls(graph.hashtags, _global_counts(graph))

    def score(self, users: np.ndarray, posts: PostData) -> np.ndarray:
        if posts.captions is None:
            raise DataError("the caption-words baseline needs the posts' captions (read them from the store)")
        rows, columns = [], []
        for row, caption in enumerate(posts.captions):
            found = [self.vocabulary[w] for w in caption_words(caption) if w in self.vocabulary]
            rows += [row] * len(found)
            columns += found
        present = sp.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(len(posts), len(self.vocabulary)))
        return (present @ self.word_shares).toarray() + self.tie_breaker


def fit_pitf_on_validation(pitf: PITF, posts: PostData, validation: TestCases, seed: int = 0,
                           on_epoch: Callable[[int, float], None] | None = None) -> PITF:
    """`pitf.fit` with its epoch chosen on validation P@5 (full ranking; ties broken with the
    seed), as every method's setting is chosen; all epochs without validation cases."""
    def validation_p5(fitting: PITF) -> float:
        return float(evaluate(fitting, posts, validation, protocol="full", ks=(5,), seed=seed)["full"]["all"]["P@5"])

    pitf.fit(on_epoch, validation=validation_p5 if len(validation) else None)
    return pitf
