"""The training graph as the network reads it: triples, attention groups, each side's edges.

Messages flow along the training triples (user i tagged item k with hashtag j); the
attention softmax runs over the groups V_{i,j} (triples sharing a user and a hashtag). A
side's edges are the whole graph's, or a batch's receptive field (`GraphTensors.edges` with
targets); with sparse aggregation each side carries its fixed structures (`SideAggregation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from phr_cli.data.graph import Graph
from phr_cli.model.aggregate import SparsePattern
from phr_cli.model.items import ItemEncoder

# A batch's receptive field projects the features of its items only, gathered first; when
# it reads more than this fraction of the graph's items, projecting all of them is cheaper.
DENSE_ITEM_FRACTION = 0.75


# With sparse aggregation, a batch whose receptive field holds more than this fraction of
# the user-hashtag pairs runs the whole graph (its fixed structure precomputed) instead of
# cutting out the field (on Last.fm a batch of 4,096 reads ~98 % of the triples).
DENSE_PAIR_FRACTION = 0.5


@dataclass
class SideEdges:
    """The edges one side of a layer reads to update its targets (users, or hashtags).

    Each training triple (user i, hashtag j, item k) carries item k's message to the
    triple's target, weighted by attention within its group V_{i,j} and guided by the
    triple's other node; each pair (i, j) carries the neighbour message of Eq. 1-2.
    Targets and items are numbered locally (positions in `targets` and `items`; global ids
    where those are None), so the whole graph and a batch's receptive field run through
    the same code.
    """

    n_targets: int
    targets: Tensor | None  # (n_targets,) global ids of the targets, in output order; None: all, in order
    items: Tensor | None  # global ids of the items whose projections the side reads; None: all, in order
    triple_target: Tensor  # (T,) local target of each triple
    triple_guide: Tensor  # (T,) global id of its other node (the hashtag for users, the user for hashtags)
    triple_item: Tensor  # (T,) local item
    triple_group: Tensor  # (T,) local index of its group V_{i,j}, i.e. of its pair
    group_size: Tensor  # (G,) triples per group
    pair_target: Tensor  # (G,) local target of each pair (i, j)
    pair_neighbour: Tensor  # (G,) global id of the pair's other node
    degree: Tensor  # (n_targets,) pairs per target
    aggregation: SideAggregation | None = None  # the sparse structures, when asked for

    def select(self, table: Tensor) -> Tensor:
        """The targets' rows of a table over all nodes of the targets' type."""
        return table if self.targets is None else table[self.targets]


@dataclass(frozen=True)
class SideAggregation:
    """A side's fixed structures for sparse aggregation (NetworkConfig.aggregation "sparse")."""

    neighbours: SparsePattern  # targets x neighbour nodes: one entry per pair (i, j)
    items: SparsePattern  # targets x local items: one entry per distinct (target, item) of the triples
    # An attention score depends on the triple's guide and item only: scored once per
    # distinct (guide, item), e.g. once per post on the hashtag side.
    attention_guide: Tensor  # (P,) global id of the guide of each distinct (guide, item)
    attention_item: Tensor  # (P,) its local item
    triple_attention: Tensor  # (T,) the (guide, item) of each triple
    groups_sorted: bool  # triples in group order (the graph's are): the softmax's segment fast path

    @classmethod
    def build(cls, edges: SideEdges, n_neighbours: int, n_items: int) -> SideAggregation:
        scored, triple_attention = torch.unique(edges.triple_guide * n_items + edges.triple_item,
                                                return_inverse=True)
        return cls(
            neighbours=SparsePattern.build(edges.pair_target, edges.pair_neighbour, edges.n_targets, n_neighbours),
            items=SparsePattern.build(edges.triple_target, edges.triple_item, edges.n_targets, n_items),
            attention_guide=scored // n_items,
            attention_item=scored % n_items,
            triple_attention=triple_attention,
            groups_sorted=bool((edges.triple_group[1:] >= edges.triple_group[:-1]).all()),
        )


def distinct(ids: Tensor, n: int) -> Tensor:
    """The sorted distinct values of `ids` (all in [0, n)), in O(n) without a sort."""
    present = torch.zeros(n, dtype=torch.bool, device=ids.device)
    present[ids.reshape(-1)] = True
    return present.nonzero().squeeze(1)


