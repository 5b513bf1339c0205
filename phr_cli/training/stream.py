"""The stream protocol (prequential): test posts scored in time order, each folded into
the method's history once scored, as a platform's model would learn from every post.

Only the test posts are folded in, in time order; posts of the same time are scored
together, before any of them is folded in (nothing orders them). A test case's ground
truth and candidates are those of the full protocol (the hashtags known in training), so
`stream` and `full` differ only in the history each case is scored with.

Each method folds posts in the way it can without refitting:
- the model (`ranking.live.LiveModel`): every count its evidence holds, and its re-ranker's;
- the popularity baselines: their counts, from the training posts and those folded in;
- content kNN: the folded posts join its index with their hashtags (the standardisation,
  projection, k and β stay as fitted) and the user's counts;
- PITF cannot take a post without refitting its factors: it stays frozen, and says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from phr_cli.data.cases import TestCases
from phr_cli.data.graph import Graph, PostData, build_graph
from phr_cli.evaluation.baselines import ContentNeighbours
from phr_cli.evaluation.metrics import RankedCases, Scorer, case_metrics, stream_ranking
from phr_cli.model.neighbours import ContentIndex
from phr_cli.ranking.live import LiveModel
from phr_cli.ranking.scorer import ModelScorer

FROZEN_NOTE = "stream: frozen (cannot take a post without refitting)"


class StreamingMethod(Protocol):
    def score_posts(self, posts: PostData) -> np.ndarray | Tensor:
        """(len(posts), at least the training hashtags) scores; users and items by name."""
        ...

    def fold_in(self, posts: PostData) -> None: ...


class StreamingModel:
    """The trained model as a stream method: a LiveModel of a scorer of its own."""

    def __init__(self, scorer: ModelScorer, users: list[str], hashtags: list[str]) -> None:
        self.live = LiveModel(scorer, users, hashtags)

    def score_posts(self, posts: PostData) -> Tensor:
        users = np.array([self.live.user_position(user) for user in posts.users], dtype=np.int64)
        return self.live.scorer.score(users, posts)

    def fold_in(self, posts: PostData) -> None:
        self.live.fold_in(posts)


class RefittedCounts:
    """A count baseline made again from the training posts and those folded in: the counts
    of the grown graph, whose vocabularies start with the training graph's (`build_graph`
    numbers in first-seen order, and the training posts come first)."""

    def __init__(self, make: Callable[[Graph], Scorer], train: PostData) -> None:
        self.make, self.train = make, train
        self.folded: list[PostData] = []
        self._refit()

    def _refit(self) -> None:
        self.graph = build_graph(concat_posts([self.train, *self.folded]))
        self.scorer = self.make(self.graph)

    def score_posts(self, posts: PostData) -> np.ndarray | Tensor:
        users = np.array([self.graph.user_index.get(user, -1) for user in posts.users], dtype=np.int64)
        return self.scorer.score(users, posts)

    def fold_in(self, posts: PostData) -> None:
        self.folded.append(posts)
        self._refit()


def grown_content_neighbours(fitted: ContentNeighbours) -> Callable[[Graph], ContentNeighbours]:
    """content kNN on a grown graph with the fitted standardisation, projection, k and β."""
    def make(graph: Graph) -> ContentNeighbours:
        grown = ContentNeighbours.__new__(ContentNeighbours)
        grown.__dict__.update(fitted.__dict__)
        vectors = fitted._vectors(graph.item_features, graph.item_masks)
        grown.index = ContentIndex.fit(vectors, torch.as_tensor(graph.triples[:, [2, 1]]), graph.n_hashtags,
                                       projection=fitted.index)
        grown.user_shares = ContentNeighbours.user_shares_of(graph)
        grown.tie_breaker = fitted.tie_breaker_of(graph)
        return grown
    return make


def concat_posts(parts: Sequence[PostData]) -> PostData:
    """The posts of parts, in order (features and masks of the first part's modalities)."""
    first = parts[0]
    times = None if any(p.times is None for p in parts) else np.concatenate([p.times for p in parts])
    return PostData(
        users=[u for p in parts for u in p.users], items=[i for p in parts for i in p.items],
        hashtags=[h for p in parts for h in p.hashtags],
        features={m: np.concatenate([p.features[m] for p in parts]) for m in first.features},
        masks={m: np.concatenate([p.masks[m] for p in parts]) for m in first.masks},
        times=times,
    )


def stream_rank(method: StreamingMethod, posts: PostData, cases: TestCases, test_rows: np.ndarray,
                n_hashtags: int, ks: Sequence[int], seed: int) -> RankedCases:
    """Each case's ranking when the test posts (test_rows of posts, every one folded in, with
    or without a case) are scored in time order and folded in once scored. Only the first
    n_hashtags columns (the training hashtags) are ranked."""
    assert posts.times is not None, "the stream protocol needs the posts' times"
    case_of_row = {int(row): case for case, row in enumerate(cases.rows)}
    test_rows = np.asarray(test_rows, dtype=np.int64)
    times = posts.times[test_rows]
    order = np.argsort(times, kind="stable")
    ranked = np.full((len(cases), max(ks)), -1, dtype=np.int64)
    rank = stream_ranking(max(ks), seed)
    boundaries = np.flatnonzero(np.diff(times[order])) + 1
    for group in np.split(test_rows[order], boundaries):
        scored = [row for row in group.tolist() if row in case_of_row]
        if scored:
            scores = method.score_posts(posts.subset(np.asarray(scored)))[:, :n_hashtags]
            columns = rank(scores)
            ranked[[case_of_row[row] for row in scored], : columns.shape[1]] = columns
        method.fold_in(posts.subset(group))
    return RankedCases(ranked, case_metrics(ranked, cases.relevant, ks))
