"""GCN-PHR (Wei et al., ACM MM 2019, §3): graph-propagated user and hashtag representations
and the user-specific scorer of Eq. 9-10.

Messages flow along the training triples (user i tagged item k with hashtag j); the
attention softmax runs over the groups V_{i,j} (triples sharing a user and a hashtag),
PyTorch Geometric's `softmax(src, index)` pattern. Each side's sums are sparse products
over a structure fixed once per graph, with the attention as the entry weights
(phr_cli/aggregate.py); gather -> per-edge message -> `index_add_` stays as the reference
(ModelConfig.aggregation "index_add"). A training step runs the same code over its batch's
receptive field only (`propagate_for`): the nodes, triples and items its loss reads, a
small part of a YFCC100M-size graph (on a small graph, where the field is most of it, the
whole graph with its precomputed structure).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from phr_cli.data.graph import MODALITIES, Graph
from phr_cli.errors import ConfigError
from phr_cli.model.aggregate import SparsePattern
from phr_cli.model.evidence import TagEvidence
from phr_cli.model.factors import FACTORS, TagFactors
from phr_cli.model.neighbours import ContentIndex, content_vectors

FUSIONS = ("concat", "sum")
AGGREGATIONS = ("sparse", "index_add")
MODALITY_CHOICES = ("present", "all")
VARIANTS = ("full", "no_attention", "no_user_guidance", "no_hashtag_guidance")
# Rows x hashtags x dim elements scored at once by `score_all`, in one reused buffer: on a
# CPU a cache-sized block (4 MiB of float32; a fresh 64 MiB block per chunk spent most of
# the time in page faults), on a GPU a large one (64 MiB), few kernel launches.
SCORE_CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 24}
# A batch's receptive field projects the features of its items only, gathered first; when
# it reads more than this fraction of the graph's items, projecting all of them is cheaper.
DENSE_ITEM_FRACTION = 0.75
# With sparse aggregation, a batch whose receptive field holds more than this fraction of
# the user-hashtag pairs runs the whole graph (its fixed structure precomputed) instead of
# cutting out the field (on Last.fm a batch of 4,096 reads ~98 % of the triples).
DENSE_PAIR_FRACTION = 0.5


@dataclass
class ModelConfig:
    dim: int = 64
    layers: int = 1
    fusion: str = "concat"  # "concat": Eq. 7; "sum": Eq. 8
    # "no_attention": Variant-I; "no_user_guidance": Variant-II (video->hashtag attention
    # ignores the user); "no_hashtag_guidance": Variant-III (video->user ignores the hashtag)
    variant: str = "full"
    propagate: bool = True  # False: content-only, the scorer on ID embeddings alone
    negative_slope: float = 0.2  # of the leaky ReLU φ (0.01 left many units dead in our tests)
    init_std: float = 0.1  # Gaussian init of ID embeddings and missing-modality vectors
    dropout: float = 0.0  # on each layer's fused outputs, training only
    # Add each node's input embedding to its fused messages (a self-loop). The paper's
    # layer (residual=False) replaces a hashtag's own embedding by its neighbours' messages,
    # so a hashtag with one user ends up with that user's vector.
    residual: bool = True
    # "sum": Eq. 6 as printed, so a user's video message grows with their number of
    # (hashtag, videos) groups; "mean": divided by that number (a degree normalisation).
    video_messages: str = "mean"
    # "sparse": each side's sums as sparse products over a structure fixed once per graph
    # (phr_cli/aggregate.py); "index_add": gather per edge and `index_add_` (the reference).
    aggregation: str = "sparse"
    # "present": parameters only for the modalities some training item has (text-only data
    # gets no visual or acoustic columns); "all": every modality of the store.
    modalities: str = "present"
    # The default model's additions to the paper's scorer (`paper()` turns them off):
    # the learned count prior of `evidence.TagEvidence` (what the user, the item and the
    # content neighbours' posts say, which the paper's equations cannot count) ...
    evidence: bool = True
    neighbours: int = 20  # content neighbours of its similar-items term
    recency: bool = True  # its "recent use" term: the user's past hashtags weighed by recency
    similar_posts: bool = True  # its "similar own posts" term: the user's hashtags on items tagged alike
    # ... and an ID embedding for each item seen in training, added to W^v v_k, so that
    # what others tagged the same item shapes its vector. For this share of training posts
    # the item's ID and its history are dropped: they are scored as a new video is. None:
    # the share of validation posts whose item is new to training, i.e. as often as the
    # held-out posts (which stand for the deployment) bring new content.
    item_ids: bool = True
    item_id_dropout: float | None = None
    # ... and, with the evidence, PITF's factors as one more score part, fitted once the
    # model is trained (`factors.TagFactors`): the latent tastes the model's own parts,
    # stopped early with the evidence, learn far less of.
    factors: bool = True
    # ... and, with the evidence, a second stage that re-ranks each post's leading hashtags
    # by gradient-boosted trees fitted on the validation posts (`rerank.Reranker`).
    rerank: bool = True

    @classmethod
    def paper(cls, **changes: object) -> ModelConfig:
        """GCN-PHR exactly as the paper's equations: no self-loop, no evidence, no item IDs."""
        return cls(**{"residual": False, "evidence": False, "item_ids": False, "factors": False,  # type: ignore[arg-type]
                      "rerank": False, **changes})

    @property
    def form(self) -> str:
        """'paper' when the configuration is the paper's equations, else 'phr'."""
        return "paper" if not (self.residual or self.evidence or self.item_ids) else "phr"

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {self.fusion!r}: use one of {FUSIONS}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown variant {self.variant!r}: use one of {VARIANTS}")
        if self.video_messages not in ("sum", "mean"):
            raise ConfigError(f"unknown video_messages {self.video_messages!r}: use 'sum' or 'mean'")
        if self.item_id_dropout is not None and not 0.0 <= self.item_id_dropout <= 1.0:
            raise ConfigError(f"item_id_dropout must lie in [0, 1], got {self.item_id_dropout}")
        if self.neighbours < 1:
            raise ConfigError(f"neighbours must be positive, got {self.neighbours}")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"unknown aggregation {self.aggregation!r}: use one of {AGGREGATIONS}")
        if self.modalities not in MODALITY_CHOICES:
            raise ConfigError(f"unknown modalities {self.modalities!r}: use one of {MODALITY_CHOICES}")
        if self.dim < 1 or self.layers < 1:
            raise ConfigError("dim and layers must be positive")


