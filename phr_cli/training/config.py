"""Training options, validated when made (the model's own live in `model.config.ModelConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

from phr_cli.choices import Choice
from phr_cli.devices import check_device_name
from phr_cli.errors import ConfigError
from phr_cli.model.config import ModelConfig


class StepPropagation(Choice):
    # The receptive field of the batch's users and hashtags only (`GCNPHR.propagate_for`)
    # and W^v v_k straight from the stored features.
    BATCH = "batch"
    # The whole graph and the batch's full v_k: the plain reference, much slower on a large
    # graph. The same maths, so the same results within rounding.
    FULL = "full"


class Adam(Choice):
    FUSED = "fused"  # one kernel over all parameters
    FOREACH = "foreach"  # grouped ops
    SINGLE = "single"  # one parameter at a time, the slow reference; the same updates


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 1024
    # Adam's rate: on Last.fm 3e-3 reaches about 1e-3's validation-chosen test P@5 in far
    # fewer epochs (bench/README.md, "Learning rate").
    lr: float = 3e-3
    # λ of Eq. 11, on the batch's ID embeddings (`network.GCNPHR.embedding_l2`).
    l2: float = 1e-4
    # Adam's coupled weight decay on every parameter. The paper's code used 0.1: on the
    # synthetic test set validation then peaks by epoch 5 and sinks below user popularity.
    weight_decay: float = 0.0
    negatives: int = 1  # per positive (user, item, hashtag)
    # Share of negatives drawn from the user's or the item's own hashtags (`NegativeSampler`).
    hard_negatives: float = 0.5
    patience: int = 5  # epochs without a validation gain before stopping
    seed: int = 0
    # A device name, resolved when training starts (each torchrun rank takes its own GPU);
    # "auto": CUDA when available. Saved in the checkpoint as the name.
    device: str = "auto"
    validation_metric: str = "P@5"  # full ranking of every known hashtag
    step_propagation: StepPropagation = StepPropagation.BATCH  # what a training step computes
    adam: Adam = Adam.FUSED  # torch's Adam implementation
    # After the epochs of a model with evidence, a second stage that re-ranks each post's
    # leading hashtags by gradient-boosted trees fitted on the validation posts (`rerank.Reranker`).
    rerank: bool = True

    def __post_init__(self) -> None:
        check_device_name(self.device)
        self.adam = Adam.parse(self.adam, "Adam implementation")
        self.step_propagation = StepPropagation.parse(self.step_propagation, "step propagation")
        if not 0.0 <= self.hard_negatives <= 1.0:
            raise ConfigError(f"hard_negatives must lie in [0, 1], got {self.hard_negatives}")
        if self.negatives < 1 or self.batch_size < 1 or self.epochs < 1:
            raise ConfigError("epochs, batch_size and negatives must be positive")
        name, _, k = self.validation_metric.partition("@")
        if name not in ("P", "R", "A") or not k.isdigit() or int(k) < 1:
            raise ConfigError(f"validation metric {self.validation_metric!r}: use P@K, R@K or A@K")


def settings(model: ModelConfig, training: TrainConfig) -> dict[str, Any]:
    """Every option by name, with its value: TrainConfig's fields as they are, ModelConfig's
    top-level switches as they are, and each of its parts' fields as "part.field"
    ("network.dim", "evidence.recency")."""
    values: dict[str, Any] = {f.name: getattr(training, f.name) for f in fields(training)}
    for part in fields(model):
        value = getattr(model, part.name)
        if is_dataclass(value):
            values.update({f"{part.name}.{f.name}": getattr(value, f.name) for f in fields(value)})
        else:
            values[part.name] = value
    return values


def with_settings(model: ModelConfig, training: TrainConfig, changes: dict[str, Any]
                  ) -> tuple[ModelConfig, TrainConfig]:
    """The configurations with options changed by name (as `settings` names them)."""
    unknown = set(changes) - set(settings(model, training))
    if unknown:
        raise ConfigError(f"no such option: {', '.join(sorted(unknown))}")
    train_fields = {f.name for f in fields(training)}
    for name, value in changes.items():
        part, dot, field_name = name.partition(".")
        if dot:
            model = replace(model, **{part: replace(getattr(model, part), **{field_name: value})})
        elif name not in train_fields:
            model = replace(model, **{name: value})
    return model, replace(training, **{k: v for k, v in changes.items() if k in train_fields})
