"""Training options, validated when made (the model's own live beside it in `model.ModelConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from phr_cli.devices import check_device_name
from phr_cli.errors import ConfigError

STEP_PROPAGATIONS = ("batch", "full")
ADAM_IMPLEMENTATIONS = ("fused", "foreach", "single")


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 1024
    # Adam's rate: on Last.fm 3e-3 reaches about 1e-3's validation-chosen test P@5 in far
    # fewer epochs (bench/README.md, "Learning rate").
    lr: float = 3e-3
    # λ of Eq. 11, on the batch's ID embeddings (`GCNPHR.embedding_l2`).
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
    # What a training step computes: "batch", the receptive field of its users and hashtags
    # only (`GCNPHR.propagate_for`) and W^v v_k straight from the stored features; "full",
    # the whole graph and the batch's full v_k (the plain reference, much slower on a large
    # graph). The same maths, so the same results within rounding.
    step_propagation: str = "batch"
    # torch's Adam implementation: "fused" (one kernel over all parameters), "foreach"
    # (grouped ops), "single" (one parameter at a time, the slow reference); same updates.
    adam: str = "fused"

    def __post_init__(self) -> None:
        check_device_name(self.device)
        if self.adam not in ADAM_IMPLEMENTATIONS:
            raise ConfigError(f"unknown Adam implementation {self.adam!r}: use one of {ADAM_IMPLEMENTATIONS}")
        if self.step_propagation not in STEP_PROPAGATIONS:
            raise ConfigError(f"unknown step propagation {self.step_propagation!r}: use one of {STEP_PROPAGATIONS}")
        if not 0.0 <= self.hard_negatives <= 1.0:
            raise ConfigError(f"hard_negatives must lie in [0, 1], got {self.hard_negatives}")
        if self.negatives < 1 or self.batch_size < 1 or self.epochs < 1:
            raise ConfigError("epochs, batch_size and negatives must be positive")
        name, _, k = self.validation_metric.partition("@")
        if name not in ("P", "R", "A") or not k.isdigit() or int(k) < 1:
            raise ConfigError(f"validation metric {self.validation_metric!r}: use P@K, R@K or A@K")
