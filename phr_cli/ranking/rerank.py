"""A second stage over the default model: gradient-boosted trees that re-rank each post's
leading hashtags, fitted on the validation posts.

The calibrated score weighs its parts the same for every post, yet what a part is worth
depends on the post: a user's history says more of a user who tags from habit (a few
hashtags on every post) than of one who describes each item; an item's history says more
when many others tagged it; a hashtag on 40 of a user's 50 posts is another matter than one
on 40 of 1,000. Learning to rank's usual second stage (LambdaMART, Burges 2010; here
LightGBM's trees with a logistic loss, which ranked as well on Last.fm) learns such
interactions from the parts and a few counts of the user, the item and the hashtag. It is
fitted on the validation posts, which stand for the deployment as they do for calibration;
it is kept only if P@5 rises on the half of them it was not fitted on, and it is then
refitted on them all. What it adds on Last.fm: bench/README.md, "Re-ranker".

The trees are saved in LightGBM's own text format, not pickled: a checkpoint stays a
weights-only file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from phr_cli.data.cases import TestCases
from phr_cli.data.graph import Graph, PostData
from phr_cli.model.phr import PHRModel
from phr_cli.ranking.scorer import ModelScorer
from phr_cli.ranking.validation import MIN_FIT_CASES, validation_halves

if TYPE_CHECKING:
    import lightgbm

# Hashtags re-ranked per post: nearly all of a post's hashtags that the model ranks at all
# (the candidates' recall on Last.fm: bench/README.md, "Re-ranker").
CANDIDATES = 50
# A lower rate than LightGBM's default (0.1) with more rounds, and leaves of at least 100
# candidates: a validation set is small (Last.fm's 6,000 posts give 300,000 candidates).
# The logistic loss needs no grouping of candidates by post; how it and the rounds were
# chosen: bench/README.md, "Re-ranker".
BOOSTING = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 100,
            "deterministic": True, "force_row_wise": True, "verbose": -1}
ROUNDS = 300
# The name of what the trees add to the calibrated total, where a score is explained by parts.
RERANKER_PART = "re-ranker"
# Beside each score part (unscaled) and the calibrated total, what describes the candidate.
CONTEXT = ("total", "rank", "below the first", "cold user", "user's posts", "user's hashtags per post",
           "user's distinct hashtags", "user's posts with it", "share of the user's posts with it",
           "item's posts with it", "share of the item's posts with it", "posts with it", "known item",
           "item's posts")


@dataclass
class CountsOfTraining:
    """The training posts of each user and of each item, which the trees read and the
    evidence does not keep (it counts (user, hashtag) and (item, hashtag) pairs)."""

    user_posts: Tensor  # (n_users,)
    item_posts: Tensor  # (n_items,)

    @classmethod
    def of_graph(cls, graph: Graph) -> CountsOfTraining:
        users, _, items = torch.as_tensor(graph.triples).unbind(1)
        posts = torch.unique(users * graph.n_items + items)
        return cls(torch.bincount(posts // graph.n_items, minlength=graph.n_users).float(),
                   torch.bincount(posts % graph.n_items, minlength=graph.n_items).float())

    def to(self, device: torch.device) -> CountsOfTraining:
        return CountsOfTraining(self.user_posts.to(device), self.item_posts.to(device))


def candidate_features(model: PHRModel, counts: CountsOfTraining, parts: dict[str, Tensor], total: Tensor,
                       users: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
    """The top CANDIDATES hashtags (B, N) of each post by the calibrated total (B, H), and
    their features (B, N, parts + CONTEXT): unscaled parts (B, H) of users (B,) (-1: cold)
    and items (B,) (-1: new content)."""
    assert model.evidence is not None, "the re-ranker reads the evidence's counts"
    top = total.topk(min(CANDIDATES, total.shape[1]), dim=1).indices
    chosen = total.gather(1, top)
    known_user, known_item = users >= 0, items >= 0
    user, item = users.clamp(min=0), items.clamp(min=0)
    user_posts = torch.where(known_user, counts.user_posts[user], 0.0)
    item_posts = torch.where(known_item, counts.item_posts[item], 0.0).unsqueeze(1)
    user_counts = model.evidence.user_counts
    with_user = user_counts.lookup(users.unsqueeze(1), top)
    with_item = model.evidence.item_counts.lookup(items.unsqueeze(1), top)
    # Each user's (post, hashtag) pairs and distinct hashtags: the sum and the number of their
    # (user, hashtag) counts (none for a cold user).
    at, entries = user_counts.row_entries(users)
    user_uses = total.new_zeros(len(users)).index_add_(0, at, user_counts.values[entries])
    user_hashtags = torch.bincount(at, minlength=len(users)).to(total.dtype)
    per_post = [
        (~known_user).float(), user_posts.log1p(), user_uses / user_posts.clamp(min=1),
        user_hashtags.log1p(),
    ]
    columns = [part.gather(1, top) for part in parts.values()] + [
        chosen, torch.arange(top.shape[1], device=top.device).float().expand_as(chosen), chosen - chosen[:, :1],
        *(value.unsqueeze(1).expand_as(chosen) for value in per_post),
        with_user.log1p(), with_user / user_posts.clamp(min=1).unsqueeze(1),
        with_item.log1p(), with_item / item_posts.clamp(min=1),
        model.evidence.hashtag_counts[top].log1p(), known_item.float().unsqueeze(1).expand_as(chosen),
        item_posts.log1p().expand_as(chosen),
    ]
    return top, torch.stack(columns, dim=-1)


@dataclass
class Reranker:
    """The fitted trees (LightGBM's text format), the feature names they read and the counts
    behind those features."""

    trees: str
    features: list[str]
    counts: CountsOfTraining

    def __post_init__(self) -> None:
        import lightgbm  # here, not at the top: every command that reads a checkpoint imports this module

        self._booster = lightgbm.Booster(model_str=self.trees)
        self._counts_on: dict[torch.device, CountsOfTraining] = {}

    def rescore(self, model: PHRModel, parts: dict[str, Tensor], total: Tensor, users: Tensor,
                items: Tensor) -> Tensor:
        """The total (B, H) with each post's candidates ranked by the trees, above the rest."""
        assert list(parts) + list(CONTEXT) == self.features, "the trees were fitted on other score parts"
        if total.device not in self._counts_on:
            self._counts_on[total.device] = self.counts.to(total.device)
        top, features = candidate_features(model, self._counts_on[total.device], parts, total, users, items)
        predicted = torch.as_tensor(
            self._booster.predict(features.reshape(-1, features.shape[-1]).cpu().numpy(), raw_score=True),
            dtype=total.dtype, device=total.device).view(top.shape)
        lift = total.max(dim=1, keepdim=True).values + 1.0 - predicted.min(dim=1, keepdim=True).values
        return total.scatter(1, top, predicted + lift)

    def copy(self) -> Reranker:
        return dataclasses.replace(self)

    def count_posts(self, users: Tensor, items: Tensor, n_users: int, n_items: int) -> None:
        """Posts (their user and item rows) added to the counts, which grow to n_users and n_items."""
        device = self.counts.user_posts.device
        users, items = users.to(device), items.to(device)
        ones = torch.ones(len(users), device=device)
        self.counts = CountsOfTraining(
            _padded(self.counts.user_posts, n_users).index_add_(0, users, ones),
            _padded(self.counts.item_posts, n_items).index_add_(0, items, ones))
        self._counts_on.clear()

    def to_dict(self) -> dict[str, Any]:
        counts = self.counts
        return {"trees": self.trees, "features": list(self.features),
                "counts": {"user_posts": counts.user_posts, "item_posts": counts.item_posts}}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Reranker:
        return cls(record["trees"], list(record["features"]), CountsOfTraining(**record["counts"]))


@dataclass
class Reranking:
    """How the re-ranker was chosen (saved in the checkpoint, like the calibration)."""

    held_out_before: float  # the metric on the held-out half, calibrated model
    held_out_after: float  # and re-ranked by trees fitted on the other half
    kept: bool
    cases: int
    metric: str = "P@5"


def fit_trees(features: np.ndarray, labels: np.ndarray, seed: int) -> lightgbm.Booster:
    import lightgbm

    data = lightgbm.Dataset(features.reshape(-1, features.shape[-1]), labels.reshape(-1), free_raw_data=True)
    return lightgbm.train({**BOOSTING, "seed": seed, "num_threads": torch.get_num_threads()}, data,
                          num_boost_round=ROUNDS)


def _metric(scores: np.ndarray, hits: np.ndarray, n_relevant: np.ndarray, metric: str) -> float:
    """P@K, R@K or A@K (as `metrics.ranking_metrics` defines them) of the candidates ranked
    by scores (cases, N), ties by position; n_relevant (cases,) counts each case's hashtags."""
    name, k = metric.split("@")
    best = np.argsort(-scores, axis=1, kind="stable")[:, : int(k)]
    found = np.take_along_axis(hits, best, axis=1).sum(axis=1)
    per_case = {"P": found / int(k), "R": found / n_relevant, "A": (found > 0).astype(np.float64)}[name]
    return float(per_case.mean())


class CandidateTable(NamedTuple):
    features: np.ndarray  # (cases, N, features)
    hits: np.ndarray  # (cases, N) 1.0 where the candidate is one of the case's hashtags
    names: list[str]  # the features' names


def candidate_table(scorer: ModelScorer, posts: PostData, cases: TestCases, counts: CountsOfTraining
                    ) -> CandidateTable:
    """The cases' candidates under the scorer's calibrated model, as the trees read them."""
    feature_blocks, candidate_blocks, names = [], [], []
    assert scorer.model.evidence is not None, "the re-ranker reads the evidence's counts"
    counts = counts.to(scorer.model.evidence.hashtag_counts.device)  # beside the evidence's counts, once
    for chunk, parts, total in scorer.scored_chunks(cases.users, posts.subset(cases.rows)):
        top, features = candidate_features(scorer.model, counts, parts, total, chunk.users, chunk.items)
        feature_blocks.append(features.cpu().numpy())
        candidate_blocks.append(top.cpu().numpy())
        names = list(parts)
    candidates = np.concatenate(candidate_blocks)
    hits = np.stack([np.isin(row, relevant) for row, relevant in zip(candidates, cases.relevant)]).astype(np.float64)
    return CandidateTable(np.concatenate(feature_blocks), hits, names + list(CONTEXT))


def fit_reranker(scorer: ModelScorer, posts: PostData, cases: TestCases, graph: Graph, metric: str = "P@5",
                 seed: int = 0, on_start: Callable[[], None] | None = None
                 ) -> tuple[Reranker | None, Reranking | None]:
    """Trees fitted on the validation cases' candidates under the scorer's calibrated model
    (see the module docstring); (None, None) with fewer than MIN_FIT_CASES cases. on_start()
    is called when the fit begins."""
    if len(cases) < MIN_FIT_CASES:
        return None, None
    if on_start is not None:
        on_start()
    counts = CountsOfTraining.of_graph(graph)
    table, hits, names = candidate_table(scorer, posts, cases, counts)
    # Calibration's permutation: the half checked here holds none of the cases the calibration
    # was fitted on, so neither stage has seen it.
    fit_rows, check_rows = validation_halves(len(cases), seed)
    held_out = fit_trees(table[fit_rows], hits[fit_rows], seed)
    checked = table[check_rows]
    n_relevant = np.array([len(cases.relevant[row]) for row in check_rows], dtype=np.float64)
    as_calibrated = -np.arange(hits.shape[1], dtype=np.float64)[None].repeat(len(check_rows), 0)
    before = _metric(as_calibrated, hits[check_rows], n_relevant, metric)
    predicted = np.asarray(held_out.predict(checked.reshape(-1, checked.shape[-1]), raw_score=True))
    after = _metric(predicted.reshape(len(check_rows), -1), hits[check_rows], n_relevant, metric)
    record = Reranking(before, after, after > before, len(cases), metric)
    if not record.kept:
        return None, record
    return Reranker(fit_trees(table, hits, seed).model_to_string(), names, counts), record


def _padded(counts: Tensor, size: int) -> Tensor:
    """counts (a copy) with zeros up to size."""
    return torch.cat([counts, counts.new_zeros(size - len(counts))])
