"""The trained model as a scorer: every known hashtag scored for each post."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from phr_cli.data.graph import PostData
from phr_cli.model.phr import PHRModel


class PostTensors(NamedTuple):
    """A chunk of posts as `PHRModel.score_parts` reads them."""

    users: Tensor  # graph ids, -1: cold
    items: Tensor  # graph ids, -1: new content
    features: dict[str, Tensor]
    masks: dict[str, Tensor]
    times: Tensor | None  # Unix seconds, NaN: unknown


class SecondStage(Protocol):
    """What re-orders a chunk's ranking after the parts are summed (`rerank.Reranker`); whoever
    builds the scorer hands it in, so the scorer needs nothing of how it was fitted."""

    def rescore(self, model: PHRModel, parts: dict[str, Tensor], total: Tensor, users: Tensor,
                items: Tensor) -> Tensor: ...

    def count_posts(self, users: Tensor, items: Tensor, n_users: int, n_items: int) -> None:
        """Posts published since training (their user and item rows) added to what it counts."""

    def copy(self) -> SecondStage:
        """One whose counts can change apart from this one's."""


class ModelScorer:
    """GCN-PHR as a `metrics.Scorer`: scores of every known hashtag for each post."""

    def __init__(self, model: PHRModel, user_reps: Tensor, hashtag_reps: Tensor, item_index: dict[str, int],
                 rows_per_chunk: int = 256, reranker: SecondStage | None = None) -> None:
        self.model, self.user_reps, self.hashtag_reps = model, user_reps, hashtag_reps
        self.item_index = item_index  # training items by key: a post of one of them gets its ID and counts
        self.rows_per_chunk = rows_per_chunk
        self.reranker = reranker

    def _chunks(self, users: np.ndarray, posts: PostData) -> Iterator[PostTensors]:
        """The posts as tensors on the model's device, rows_per_chunk posts at a time."""
        device = self.user_reps.device
        users_t = torch.as_tensor(np.asarray(users, dtype=np.int64), device=device)
        for start in range(0, len(posts), self.rows_per_chunk):
            chunk = slice(start, start + self.rows_per_chunk)
            yield PostTensors(
                users_t[chunk],
                torch.as_tensor([self.item_index.get(item, -1) for item in posts.items[chunk]],
                                dtype=torch.long, device=device),
                {m: torch.as_tensor(np.asarray(f[chunk], dtype=np.float32), device=device)
                 for m, f in posts.features.items()},
                {m: torch.as_tensor(np.asarray(k[chunk], dtype=bool), device=device) for m, k in posts.masks.items()},
                None if posts.times is None else torch.as_tensor(posts.times[chunk], dtype=torch.float64,
                                                                 device=device))

    @torch.no_grad()
    def parts(self, users: np.ndarray, posts: PostData) -> Iterator[dict[str, Tensor]]:
        """The named score parts (`PHRModel.score_parts`) of every hashtag for posts, one chunk
        of rows_per_chunk posts at a time; users[b] is the graph user index, -1 when cold.
        A post's time (posts.times) weighs the user's past uses of each hashtag by recency."""
        for chunk in self._chunks(users, posts):
            yield self.model.score_parts(self.user_reps, self.hashtag_reps, *chunk)

    @torch.no_grad()
    def scored_chunks(self, users: np.ndarray, posts: PostData) -> Iterator[tuple[PostTensors, dict[str, Tensor],
                                                                                   Tensor]]:
        """Each chunk of posts, its unscaled parts and their calibrated total (B, H)."""
        for chunk in self._chunks(users, posts):
            parts = self.model.unscaled_parts(self.user_reps, self.hashtag_reps, *chunk)
            total = torch.stack(list(self.model.scaled(parts).values())).sum(dim=0)
            yield chunk, parts, total

    def score(self, users: np.ndarray, posts: PostData) -> Tensor:
        """(len(posts), n_hashtags) on the model's device: the sum of the parts, each post's
        leading hashtags ranked again by the re-ranker if there is one."""
        blocks = [total if self.reranker is None else
                  self.reranker.rescore(self.model, parts, total, chunk.users, chunk.items)
                  for chunk, parts, total in self.scored_chunks(users, posts)]
        return torch.cat(blocks) if blocks else self.hashtag_reps.new_zeros(0, len(self.hashtag_reps))


class FactorScorer(ModelScorer):
    """The model's PITF factors part alone (`factors.TagFactors`, unscaled) as a `metrics.Scorer`."""

    @torch.no_grad()
    def score(self, users: np.ndarray, posts: PostData) -> Tensor:
        factors = self.model.factors
        assert factors is not None, "the model has no factors part"
        blocks = [factors.score_rows(chunk.users, chunk.items, chunk.features, chunk.masks)
                  for chunk in self._chunks(users, posts)]
        return torch.cat(blocks) if blocks else self.hashtag_reps.new_zeros(0, len(self.hashtag_reps))