def grouped_softmax(scores: Tensor, groups: Tensor, n_groups: int, sizes: Tensor | None = None) -> Tensor:
    """Softmax of `scores` within each group: the entries sharing a group id sum to 1.

    `sizes` (n_groups,), entries per group, says the entries are sorted by group (PyG's CSR
    fast path): segment reductions then replace the scatters.
    """
    if sizes is None:
        group_max = scores.new_full((n_groups,), float("-inf"))
        group_max = group_max.scatter_reduce(0, groups, scores.detach(), "amax")
    else:
        group_max = torch.segment_reduce(scores.detach(), "max", lengths=sizes)
    # index_select, not [ ]: its backward is an index_add, much faster than index_put on a CPU
    exp = (scores - group_max.index_select(0, groups)).exp()
    if sizes is None:
        group_sum = exp.new_zeros(n_groups).index_add(0, groups, exp)
    else:
        group_sum = torch.segment_reduce(exp, "sum", lengths=sizes)
    return exp / group_sum.index_select(0, groups)


def bpr_loss(positive: Tensor, negative: Tensor) -> Tensor:
    """Eq. 11's ranking term, -mean log σ(pos − neg); `positive` (B,) against `negative` (B,) or (B, n)."""
    if negative.dim() == positive.dim() + 1:
        positive = positive.unsqueeze(-1)
    return -F.logsigmoid(positive - negative).mean()


