"""Baselines of the evaluation protocol (docs/evaluation.md), each fitted on the training graph and implementing Scorer.

Popularity counts are taken over the graph's distinct (user, hashtag, item) triples: one
count per post that carries the hashtag. Every popularity score breaks its ties by global
popularity (a cold user or a new item thus falls back to it), so no baseline is helped or
hurt by the evaluator's random tie-breaking.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from phr_cli.evaluate import ProtocolName, TestCases, evaluate, ranking_metrics
from phr_cli.graph import MODALITIES, Graph, PostData
from phr_cli.neighbours import ContentIndex, content_vectors

# Weight of the global-popularity tie-breaker inside PopularityMix's [0, 1] scores: far
# below any difference between two mix values, far above float64 resolution.
_MIX_TIE_WEIGHT = 1e-9


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


def _item_indices(graph: Graph, posts: PostData) -> np.ndarray:
    return np.asarray([graph.item_index.get(item, -1) for item in posts.items], dtype=np.int64)


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
        return _rows_of(self.counts, _item_indices(self.graph, posts)) + self.tie_breaker


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
        item_part = _rows_of(self.item_shares, _item_indices(self.graph, posts))
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


@dataclass
class PITFConfig:
    dim: int = 64
    epochs: int = 200  # at most: given a validation score, `fit` stops when it stops rising
    # The validation score is read every `check_every` epochs; `patience` checks without a
    # better one end training, and the best check's factors are kept.
    check_every: int = 10
    patience: int = 2
    batch_size: int = 1024
    lr: float = 0.001  # Adam; 1e-2 overshoots (Last.fm full P@5 .26 vs .30)
    l2: float = 1e-5  # on the factors a batch uses, per example
    init_std: float = 0.01
    seed: int = 0
    device: torch.device | str = "cpu"
    # The content map's modalities: "present", those some training item has; "all", every
    # one in the store (the former behaviour, kept for the speed benchmark's reference).
    modalities: str = "present"


class ContentFeatures:
    """An item's feature vector for PITF's content map: each modality standardised with
    training-item statistics, zeroed where missing, followed by one presence flag per modality.

    Only the modalities some training item has: the map could learn nothing for the others
    (on text-only data their 2,176 zero columns were three quarters of PITF's time), and a
    new item's features in them are ignored.
    """

    def __init__(self, graph: Graph, modalities: str = "present") -> None:
        self.modalities = [m for m in MODALITIES if m in graph.item_features
                           and (modalities == "all" or np.asarray(graph.item_masks[m]).any())]
        self.mean, self.std = {}, {}
        for m in self.modalities:
            present = graph.item_features[m][graph.item_masks[m]].astype(np.float64)
            width = graph.item_features[m].shape[1]
            self.mean[m] = present.mean(axis=0) if len(present) else np.zeros(width)
            std = present.std(axis=0) if len(present) else np.ones(width)
            self.std[m] = np.where(std > 1e-8, std, 1.0)

    @property
    def width(self) -> int:
        return sum(len(self.mean[m]) + 1 for m in self.modalities)

    def __call__(self, features: dict[str, np.ndarray], masks: dict[str, np.ndarray], n: int) -> np.ndarray:
        parts, flags = [], []
        for m in self.modalities:
            present = masks[m].astype(bool) if m in masks else np.zeros(n, dtype=bool)
            values = np.zeros((n, len(self.mean[m])))
            if m in features and present.any():
                values[present] = (features[m][present] - self.mean[m]) / self.std[m]
            parts.append(values)
            flags.append(present.astype(np.float64)[:, None])
        return np.concatenate(parts + flags, axis=1).astype(np.float32) if parts else np.zeros((n, 0), np.float32)


class PITF:
    """Pairwise interaction tensor factorisation (Rendle & Schmidt-Thieme, WSDM 2010):
    score(u, i, t) = <U_u, T^U_t> + <I_i, T^I_t>, learned with BPR over (post, hashtag of
    the post, hashtag not on the post).

    A new item (unseen in training, e.g. a new micro-video) has no factor I_i: it gets
    I_i = W·x_i + b, a linear map of its content features (ContentFeatures). The map is
    trained jointly: every training example is scored twice, once with the item's own
    factor and once with its mapped factor, and both BPR losses are summed; the second
    loss updates the map only (the factors are constants in it), so PITF itself is
    trained as published. Items seen in training are scored with their own factor. With
    no features at all, the map reduces to b, a learned "typical item". A cold user has
    U_u = 0: the item term alone ranks.
    """

    def __init__(self, graph: Graph, config: PITFConfig | None = None) -> None:
        self.graph = graph
        self.config = config or PITFConfig()
        self.device = torch.device(self.config.device)
        self.content = ContentFeatures(graph, self.config.modalities)
        generator = torch.Generator().manual_seed(self.config.seed)
        k, std = self.config.dim, self.config.init_std

        def factors(n: int, width: int = k) -> torch.Tensor:
            return (torch.randn(n, width, generator=generator) * std).to(self.device).requires_grad_()

        self.user_factors = factors(graph.n_users)
        self.user_tag_factors = factors(graph.n_hashtags)
        self.item_factors = factors(graph.n_items)
        self.item_tag_factors = factors(graph.n_hashtags)
        self.content_weight = factors(self.content.width)
        self.content_bias = torch.zeros(k, device=self.device, requires_grad=True)
        self.item_content = torch.as_tensor(
            self.content(graph.item_features, graph.item_masks, graph.n_items), device=self.device)

    def parameters(self) -> list[torch.Tensor]:
        return [self.user_factors, self.user_tag_factors, self.item_factors, self.item_tag_factors,
                self.content_weight, self.content_bias]

    def _negatives(self, post_keys: np.ndarray, posts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A hashtag not on the post for each example, uniform among those."""
        n_hashtags = self.graph.n_hashtags
        negatives = rng.integers(0, n_hashtags, size=len(posts))
        clash = np.isin(posts * n_hashtags + negatives, post_keys)
        while clash.any():
            negatives[clash] = rng.integers(0, n_hashtags, size=int(clash.sum()))
            clash[clash] = np.isin(posts[clash] * n_hashtags + negatives[clash], post_keys)
        return negatives

    def fit(self, on_epoch: Callable[[int, float], None] | None = None,
            validation: Callable[[PITF], float] | None = None) -> list[float]:
        """Train for up to config.epochs; returns the mean loss of each epoch. With a
        validation score of the model (higher is better), stop early as PITFConfig says,
        keep the factors of the best check and record it in `best_epoch` and `checks`."""
        config = self.config
        self.checks: list[tuple[int, float]] = []
        self.best_epoch = config.epochs
        best: tuple[float, list[torch.Tensor]] | None = None
        checks_since_best = 0
        users, tags, items = self.graph.triples.T
        _, posts = np.unique(self.graph.triples[:, [0, 2]], axis=0, return_inverse=True)
        posts = posts.ravel()
        post_keys = np.unique(posts * self.graph.n_hashtags + tags)
        rng = np.random.default_rng(config.seed)
        optimizer = torch.optim.Adam(self.parameters(), lr=config.lr, fused=True)
        all_users, all_tags, all_items = (torch.as_tensor(a, device=self.device) for a in (users, tags, items))
        losses = []
        for epoch in range(config.epochs):
            order = rng.permutation(len(tags))
            negatives = torch.as_tensor(self._negatives(post_keys, posts[order], rng), device=self.device)
            order_t = torch.as_tensor(order, device=self.device)
            # Summed where the loss lives: reading it every step would make the host wait each time.
            total = torch.zeros((), dtype=torch.float64, device=self.device)
            for start in range(0, len(order), config.batch_size):
                batch = order_t[start : start + config.batch_size]
                loss = self._loss(all_users.index_select(0, batch), all_items.index_select(0, batch),
                                  all_tags.index_select(0, batch), negatives[start : start + config.batch_size])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(batch)
            losses.append(float(total) / max(len(order), 1))
            if on_epoch is not None:
                on_epoch(epoch, losses[-1])
            if validation is not None and ((epoch + 1) % config.check_every == 0 or epoch + 1 == config.epochs):
                score = validation(self)
                self.checks.append((epoch + 1, score))
                if best is None or score > best[0]:
                    best = (score, [p.detach().clone() for p in self.parameters()])
                    self.best_epoch, checks_since_best = epoch + 1, 0
                else:
                    checks_since_best += 1
                    if checks_since_best >= config.patience:
                        break
        if best is not None:
            with torch.no_grad():
                for parameter, kept in zip(self.parameters(), best[1]):
                    parameter.copy_(kept)
        return losses

    def fit_on_validation(self, posts: PostData, validation: TestCases, seed: int = 0,
                          on_epoch: Callable[[int, float], None] | None = None) -> PITF:
        """`fit` with its epoch chosen on validation P@5 (full ranking; ties broken with the
        seed), as every method's setting is chosen; all epochs without validation cases."""
        self.fit(on_epoch, validation=(lambda fitting: evaluate(fitting, posts, validation, protocol="full", ks=(5,),
                                                      seed=seed)["full"]["all"]["P@5"]) if len(validation) else None)
        return self

    def _loss(self, users: torch.Tensor, items: torch.Tensor, positives: torch.Tensor,
              negatives: torch.Tensor) -> torch.Tensor:
        # index_select, not [ ]: on a CPU its backward (an index_add) is much faster than index_put's.
        user = self.user_factors.index_select(0, users)
        item = self.item_factors.index_select(0, items)
        mapped = self.item_content.index_select(0, items) @ self.content_weight + self.content_bias
        user_positive, user_negative, item_positive, item_negative = (
            factors.index_select(0, tags) for factors in (self.user_tag_factors, self.item_tag_factors)
            for tags in (positives, negatives))
        user_gap = user_positive - user_negative
        item_gap = item_positive - item_negative
        user_term = (user * user_gap).sum(dim=1)
        # The mapped path trains the content map only: its loss sees the PITF factors as
        # constants, so seen items are scored exactly as by PITF alone.
        bpr = -F.logsigmoid(user_term + (item * item_gap).sum(dim=1)).mean() \
            - F.logsigmoid(user_term.detach() + (mapped * item_gap.detach()).sum(dim=1)).mean()
        used = [user, item, user_positive, user_negative, item_positive, item_negative]
        penalty = sum(f.pow(2).sum() for f in used) / len(users) + self.content_weight.pow(2).sum()
        return bpr + self.config.l2 * penalty

    @torch.no_grad()
    def score(self, users: np.ndarray, posts: PostData) -> np.ndarray:
        users_t = torch.as_tensor(np.asarray(users), device=self.device)
        items = _item_indices(self.graph, posts)
        items_t = torch.as_tensor(items, device=self.device)
        user = torch.where((users_t >= 0)[:, None], self.user_factors[users_t.clamp(min=0)], 0.0)
        content = torch.as_tensor(self.content(posts.features, posts.masks, len(posts)), device=self.device)
        mapped = content @ self.content_weight + self.content_bias
        item = torch.where((items_t >= 0)[:, None], self.item_factors[items_t.clamp(min=0)], mapped)
        scores = user @ self.user_tag_factors.T + item @ self.item_tag_factors.T
        return scores.cpu().numpy()


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
        self.user_shares = _max_normalised(_count_matrix(graph.triples[:, 0], graph.n_users, graph))
        self.tie_breaker = _MIX_TIE_WEIGHT * _tie_breaker(graph)

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
