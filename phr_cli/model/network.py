"""GCN-PHR (Wei et al., ACM MM 2019, §3) as the paper's equations define it, and nothing else:
graph-propagated user and hashtag representations (Eq. 1-8) and the user-specific scorer of
Eq. 9-10. phr's default model adds its other score parts around it (model/phr.py).

Messages flow along the training triples (user i tagged item k with hashtag j); the
attention softmax runs over the groups V_{i,j} (triples sharing a user and a hashtag),
PyTorch Geometric's `softmax(src, index)` pattern. Each side's sums are sparse products
over a structure fixed once per graph, with the attention as the entry weights
(phr_cli/model/aggregate.py); gather -> per-edge message -> `index_add_` stays as the
reference (NetworkConfig.aggregation "index_add"); the graph's indexing is model/edges.py.
A training step runs the same code over its batch's receptive field only (`propagate_for`):
the nodes, triples and items its loss reads, a small part of a YFCC100M-size graph (on a
small graph, where the field is most of it, the whole graph with its precomputed structure).
"""

from __future__ import annotations

from typing import NamedTuple, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from phr_cli.data.graph import Graph
from phr_cli.model.config import ModalityChoice, NetworkConfig
from phr_cli.model.edges import DENSE_PAIR_FRACTION, GraphTensors, LayerEdges, SideAggregation, SideEdges, distinct
from phr_cli.model.items import ItemEncoder, ordered_modalities

# Rows x hashtags x dim elements scored at once by `score_all`, in one reused buffer: on a
# CPU a cache-sized block (4 MiB of float32; a fresh 64 MiB block per chunk spent most of
# the time in page faults), on a GPU a large one (64 MiB), few kernel launches.
SCORE_CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 24}


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


class FusionLayer(nn.Module):
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

    def __init__(self, dim: int, item_width: int, config: NetworkConfig) -> None:
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
        self.user_fusion = FusionLayer(dim, config.fusion, config.negative_slope)
        self.hashtag_fusion = FusionLayer(dim, config.fusion, config.negative_slope)

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




class GCNPHR(nn.Module):
    """The paper's network. Build for training with `from_graph`; rebuilt from a checkpoint it
    holds no graph and serves the saved representations (see `propagate`)."""

    def __init__(self, config: NetworkConfig, n_users: int, n_hashtags: int, modality_widths: dict[str, int]
                 ) -> None:
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
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.user_embedding.weight, std=self.config.init_std)
        nn.init.normal_(self.hashtag_embedding.weight, std=self.config.init_std)
        for module in self.modules():
            if isinstance(module, nn.Linear):  # Xavier: v_k is 2,276 wide, a fixed std would blow up
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @classmethod
    def from_graph(cls, config: NetworkConfig, graph: Graph) -> GCNPHR:
        """The network for a training graph: its item normalisation fitted, the graph attached."""
        widths = {m: int(np.asarray(f).shape[1]) for m, f in graph.item_features.items()}
        present = {m: w for m, w in widths.items() if np.asarray(graph.item_masks[m]).any()}
        # The network's widths record the modalities it uses: a new clip's others are ignored.
        network = cls(config, graph.n_users, graph.n_hashtags,
                      present if config.modalities == ModalityChoice.PRESENT and present else widths)
        network.item_encoder.fit(
            {m: torch.as_tensor(graph.item_features[m]) for m in network.item_encoder.widths},
            {m: torch.as_tensor(graph.item_masks[m]) for m in network.item_encoder.widths},
        )
        network.attach_graph(graph)
        return network

    @property
    def device(self) -> torch.device:
        return self.user_embedding.weight.device

    def propagation_layers(self) -> list[PropagationLayer]:
        """The stacked layers, bottom first (none: content-only)."""
        return [cast(PropagationLayer, layer) for layer in self.layers]

    def attach_graph(self, graph: Graph) -> None:
        """Hold the training graph (on the network's device) for propagation; normalisation must be fitted first."""
        with torch.no_grad():
            self.graph = GraphTensors(graph, self.item_encoder).to(self.device)

    def save_representations(self, user_reps: Tensor, hashtag_reps: Tensor) -> None:
        """Serve these (e.g. a checkpoint's) from `propagate` when no graph is attached."""
        self._saved_representations = (user_reps.to(self.device), hashtag_reps.to(self.device))

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
                raise RuntimeError("the network has neither a graph to propagate over nor saved representations")
            return self._saved_representations
        edges = self._full_edges()
        for layer in self.propagation_layers():
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
        for layer, edges in zip(self.propagation_layers(), reversed(plan)):
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
        for layer in self.propagation_layers():
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
                            item_offsets: Tensor | None = None) -> Tensor:
        """`score_triples` for graph items by index (B,): W^v v_k is computed from the stored
        features without building the (B, D) v_k; item_offsets (B, d), if given, are added to it."""
        projected = self._project_graph_items(self.scorer.item.weight, items) + self.scorer.item.bias
        if item_offsets is not None:
            projected = projected + item_offsets
        return self.scorer.score_projected_triples(user_rows, projected, hashtag_rows)

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
