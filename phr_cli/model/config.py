"""The model's configuration: the paper's network (`NetworkConfig`, with its choices as
enums), the count evidence (`EvidenceConfig`), the item IDs (`ItemIdConfig`) and the default
model that holds them (`ModelConfig`). Apart from the modules that build the model, so that
it imports without torch: the CLI reads its options' defaults and choices here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from phr_cli.choices import Choice
from phr_cli.errors import ConfigError


class Fusion(Choice):
    CONCAT = "concat"  # Eq. 7: φ(W[a ; b] + bias)
    SUM = "sum"  # Eq. 8: W_a a + W_b b


class Variant(Choice):
    FULL = "full"
    NO_ATTENTION = "no_attention"  # Variant-I: every video of V_{i,j} weighs the same
    NO_USER_GUIDANCE = "no_user_guidance"  # Variant-II: video->hashtag attention ignores the user
    NO_HASHTAG_GUIDANCE = "no_hashtag_guidance"  # Variant-III: video->user attention ignores the hashtag


class VideoMessages(Choice):
    SUM = "sum"  # Eq. 6 as printed: a user's video message grows with their number of groups
    MEAN = "mean"  # divided by that number (a degree normalisation)


class Aggregation(Choice):
    SPARSE = "sparse"  # each side's sums as sparse products over a structure fixed once per graph
    INDEX_ADD = "index_add"  # gather per edge and `index_add_`: the reference


class ModalityChoice(Choice):
    PRESENT = "present"  # parameters only for the modalities some training item has
    ALL = "all"  # every modality of the store


@dataclass
class NetworkConfig:
    """The paper's network (Eq. 1-10): its architecture and how its sums are computed."""

    dim: int = 64
    layers: int = 1
    fusion: Fusion = Fusion.CONCAT
    variant: Variant = Variant.FULL
    propagate: bool = True  # False: content-only, the scorer on ID embeddings alone
    negative_slope: float = 0.2  # of the leaky ReLU φ (0.01 left many units dead in our tests)
    init_std: float = 0.1  # Gaussian init of ID embeddings and missing-modality vectors
    dropout: float = 0.0  # on each layer's fused outputs, training only
    # Add each node's input embedding to its fused messages (a self-loop). The paper's
    # layer (residual=False) replaces a hashtag's own embedding by its neighbours' messages,
    # so a hashtag with one user ends up with that user's vector.
    residual: bool = True
    video_messages: VideoMessages = VideoMessages.MEAN
    # The same sums either way (phr_cli/model/aggregate.py); an implementation choice.
    aggregation: Aggregation = Aggregation.SPARSE
    # Text-only data gets no visual or acoustic columns with "present".
    modalities: ModalityChoice = ModalityChoice.PRESENT

    def __post_init__(self) -> None:
        self.fusion = Fusion.parse(self.fusion, "fusion")
        self.variant = Variant.parse(self.variant, "variant")
        self.video_messages = VideoMessages.parse(self.video_messages, "video_messages")
        self.aggregation = Aggregation.parse(self.aggregation, "aggregation")
        self.modalities = ModalityChoice.parse(self.modalities, "modalities")
        if self.dim < 1 or self.layers < 1:
            raise ConfigError("dim and layers must be positive")


@dataclass
class EvidenceConfig:
    """The count prior as a score part of the default model: its switch and its terms."""

    enabled: bool = True
    neighbours: int = 20  # content neighbours of its "similar items" term
    recency: bool = True  # its "recent use" term: the user's past hashtags weighed by recency
    similar_posts: bool = True  # its "similar own posts" term: the user's hashtags on items tagged alike

    def __post_init__(self) -> None:
        if self.neighbours < 1:
            raise ConfigError(f"neighbours must be positive, got {self.neighbours}")


@dataclass
class ItemIdConfig:
    """An ID embedding for each item seen in training, added to W^v v_k."""

    enabled: bool = True
    # For this share of training posts the item's ID and its history are dropped: they are
    # scored as a new video is. None: the share of validation posts whose item is new to
    # training, i.e. as often as the held-out posts (which stand for the deployment) bring
    # new content; `train` resolves it and the checkpoint records the value.
    dropout: float | None = None

    def __post_init__(self) -> None:
        if self.dropout is not None and not 0.0 <= self.dropout <= 1.0:
            raise ConfigError(f"item_id_dropout must lie in [0, 1], got {self.dropout}")


@dataclass
class ModelConfig:
    """The default model: the network and each score part's configuration."""

    network: NetworkConfig = field(default_factory=NetworkConfig)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    item_ids: ItemIdConfig = field(default_factory=ItemIdConfig)
    # PITF's factors as one more part (with the evidence): the latent tastes the model's own
    # parts, stopped early with the evidence, learn far less of.
    factors: bool = True

    def __post_init__(self) -> None:  # from a saved dict, the parts arrive as dicts
        if isinstance(self.network, dict):
            self.network = NetworkConfig(**self.network)
        if isinstance(self.evidence, dict):
            self.evidence = EvidenceConfig(**self.evidence)
        if isinstance(self.item_ids, dict):
            self.item_ids = ItemIdConfig(**self.item_ids)

    @classmethod
    def paper(cls, network: NetworkConfig | None = None) -> ModelConfig:
        """GCN-PHR exactly as the paper's equations: no self-loop, no other score part."""
        return cls(network=replace(network or NetworkConfig(), residual=False),
                   evidence=EvidenceConfig(enabled=False), item_ids=ItemIdConfig(enabled=False), factors=False)

    @property
    def has_factors(self) -> bool:
        """Whether the model holds PITF's factors: they are fitted beside the evidence only."""
        return self.evidence.enabled and self.factors

    def with_item_id_dropout(self, dropout: float) -> ModelConfig:
        return replace(self, item_ids=replace(self.item_ids, dropout=dropout))