class GraphTensors(nn.Module):
    """The training graph as tensors that follow the model across devices.

    Buffers are non-persistent: a checkpoint keeps the propagated representations, not the
    graph. Triples are sorted by (user, hashtag, item), so `group` numbers the pairs (i, j),
    i.e. the attention groups V_{i,j}, and `pair_user`/`pair_hashtag` are those pairs.
    """

    triple_user: Tensor
    triple_hashtag: Tensor
    triple_item: Tensor
    group: Tensor
    group_size: Tensor
    pair_user: Tensor
    pair_hashtag: Tensor
    user_degree: Tensor
    hashtag_degree: Tensor
    items: Tensor  # (n_items, D) standardised features, zeros where a modality is missing
    item_masks: Tensor  # (n_items, M) bool

    def __init__(self, graph: Graph, encoder: ItemEncoder) -> None:
        super().__init__()
        triples = np.asarray(graph.triples, dtype=np.int64).reshape(-1, 3)
        pairs, group = np.unique(triples[:, :2], axis=0, return_inverse=True)
        group = group.reshape(-1)
        tensors = {
            "triple_user": triples[:, 0],
            "triple_hashtag": triples[:, 1],
            "triple_item": triples[:, 2],
            "group": group,
            "group_size": np.bincount(group, minlength=len(pairs)),
            "pair_user": pairs[:, 0],
            "pair_hashtag": pairs[:, 1],
            "user_degree": np.bincount(pairs[:, 0], minlength=graph.n_users),
            "hashtag_degree": np.bincount(pairs[:, 1], minlength=graph.n_hashtags),
        }
        for name, values in tensors.items():
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(values)), persistent=False)
        self.n_users, self.n_hashtags, self.n_groups = graph.n_users, graph.n_hashtags, len(pairs)
        self.n_items = graph.n_items

        # Standardised item features with zeros where a modality is missing; the learned
        # missing vectors are added at use time so their gradients flow.
        device = next(encoder.buffers()).device
        masks = torch.stack(
            [torch.as_tensor(graph.item_masks[m], dtype=torch.bool, device=device) for m in encoder.widths], dim=1
        )
        blocks = []
        for m, modality in enumerate(encoder.widths):
            standardised = encoder.standardise(modality, torch.as_tensor(graph.item_features[modality], device=device))
            blocks.append(torch.where(masks[:, m, None], standardised, torch.zeros_like(standardised)))
        self.register_buffer("items", torch.cat(blocks, dim=1), persistent=False)
        self.register_buffer("item_masks", masks, persistent=False)
        # Modalities no training item has (visual and acoustic of text-only data) are all
        # zeros here: projecting them is wasted work.
        self.modality_present = [bool(masks[:, m].any()) for m in range(masks.shape[1])]
        # The whole graph's sparse structures, built on first use, per side and device.
        self._full_aggregations: dict[tuple[str, torch.device], SideAggregation] = {}

    def triples(self) -> Tensor:
        """(T, 3) user, hashtag, item of every training triple."""
        return torch.stack([self.triple_user, self.triple_hashtag, self.triple_item], dim=1)

    def _side_columns(self, side: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, int]:
        """Triple target, triple guide, pair target, pair neighbour, degree and node count of a side."""
        if side == "user":
            return (self.triple_user, self.triple_hashtag, self.pair_user, self.pair_hashtag,
                    self.user_degree, self.n_users)
        if side == "hashtag":
            return (self.triple_hashtag, self.triple_user, self.pair_hashtag, self.pair_user,
                    self.hashtag_degree, self.n_hashtags)
        raise ValueError(f"unknown side {side!r}: use 'user' or 'hashtag'")

    def edges(self, side: str, targets: Tensor | None = None, sparse: bool = False) -> SideEdges:
        """The edges that update `targets` (sorted distinct global ids; None: every node) on a side;
        with `sparse`, with their `SideAggregation` (the whole graph's is built once)."""
        n_neighbours = self.n_hashtags if side == "user" else self.n_users
        if targets is None or len(targets) == self._side_columns(side)[-1]:
            edges = self._edges(side, None)
            if sparse:
                key = (side, self.triple_item.device)
                if key not in self._full_aggregations:
                    self._full_aggregations[key] = SideAggregation.build(edges, n_neighbours, self.n_items)
                edges.aggregation = self._full_aggregations[key]
            return edges
        edges = self._edges(side, targets)
        if sparse:
            n_items = self.n_items if edges.items is None else len(edges.items)
            edges.aggregation = SideAggregation.build(edges, n_neighbours, n_items)
        return edges

    def _edges(self, side: str, targets: Tensor | None) -> SideEdges:
        triple_target, triple_guide, pair_target, pair_neighbour, degree, n_nodes = self._side_columns(side)
        if targets is None:
            return SideEdges(n_nodes, None, None, triple_target, triple_guide, self.triple_item, self.group,
                             self.group_size, pair_target, pair_neighbour, degree)
        local_target = torch.full((n_nodes,), -1, dtype=torch.long, device=targets.device)
        local_target[targets] = torch.arange(len(targets), device=targets.device)
        # A group shares its user and its hashtag, so keeping whole pairs keeps whole groups.
        kept_pair = local_target[pair_target] >= 0
        pairs = kept_pair.nonzero().squeeze(1)
        triples = kept_pair[self.group].nonzero().squeeze(1)
        local_group = torch.full((self.n_groups,), -1, dtype=torch.long, device=targets.device)
        local_group[pairs] = torch.arange(len(pairs), device=targets.device)
        item_ids = self.triple_item[triples]
        read = distinct(item_ids, self.n_items)
        items: Tensor | None = read
        if len(read) > DENSE_ITEM_FRACTION * self.n_items:  # gathering their features would cost more
            items, triple_item = None, item_ids
        else:
            local_item = torch.full((self.n_items,), -1, dtype=torch.long, device=targets.device)
            local_item[read] = torch.arange(len(read), device=targets.device)
            triple_item = local_item[item_ids]
        return SideEdges(
            n_targets=len(targets),
            targets=targets,
            items=items,
            triple_target=local_target[triple_target[triples]],
            triple_guide=triple_guide[triples],
            triple_item=triple_item,
            triple_group=local_group[self.group[triples]],
            group_size=self.group_size[pairs],
            pair_target=local_target[pair_target[pairs]],
            pair_neighbour=pair_neighbour[pairs],
            degree=degree[targets],
        )


class LayerEdges(NamedTuple):
    """What one layer reads to update its user targets and its hashtag targets."""

    users: SideEdges
    hashtags: SideEdges