class ItemEncoder(nn.Module):
    """The video vector v_k: per-modality standardised features, concatenated.

    A missing modality (mask False) becomes a learned per-modality vector, so "no audio"
    is something the model can learn about instead of a silent zero. The mean and std
    (fitted on training items where the modality is present) are buffers, hence saved.
    """

    def __init__(self, widths: dict[str, int], init_std: float) -> None:
        super().__init__()
        self.widths = dict(widths)
        for modality, width in self.widths.items():
            self.register_buffer(f"mean_{modality}", torch.zeros(width))
            self.register_buffer(f"std_{modality}", torch.ones(width))
        self.missing = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(w) * init_std) for m, w in self.widths.items()}
        )

    @property
    def width(self) -> int:
        return sum(self.widths.values())

    def blocks(self) -> list[tuple[str, int, int]]:
        """(modality, start, stop) of each modality's columns in v_k."""
        spans, start = [], 0
        for modality, width in self.widths.items():
            spans.append((modality, start, start + width))
            start += width
        return spans

    def fit(self, features: dict[str, Tensor], masks: dict[str, Tensor]) -> None:
        for modality in self.widths:
            present = features[modality][masks[modality]].float()
            if len(present) == 0:
                continue  # keep mean 0, std 1
            std = present.std(dim=0, unbiased=False)
            getattr(self, f"mean_{modality}").copy_(present.mean(dim=0))
            getattr(self, f"std_{modality}").copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def standardise(self, modality: str, values: Tensor) -> Tensor:
        mean, std = getattr(self, f"mean_{modality}"), getattr(self, f"std_{modality}")
        return (values.to(mean) - mean) / std

    def fill_missing(self, vectors: Tensor, masks: Tensor) -> Tensor:
        """Standardised (B, D) vectors with the learned vector in each block whose mask (B, M) is False."""
        columns = [
            torch.where(masks[:, m, None], vectors[:, start:stop], self.missing[modality])
            for m, (modality, start, stop) in enumerate(self.blocks())
        ]
        return torch.cat(columns, dim=1)

    def standardised(self, features: dict[str, Tensor], masks: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Standardised (B, D) vectors, missing blocks not yet filled, and the (B, M) masks."""
        vectors = torch.cat([self.standardise(m, torch.as_tensor(features[m])) for m in self.widths], dim=1)
        mask_matrix = torch.stack([torch.as_tensor(masks[m]).to(vectors.device, torch.bool) for m in self.widths],
                                  dim=1)
        return vectors, mask_matrix

    def forward(self, features: dict[str, Tensor], masks: dict[str, Tensor]) -> Tensor:
        return self.fill_missing(*self.standardised(features, masks))


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
    """A side's fixed structures for sparse aggregation (ModelConfig.aggregation "sparse")."""

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
            values = encoder.standardise(modality, torch.as_tensor(graph.item_features[modality], device=device))
            blocks.append(torch.where(masks[:, m, None], values, torch.zeros_like(values)))
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
        items: Tensor | None = distinct(item_ids, self.n_items)
        if len(items) > DENSE_ITEM_FRACTION * self.n_items:  # gathering their features would cost more
            items, triple_item = None, item_ids
        else:
            local_item = torch.full((self.n_items,), -1, dtype=torch.long, device=targets.device)
            local_item[items] = torch.arange(len(items), device=targets.device)
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


class LayerMessages(NamedTuple):
    """One layer's intermediate results, before fusion (exposed for inspection and tests)."""

    user_from_hashtags: Tensor  # u_i^h (n_users, d), Eq. 1-2 (rows: the user targets)
    user_from_items: Tensor  # u_i^v (n_users, d), Eq. 3-6
    hashtag_from_users: Tensor  # h_j^u (n_hashtags, d) (rows: the hashtag targets)
    hashtag_from_items: Tensor  # h_j^v (n_hashtags, d)
    user_side_attention: Tensor  # α per triple (T,), softmax over V_{i,j}, hashtag-guided
    hashtag_side_attention: Tensor  # α' per triple (T,), softmax over V_{i,j}, user-guided


class GuidedAttention(nn.Module):
    """The attention score g(guide, W v_k): one hidden leaky-ReLU layer, then a scalar.

    A purely linear g would add a guide term that is constant inside each softmax group
    V_{i,j}, so it would cancel and the guidance (the paper's point) would do nothing;
    the hidden nonlinearity lets the guide reweigh the group's videos. Unguided (the
    ablations Variant-II/III), the score depends on the video alone.
    """

    def __init__(self, dim: int, guided: bool, negative_slope: float) -> None:
        super().__init__()
        self.guide = nn.Linear(dim, dim, bias=False) if guided else None
        self.key = nn.Linear(dim, dim)
        self.score = nn.Linear(dim, 1, bias=False)
        self.negative_slope = negative_slope

    def forward(self, guides: Tensor, keys: Tensor, guide_index: Tensor, item_index: Tensor) -> Tensor:
        # index_select, not [ ]: its backward is an index_add, much faster than index_put on a CPU
        hidden = self.key(keys).index_select(0, item_index)
        if self.guide is not None:
            hidden = hidden + self.guide(guides).index_select(0, guide_index)
        return self.score(F.leaky_relu(hidden, self.negative_slope)).squeeze(-1)


class Fusion(nn.Module):
    """Eq. 7 (concat: φ(W[a ; b] + bias)) or Eq. 8 (sum: W_a a + W_b b)."""

    def __init__(self, dim: int, mode: str, negative_slope: float) -> None:
        super().__init__()
        self.mode = mode
        self.negative_slope = negative_slope
        if mode == "concat":
            self.combine = nn.Linear(2 * dim, dim)
        else:
            self.from_items = nn.Linear(dim, dim, bias=False)
            self.from_neighbours = nn.Linear(dim, dim, bias=False)

    def forward(self, from_items: Tensor, from_neighbours: Tensor) -> Tensor:
        if self.mode == "concat":
            return F.leaky_relu(self.combine(torch.cat([from_items, from_neighbours], dim=1)), self.negative_slope)
        return self.from_items(from_items) + self.from_neighbours(from_neighbours)


class PropagationLayer(nn.Module):
    """One round of §3.2: users from hashtags and attended videos, hashtags from users and videos.

    Both sides read the layer's input representations (a synchronous update).
    """

    def __init__(self, dim: int, item_width: int, config: ModelConfig) -> None:
        super().__init__()
        self.dim = dim
        self.negative_slope = config.negative_slope
        self.dropout = config.dropout
        self.residual = config.residual
        self.mean_video_messages = config.video_messages == "mean"
        # Four projections of v_k in one matrix: keys of the hashtag-guided attention (W_v^h),
        # video->user messages (W_v^u), keys of the user-guided attention, video->hashtag messages.
        self.item_projection = nn.Linear(item_width, 4 * dim, bias=False)
        self.hashtag_to_user = nn.Linear(dim, dim, bias=False)  # W_h^u
        self.user_to_hashtag = nn.Linear(dim, dim, bias=False)  # W_u^h
        attend = config.variant != "no_attention"
        self.user_side_attention = (
            GuidedAttention(dim, config.variant != "no_hashtag_guidance", config.negative_slope) if attend else None
        )
        self.hashtag_side_attention = (
            GuidedAttention(dim, config.variant != "no_user_guidance", config.negative_slope) if attend else None
        )
        self.user_fusion = Fusion(dim, config.fusion, config.negative_slope)
        self.hashtag_fusion = Fusion(dim, config.fusion, config.negative_slope)

    def _phi(self, values: Tensor) -> Tensor:
        return F.leaky_relu(values, self.negative_slope)

    def item_weights(self) -> tuple[Tensor, Tensor]:
        """The rows of `item_projection` each side reads: (keys, values) of users, then of hashtags."""
        weight = self.item_projection.weight
        return weight[: 2 * self.dim], weight[2 * self.dim :]

    def _side(
        self, attention: GuidedAttention | None, to_target: nn.Linear, neighbours: Tensor, item_projections: Tensor,
        edges: SideEdges,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One side's pre-activation messages: from neighbours (Eq. 1-2), from items (Eq. 3-6), and α."""
        keys, values = item_projections.split(self.dim, dim=1)
        if edges.aggregation is not None:
            return self._sparse_side(attention, to_target, neighbours, keys, values, edges, edges.aggregation)
        # Eq. 1-2 and their mirror: mean over the distinct user-hashtag pairs.
        degree = edges.degree.clamp(min=1).unsqueeze(1)
        from_neighbours = neighbours.new_zeros(edges.n_targets, self.dim).index_add_(
            0, edges.pair_target, to_target(neighbours)[edges.pair_neighbour]
        ) / degree
        # Eq. 3-6: Σ_k Σ_{j∈H_{i,k}} α_ijk W v_k is a sum over the target's triples; the
        # neighbours guide the attention (hashtags for users, users for hashtags).
        if attention is None:  # Variant-I: every video of V_{i,j} weighs the same
            alpha = 1.0 / edges.group_size[edges.triple_group].to(keys.dtype)
        else:
            scores = attention(neighbours, keys, edges.triple_guide, edges.triple_item)
            alpha = grouped_softmax(scores, edges.triple_group, len(edges.group_size))
        from_items = neighbours.new_zeros(edges.n_targets, self.dim).index_add_(
            0, edges.triple_target, alpha.unsqueeze(1) * values[edges.triple_item]
        )
        if self.mean_video_messages:  # α sums to 1 per group: divide by the node's group count
            from_items = from_items / degree
        return from_neighbours, from_items, alpha

    def _sparse_side(
        self, attention: GuidedAttention | None, to_target: nn.Linear, neighbours: Tensor, keys: Tensor,
        values: Tensor, edges: SideEdges, aggregation: SideAggregation,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """`_side`'s maths as sparse products: the means' 1/degree and α are entry weights."""
        inverse_degree = 1.0 / edges.degree.clamp(min=1).to(neighbours.dtype)
        pattern = aggregation.neighbours
        from_neighbours = pattern.matmul(pattern.entry_weights(inverse_degree[edges.pair_target]),
                                         to_target(neighbours))
        if attention is None:  # Variant-I: every video of V_{i,j} weighs the same
            alpha = 1.0 / edges.group_size[edges.triple_group].to(keys.dtype)
        else:
            scores = attention(neighbours, keys, aggregation.attention_guide, aggregation.attention_item)
            alpha = grouped_softmax(scores.index_select(0, aggregation.triple_attention), edges.triple_group,
                                    len(edges.group_size), edges.group_size if aggregation.groups_sorted else None)
        weights = alpha * inverse_degree[edges.triple_target] if self.mean_video_messages else alpha
        from_items = aggregation.items.matmul(aggregation.items.entry_weights(weights), values)
        return from_neighbours, from_items, alpha

    def messages(
        self, users: Tensor, hashtags: Tensor, user_side_items: Tensor, hashtag_side_items: Tensor, edges: LayerEdges
    ) -> LayerMessages:
        """Messages to `edges`' targets. `users` and `hashtags` are tables over all nodes (only
        the rows the edges read matter); `*_side_items` are each side's `item_weights`
        applied to the v_k of its `edges.*.items`."""
        from_hashtags, user_items, user_alpha = self._side(
            self.user_side_attention, self.hashtag_to_user, hashtags, user_side_items, edges.users
        )
        from_users, hashtag_items, hashtag_alpha = self._side(
            self.hashtag_side_attention, self.user_to_hashtag, users, hashtag_side_items, edges.hashtags
        )
        return LayerMessages(
            user_from_hashtags=self._phi(from_hashtags),
            user_from_items=self._phi(user_items),
            hashtag_from_users=self._phi(from_users),
            hashtag_from_items=self._phi(hashtag_items),
            user_side_attention=user_alpha,
            hashtag_side_attention=hashtag_alpha,
        )

    def forward(
        self, users: Tensor, hashtags: Tensor, user_side_items: Tensor, hashtag_side_items: Tensor, edges: LayerEdges
    ) -> tuple[Tensor, Tensor]:
        """New representations of `edges.users.targets` and `edges.hashtags.targets` (see `messages`)."""
        parts = self.messages(users, hashtags, user_side_items, hashtag_side_items, edges)
        new_users = self.user_fusion(parts.user_from_items, parts.user_from_hashtags)
        new_hashtags = self.hashtag_fusion(parts.hashtag_from_items, parts.hashtag_from_users)
        if self.residual:  # a self-loop: each node keeps its own embedding beside its messages
            new_users = new_users + edges.users.select(users)
            new_hashtags = new_hashtags + edges.hashtags.select(hashtags)
        return (
            F.dropout(new_users, self.dropout, self.training),
            F.dropout(new_hashtags, self.dropout, self.training),
        )


class PersonalisedScorer(nn.Module):
    """Eq. 9-10: v̄_k^i = φ(W^v v_k + W_u^v u_i + b^v), h̄_j^i = φ(W^h h_j + W_u^h u_i + b^h),
    score = (h̄_j^i)ᵀ v̄_k^i."""

    def __init__(self, dim: int, item_width: int, negative_slope: float) -> None:
        super().__init__()
        self.item = nn.Linear(item_width, dim)  # W^v, b^v
        self.user_for_item = nn.Linear(dim, dim, bias=False)  # W_u^v
        self.hashtag = nn.Linear(dim, dim)  # W^h, b^h
        self.user_for_hashtag = nn.Linear(dim, dim, bias=False)  # W_u^h
        self.negative_slope = negative_slope

    def user_specific_items(self, user_rows: Tensor, item_vectors: Tensor,
                            item_offsets: Tensor | None = None) -> Tensor:
        """v̄_k^i (B, d); item_offsets (B, d), if given, are added to W^v v_k + b^v (item IDs)."""
        projected = self.item(item_vectors)
        if item_offsets is not None:
            projected = projected + item_offsets
        return F.leaky_relu(projected + self.user_for_item(user_rows), self.negative_slope)

    def score_triples(self, user_rows: Tensor, item_vectors: Tensor, hashtag_rows: Tensor) -> Tensor:
        return self.score_projected_triples(user_rows, self.item(item_vectors), hashtag_rows)

    def score_projected_triples(self, user_rows: Tensor, projected_items: Tensor, hashtag_rows: Tensor) -> Tensor:
        """`score_triples` given W^v v_k + b^v (B, d) instead of v_k."""
        items = F.leaky_relu(projected_items + self.user_for_item(user_rows), self.negative_slope)  # (B, d)
        hashtags = F.leaky_relu(
            self.hashtag(hashtag_rows) + self.user_for_hashtag(user_rows).unsqueeze(1), self.negative_slope
        )  # (B, n, d)
        return torch.einsum("bnd,bd->bn", hashtags, items)

    @torch.no_grad()
    def score_all(self, user_rows: Tensor, item_vectors: Tensor, hashtag_reps: Tensor,
                  item_offsets: Tensor | None = None) -> Tensor:
        """Scores (B, H) of every hashtag, for ranking (no gradient)."""
        items = self.user_specific_items(user_rows, item_vectors, item_offsets)  # (B, d)
        hashtag_part = self.hashtag(hashtag_reps)  # W^h h_j + b^h once: (H, d)
        user_part = self.user_for_hashtag(user_rows)  # W_u^h u_i once: (B, d)
        n_hashtags, dim = hashtag_part.shape
        budget = SCORE_CHUNK_ELEMENTS.get(items.device.type, SCORE_CHUNK_ELEMENTS["cuda"])
        chunk = max(1, budget // max(1, n_hashtags * dim))
        scores = items.new_empty(len(items), n_hashtags)
        buffer = items.new_empty(min(chunk, len(items)), n_hashtags, dim)
        for start in range(0, len(items), chunk):  # h̄ depends on (i, j): only a chunk is materialised
            rows = slice(start, start + chunk)
            hashtags = buffer[: len(items[rows])]
            torch.add(hashtag_part.unsqueeze(0), user_part[rows].unsqueeze(1), out=hashtags)
            F.leaky_relu_(hashtags, self.negative_slope)  # h̄_j^i of the chunk: (chunk, H, d)
            scores[rows] = torch.bmm(hashtags, items[rows].unsqueeze(2)).squeeze(2)
        return scores


def _scatter_rows(rows: Tensor, edges: SideEdges, n_nodes: int) -> Tensor:
    """A table over all n_nodes holding `rows` at `edges.targets` and zeros elsewhere."""
    if edges.targets is None:
        return rows
    return rows.new_zeros(n_nodes, rows.shape[1]).index_copy(0, edges.targets, rows)


def _rows(table: Tensor, index: Tensor) -> Tensor:
    """`table[index]` for an index tensor of any shape, by index_select (whose backward, an
    index_add, is much faster on a CPU than advanced indexing's index_put)."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[1])


def ordered_modalities(widths: dict[str, int]) -> dict[str, int]:
    """Modalities in the canonical order (visual, acoustic, textual), any others after, by name."""
    known = [m for m in MODALITIES if m in widths]
    return {m: widths[m] for m in known + sorted(set(widths) - set(known))}


class GCNPHR(nn.Module):
    """GCN-PHR. Build for training with `from_graph`; rebuilt from a checkpoint, the model holds
    no graph and serves the saved representations (see `propagate`)."""

    part_scales: Tensor

    def __init__(self, config: ModelConfig, n_users: int, n_hashtags: int, modality_widths: dict[str, int],
                 n_items: int = 0) -> None:
        super().__init__()
        self.config = config
        self.item_encoder = ItemEncoder(ordered_modalities(modality_widths), config.init_std)
        self.user_embedding = nn.Embedding(n_users, config.dim)
        self.hashtag_embedding = nn.Embedding(n_hashtags, config.dim)
        item_width = self.item_encoder.width
        self.layers = nn.ModuleList(
            [PropagationLayer(config.dim, item_width, config) for _ in range(config.layers)] if config.propagate else []
        )
        self.scorer = PersonalisedScorer(config.dim, item_width, config.negative_slope)
        self.graph: GraphTensors | None = None
        self._saved_representations: tuple[Tensor, Tensor] | None = None
        self.item_embedding = nn.Embedding(n_items, config.dim) if config.item_ids else None
        # Sized when fitted (`from_graph`) or loaded from a checkpoint's state dict.
        # With evidence, the graph score enters through a learned gate that starts at 0: the
        # model starts as the count prior (a strong ranking), not as that prior plus the noise
        # of an untrained graph score, and lets the graph in as far as it helps (ReZero).
        self.graph_gate = nn.Parameter(torch.zeros(())) if config.evidence else None
        self.evidence = (TagEvidence(n_users, n_items, n_hashtags, 0, 0, 0, ContentIndex(item_width, 0, n_hashtags, 0),
                                     config.neighbours, config.recency, config.similar_posts)
                         if config.evidence else None)
        self.factors = (TagFactors(n_users, n_items, n_hashtags, self.item_encoder.widths)
                        if config.evidence and config.factors else None)
        # One scale per score part (`score_parts`), fitted on validation after training
        # (`calibration.calibrate`); the trained model's until then.
        self.register_buffer("part_scales", self.trained_part_scales())
        self._reset_parameters()

    def trained_part_scales(self) -> Tensor:
        """The part scales of the model as trained, before calibration: ones, and 0 for PITF's
        factors, which enter only at the scale calibration finds for them on validation."""
        n_terms = len(self.evidence.active_terms) if self.evidence is not None else 0
        return torch.tensor([1.0] * (1 + n_terms) + [0.0] * (self.factors is not None),
                            device=self.user_embedding.weight.device)

    def _reset_parameters(self) -> None:
        nn.init.normal_(self.user_embedding.weight, std=self.config.init_std)
        nn.init.normal_(self.hashtag_embedding.weight, std=self.config.init_std)
        if self.item_embedding is not None:
            nn.init.normal_(self.item_embedding.weight, std=self.config.init_std)
        for module in self.modules():
            if isinstance(module, nn.Linear):  # Xavier: v_k is 2,276 wide, a fixed std would blow up
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @classmethod
    def from_graph(cls, config: ModelConfig, graph: Graph) -> GCNPHR:
        widths = {m: int(np.asarray(f).shape[1]) for m, f in graph.item_features.items()}
        present = {m: w for m, w in widths.items() if np.asarray(graph.item_masks[m]).any()}
        # The model's widths record the modalities it uses: a new clip's others are ignored.
        model = cls(config, graph.n_users, graph.n_hashtags, present if config.modalities == "present" and present
                    else widths, graph.n_items)
        model.item_encoder.fit(
            {m: torch.as_tensor(graph.item_features[m]) for m in model.item_encoder.widths},
            {m: torch.as_tensor(graph.item_masks[m]) for m in model.item_encoder.widths},
        )
        model.attach_graph(graph)
        if config.evidence:
            assert model.graph is not None
            model.evidence = TagEvidence.fit(
                model.graph.triples(), graph.n_users, graph.n_items, graph.n_hashtags,
                model.graph_content_vectors(), config.neighbours,
                None if graph.triple_times is None else torch.as_tensor(graph.triple_times), config.recency,
                config.similar_posts)
        return model

    def attach_graph(self, graph: Graph) -> None:
        """Hold the training graph (on the model's device) for propagation; normalisation must be fitted first."""
        with torch.no_grad():
            self.graph = GraphTensors(graph, self.item_encoder).to(self.user_embedding.weight.device)

    def save_representations(self, user_reps: Tensor, hashtag_reps: Tensor) -> None:
        """Serve these (e.g. a checkpoint's) from `propagate` when no graph is attached."""
        device = self.user_embedding.weight.device
        self._saved_representations = (user_reps.to(device), hashtag_reps.to(device))

    def _project_graph_items(self, weight: Tensor, items: Tensor | None = None) -> Tensor:
        """weight (out, D) applied to the v_k of graph items (global ids; None: all, in order),
        without building their (len(items), D) v_k with the missing vectors filled in."""
        assert self.graph is not None
        # index_select copies whole rows (much faster than advanced indexing on CPU).
        features = self.graph.items if items is None else self.graph.items.index_select(0, items)
        masks = self.graph.item_masks if items is None else self.graph.item_masks.index_select(0, items)
        # One view per modality (a split, so backward assembles one gradient, not one per slice).
        weight_blocks = weight.split(list(self.item_encoder.widths.values()), dim=1)
        # Missing blocks are zero in graph.items; each adds W_m · missing_m instead.
        fills = torch.stack(
            [block @ self.item_encoder.missing[m] for block, m in zip(weight_blocks, self.item_encoder.widths)]
        )  # (M, out)
        projected = (~masks).to(weight.dtype) @ fills
        if all(self.graph.modality_present):
            return projected + features @ weight.T
        for m, (_, start, stop) in enumerate(self.item_encoder.blocks()):
            if self.graph.modality_present[m]:
                projected = projected + features[:, start:stop] @ weight_blocks[m].T
        return projected

    def _project_layer_items(self, layer: PropagationLayer, edges: LayerEdges) -> tuple[Tensor, Tensor]:
        """Each side's items projected by its own rows of the layer's `item_projection` only."""
        user_weight, hashtag_weight = layer.item_weights()
        return (self._project_graph_items(user_weight, edges.users.items),
                self._project_graph_items(hashtag_weight, edges.hashtags.items))

    def _run_layer(self, layer: PropagationLayer, users: Tensor, hashtags: Tensor,
                   edges: LayerEdges) -> tuple[Tensor, Tensor]:
        """The layer's new representations of `edges`' targets."""
        return layer(users, hashtags, *self._project_layer_items(layer, edges), edges)

    def _full_edges(self) -> LayerEdges:
        assert self.graph is not None
        sparse = self.config.aggregation == "sparse"
        return LayerEdges(self.graph.edges("user", sparse=sparse), self.graph.edges("hashtag", sparse=sparse))

    def propagate(self) -> tuple[Tensor, Tensor]:
        """All user reps (n_users, d) and hashtag reps (n_hashtags, d).

        With a graph attached, computed through the layers (differentiable); content-only,
        the ID embeddings; otherwise the representations saved with the checkpoint.
        """
        users, hashtags = self.user_embedding.weight, self.hashtag_embedding.weight
        if not self.layers:
            return users, hashtags
        if self.graph is None:
            if self._saved_representations is None:
                raise RuntimeError("model has neither a graph to propagate over nor saved representations")
            return self._saved_representations
        edges = self._full_edges()
        for layer in self.layers:
            users, hashtags = self._run_layer(layer, users, hashtags, edges)
        return users, hashtags

    def propagate_for(self, users: Tensor, hashtags: Tensor) -> tuple[Tensor, Tensor]:
        """`propagate()[0][users]` and `propagate()[1][hashtags]` (index tensors of any shape), the
        same maths computed over their receptive field only: the last layer updates just
        these nodes, each layer below just the nodes the one above reads, and each side
        projects just the items of the triples it reads. A training step needs a batch's
        nodes, a small part of the graph at YFCC100M size.

        With dropout, masks are drawn for the computed rows only: the same distribution as
        `propagate`, not the same draws.
        """
        if not self.layers or self.graph is None:
            user_reps, hashtag_reps = self.propagate()
            return user_reps[users], hashtag_reps[hashtags]
        graph = self.graph
        wanted_users, wanted_hashtags = distinct(users, graph.n_users), distinct(hashtags, graph.n_hashtags)
        sparse = self.config.aggregation == "sparse"
        if sparse:
            field_pairs = graph.user_degree[wanted_users].sum() + graph.hashtag_degree[wanted_hashtags].sum()
            if int(field_pairs) > DENSE_PAIR_FRACTION * 2 * graph.n_groups:
                user_reps, hashtag_reps = self.propagate()
                return _rows(user_reps, users), _rows(hashtag_reps, hashtags)
        plan: list[LayerEdges] = []
        for _ in self.layers:  # from the last layer down: what each layer must output, and reads
            edges = LayerEdges(graph.edges("user", wanted_users, sparse),
                               graph.edges("hashtag", wanted_hashtags, sparse))
            plan.append(edges)
            if len(plan) == len(self.layers):  # the bottom layer reads the ID embeddings: nothing to plan
                break
            # A user target reads its hashtags (messages and attention guides), a hashtag its
            # users; with the self-loop, each target also reads itself.
            read_users, read_hashtags = [edges.hashtags.pair_neighbour], [edges.users.pair_neighbour]
            if self.config.residual:
                read_users.append(wanted_users)
                read_hashtags.append(wanted_hashtags)
            wanted_users = distinct(torch.cat(read_users), graph.n_users)
            wanted_hashtags = distinct(torch.cat(read_hashtags), graph.n_hashtags)
        user_table, hashtag_table = self.user_embedding.weight, self.hashtag_embedding.weight
        for layer, edges in zip(self.layers, reversed(plan)):
            new_users, new_hashtags = self._run_layer(layer, user_table, hashtag_table, edges)
            # Back to tables over all nodes (zero rows are never read) for the next layer's gathers.
            user_table = _scatter_rows(new_users, edges.users, graph.n_users)
            hashtag_table = _scatter_rows(new_hashtags, edges.hashtags, graph.n_hashtags)
        return user_table[users], hashtag_table[hashtags]

    def layer_messages(self) -> list[LayerMessages]:
        """Each layer's pre-fusion outputs and attention weights (for inspection and tests)."""
        assert self.graph is not None, "layer messages need a graph"
        users, hashtags = self.user_embedding.weight, self.hashtag_embedding.weight
        edges = self._full_edges()
        results = []
        for layer in self.layers:
            items = self._project_layer_items(layer, edges)
            results.append(layer.messages(users, hashtags, *items, edges))
            users, hashtags = layer(users, hashtags, *items, edges)
        return results

    def encode_items(self, features: dict[str, Tensor], masks: dict[str, Tensor]) -> Tensor:
        """v_k for arbitrary items: (B, D), standardised, learned vectors where a modality is missing."""
        return self.item_encoder(features, masks)

    def graph_item_vectors(self, items: Tensor) -> Tensor:
        """v_k (B, D) of graph items by index."""
        assert self.graph is not None
        return self.item_encoder.fill_missing(self.graph.items[items], self.graph.item_masks[items])

    @staticmethod
    def user_rows(user_reps: Tensor, users: Tensor) -> Tensor:
        """Rows of `user_reps` for user indices; a user without training posts (index -1) gets
        the mean of all user representations, i.e. an average user's taste."""
        rows = user_reps[users.clamp(min=0)]
        cold = users < 0
        if bool(cold.any()):
            rows = torch.where(cold.unsqueeze(1), user_reps.mean(dim=0), rows)
        return rows

    def score_triples(self, user_rows: Tensor, item_vectors: Tensor, hashtag_rows: Tensor) -> Tensor:
        """Scores (B, n) of n hashtags per row: user rows (B, d), v_k (B, D), hashtag rows (B, n, d)."""
        return self.scorer.score_triples(user_rows, item_vectors, hashtag_rows)

    def score_graph_triples(self, user_rows: Tensor, items: Tensor, hashtag_rows: Tensor,
                            keep_ids: Tensor | None = None) -> Tensor:
        """`score_triples` for graph items by index (B,): W^v v_k is computed from the stored
        features without building the (B, D) v_k. With item IDs, each item's embedding is
        added where keep_ids (B,) bool is True (all when None)."""
        projected = self._project_graph_items(self.scorer.item.weight, items) + self.scorer.item.bias
        if self.item_embedding is not None:
            offsets = self.item_embedding(items)
            if keep_ids is not None:
                offsets = offsets * keep_ids.unsqueeze(1).to(offsets.dtype)
            projected = projected + offsets
        return self.scorer.score_projected_triples(user_rows, projected, hashtag_rows)

    def gated(self, graph_scores: Tensor) -> Tensor:
        """The graph score as it enters the total (times the gate, with evidence)."""
        return graph_scores if self.graph_gate is None else self.graph_gate * graph_scores

    def item_offsets(self, items: Tensor) -> Tensor | None:
        """The ID embeddings (B, d) of graph items by index, zeros for -1 (new content);
        None without item IDs."""
        if self.item_embedding is None:
            return None
        known = (items >= 0).unsqueeze(1)
        return torch.where(known, self.item_embedding(items.clamp(min=0)), 0.0)

    def similarity_vectors(self, standardised: Tensor, mask_matrix: Tensor) -> Tensor:
        """The vectors (`neighbours.content_vectors`) that find similar items, from standardised
        (B, D) item vectors and their (B, M) modality masks."""
        return content_vectors([(standardised[:, start:stop], mask_matrix[:, m])
                                for m, (_, start, stop) in enumerate(self.item_encoder.blocks())])

    def graph_content_vectors(self) -> Tensor:
        """The similarity vectors of every graph item."""
        assert self.graph is not None
        return self.similarity_vectors(self.graph.items, self.graph.item_masks)

    @torch.no_grad()
    def score_parts(self, user_reps: Tensor, hashtag_reps: Tensor, users: Tensor, items: Tensor,
                    features: dict[str, Tensor], masks: dict[str, Tensor], times: Tensor | None = None
                    ) -> dict[str, Tensor]:
        """The score of every hashtag (B, H) for posts, as named parts that sum to it: "graph"
        (Eq. 9-10 on the propagated representations) and, with evidence, its terms and
        PITF's "factors", each at its scale (`part_scales`).

        users (B,) are graph user ids (-1: cold), items (B,) graph item ids (-1: new
        content); features and masks describe the posts' content per modality; times (B,)
        are the posts' Unix seconds (NaN or None: unknown; a new upload's is now).
        """
        return self.scaled(self.unscaled_parts(user_reps, hashtag_reps, users, items, features, masks, times))

    def scaled(self, parts: dict[str, Tensor]) -> dict[str, Tensor]:
        """`unscaled_parts`, each at its scale (`part_scales`)."""
        return {name: scale * part for scale, (name, part) in zip(self.part_scales, parts.items())}

    def unscaled_parts(self, user_reps: Tensor, hashtag_reps: Tensor, users: Tensor, items: Tensor,
                       features: dict[str, Tensor], masks: dict[str, Tensor], times: Tensor | None = None
                       ) -> dict[str, Tensor]:
        """`score_parts` before their scales."""
        standardised, mask_matrix = self.item_encoder.standardised(features, masks)
        vectors = self.item_encoder.fill_missing(standardised, mask_matrix)
        parts = {"graph": self.gated(self.score_all(self.user_rows(user_reps, users), vectors, hashtag_reps,
                                                    self.item_offsets(items)))}
        if self.evidence is not None:
            parts.update(self.evidence.term_rows(users, items, self.similarity_vectors(standardised, mask_matrix),
                                                 times))
        if self.factors is not None:
            parts[FACTORS] = self.factors.score_rows(users, items, features, masks)
        return parts

    def score_all(self, user_rows: Tensor, item_vectors: Tensor, hashtag_reps: Tensor,
                  item_offsets: Tensor | None = None) -> Tensor:
        """Eq. 9-10's scores (B, H) of every hashtag: user rows (B, d), v_k (B, D), all hashtag
        reps (H, d), and the items' ID embeddings (B, d) if any (`item_offsets`)."""
        return self.scorer.score_all(user_rows, item_vectors, hashtag_reps, item_offsets)

    def embedding_l2(self, users: Tensor, hashtags: Tensor) -> Tensor:
        """Eq. 11's ‖Θ‖² on the batch: squared ID embeddings of its users and hashtags (positive
        and negative, any shape), summed and divided by the batch size (len(users))."""
        return (
            self.user_embedding(users).pow(2).sum() + self.hashtag_embedding(hashtags).pow(2).sum()
        ) / max(1, len(users))
