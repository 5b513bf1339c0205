"""phr's default model: the paper's network (model/network.py) as one named score part beside
the parts it cannot compute, each with its own configuration and switch.

A hashtag's score for a post is the sum of its parts, each at a scale (`part_scales`):
- "graph": Eq. 9-10 on the propagated representations; with item IDs, each training
  item's ID embedding is added to W^v v_k, so that what others tagged the same item shapes
  its vector (`ItemIdConfig`); with the evidence, through a learned gate;
- the evidence terms: a learned count prior (model/evidence.py, `EvidenceConfig`);
- "factors": a fitted PITF's score (model/factors.py), fitted once the model is trained.
Calibration (ranking/calibration.py) later fits the scales on validation, and a re-ranker
(ranking/rerank.py) may re-order each post's leading hashtags. With every part but the
graph switched off (`ModelConfig.paper`), the model is the paper's network alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from phr_cli.data.graph import Graph
from phr_cli.model.config import ModelConfig
from phr_cli.model.evidence import TagEvidence
from phr_cli.model.factors import FACTORS, TagFactors
from phr_cli.model.neighbours import ContentIndex, content_vectors
from phr_cli.model.network import GCNPHR

GRAPH = "graph"  # the network's score part


class PHRModel(nn.Module):
    """The default model (see the module docstring). Build for training with `from_graph`;
    rebuilt from a checkpoint, its network serves the saved representations."""

    part_scales: Tensor

    def __init__(self, config: ModelConfig, n_users: int, n_hashtags: int, modality_widths: dict[str, int],
                 n_items: int = 0, network: GCNPHR | None = None) -> None:
        super().__init__()
        self.config = config
        self.network = network or GCNPHR(config.network, n_users, n_hashtags, modality_widths)
        dim, init_std = config.network.dim, config.network.init_std
        self.item_embedding = nn.Embedding(n_items, dim) if config.item_ids.enabled else None
        if self.item_embedding is not None:
            nn.init.normal_(self.item_embedding.weight, std=init_std)
        evidence = config.evidence
        # With evidence, the graph score enters through a learned gate that starts at 0: the
        # model starts as the count prior (a strong ranking), not as that prior plus the noise
        # of an untrained graph score, and lets the graph in as far as it helps (ReZero).
        self.graph_gate = nn.Parameter(torch.zeros(())) if evidence.enabled else None
        # Sized when fitted (`from_graph`) or loaded from a checkpoint's state dict.
        item_width = self.network.item_encoder.width
        self.evidence = (TagEvidence(n_users, n_items, n_hashtags, 0, 0, 0, ContentIndex(item_width, 0, n_hashtags, 0),
                                     evidence.neighbours, evidence.recency, evidence.similar_posts)
                         if evidence.enabled else None)
        self.factors = (TagFactors(n_users, n_items, n_hashtags, self.network.item_encoder.widths)
                        if config.has_factors else None)
        # One scale per score part (`score_parts`), fitted on validation after training
        # (`calibration.calibrate`); the trained model's until then.
        self.register_buffer("part_scales", self.trained_part_scales())

    @classmethod
    def from_graph(cls, config: ModelConfig, graph: Graph) -> PHRModel:
        network = GCNPHR.from_graph(config.network, graph)
        model = cls(config, graph.n_users, graph.n_hashtags, network.item_encoder.widths, graph.n_items, network)
        if config.evidence.enabled:
            assert network.graph is not None
            times = None if graph.triple_times is None else torch.as_tensor(graph.triple_times)
            model.evidence = TagEvidence.fit(
                network.graph.triples(), graph.n_users, graph.n_items, graph.n_hashtags,
                model.graph_content_vectors(), config.evidence.neighbours, times, config.evidence.recency,
                config.evidence.similar_posts)
        return model

    @property
    def part_names(self) -> list[str]:
        """The score parts, in the order of `part_scales`."""
        evidence = list(self.evidence.active_terms) if self.evidence is not None else []
        return [GRAPH, *evidence, *([FACTORS] if self.factors is not None else [])]

    def trained_part_scales(self) -> Tensor:
        """The part scales of the model as trained, before calibration: ones, and 0 for PITF's
        factors, which enter only at the scale calibration finds for them on validation."""
        return torch.tensor([0.0 if name == FACTORS else 1.0 for name in self.part_names],
                            device=self.network.device)

    def gated(self, graph_scores: Tensor) -> Tensor:
        """The graph score as it enters the total (times the gate, with evidence)."""
        return graph_scores if self.graph_gate is None else self.graph_gate * graph_scores

    def item_offsets(self, items: Tensor, keep: Tensor | None = None) -> Tensor | None:
        """The ID embeddings (B, d) of graph items by index, zeros for -1 (new content) and
        where keep (B,) bool is False; None without item IDs."""
        if self.item_embedding is None:
            return None
        known = items >= 0
        if keep is not None:
            known = known & keep
        return torch.where(known.unsqueeze(1), self.item_embedding(items.clamp(min=0)), 0.0)

    def similarity_vectors(self, standardised: Tensor, mask_matrix: Tensor) -> Tensor:
        """The vectors (`neighbours.content_vectors`) that find similar items, from standardised
        (B, D) item vectors and their (B, M) modality masks."""
        return content_vectors([(standardised[:, start:stop], mask_matrix[:, m])
                                for m, (_, start, stop) in enumerate(self.network.item_encoder.blocks())])

    def graph_content_vectors(self) -> Tensor:
        """The similarity vectors of every graph item."""
        graph = self.network.graph
        assert graph is not None
        return self.similarity_vectors(graph.items, graph.item_masks)

    def training_scores(self, users: Tensor, items: Tensor, hashtags: Tensor, keep_ids: Tensor,
                        step_propagation: str) -> Tensor:
        """Scores (B, n) of hashtags (B, n) for training posts (users, items: (B,)); column 0
        holds each post's positive hashtag, the others negatives. Where keep_ids (B,) is False
        a post is scored without its item's ID and history, as a new video is.

        step_propagation "batch" propagates over the batch's receptive field and projects the
        stored features; "full", the plain reference, the whole graph and the batch's v_k."""
        network = self.network
        offsets = self.item_offsets(items, keep_ids)
        if step_propagation == "batch":
            user_rows, hashtag_rows = network.propagate_for(users, hashtags)
            scores = network.score_graph_triples(user_rows, items, hashtag_rows, offsets)
        else:
            user_reps, hashtag_reps = network.propagate()
            projected = network.scorer.item(network.graph_item_vectors(items))
            if offsets is not None:
                projected = projected + offsets
            scores = network.scorer.score_projected_triples(user_reps[users], projected, hashtag_reps[hashtags])
        scores = self.gated(scores)
        if self.evidence is not None:
            on_post = torch.zeros_like(hashtags, dtype=torch.bool)
            on_post[:, 0] = True
            scores = scores + self.evidence.score_training(users, items, hashtags, on_post, keep_ids)
        return scores

    @torch.no_grad()
    def score_parts(self, user_reps: Tensor, hashtag_reps: Tensor, users: Tensor, items: Tensor,
                    features: dict[str, Tensor], masks: dict[str, Tensor], times: Tensor | None = None
                    ) -> dict[str, Tensor]:
        """The score of every hashtag (B, H) for posts, as named parts that sum to it, each at
        its scale (`part_scales`).

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
        network = self.network
        standardised, mask_matrix = network.item_encoder.standardised(features, masks)
        vectors = network.item_encoder.fill_missing(standardised, mask_matrix)
        parts = {GRAPH: self.gated(network.score_all(network.user_rows(user_reps, users), vectors, hashtag_reps,
                                                     self.item_offsets(items)))}
        if self.evidence is not None:
            parts.update(self.evidence.term_rows(users, items, self.similarity_vectors(standardised, mask_matrix),
                                                 times))
        if self.factors is not None:
            parts[FACTORS] = self.factors.score_rows(users, items, features, masks)
        return parts
