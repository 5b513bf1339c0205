"""PITF (Rendle & Schmidt-Thieme, WSDM 2010): the baseline, and the default model's factors part."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from phr_cli.data.graph import MODALITIES, Graph, PostData


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
        items = self.graph.item_ids(posts)
        items_t = torch.as_tensor(items, device=self.device)
        user = torch.where((users_t >= 0)[:, None], self.user_factors[users_t.clamp(min=0)], 0.0)
        content = torch.as_tensor(self.content(posts.features, posts.masks, len(posts)), device=self.device)
        mapped = content @ self.content_weight + self.content_bias
        item = torch.where((items_t >= 0)[:, None], self.item_factors[items_t.clamp(min=0)], mapped)
        scores = user @ self.user_tag_factors.T + item @ self.item_tag_factors.T
        return scores.cpu().numpy()
