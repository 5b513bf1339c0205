"""Trainings that differ only in their seed (`phr train --seeds`): each its own split and initialisation.

Seed 0 writes the checkpoint named, so the default checkpoint stays the default model; seed N
writes `NAME.seedN.pt` beside it (`phr evaluate --checkpoint 'models/gcn-phr*.pt'` takes them all).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from phr_cli.errors import ConfigError
from phr_cli.model.config import ModelConfig
from phr_cli.training.config import TrainConfig
from phr_cli.training.train import StoreTraining, train_from_store


def parse_seeds(text: str) -> list[int]:
    """"0,1,2": those seeds; "3": a count, seeds 0, 1 and 2."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: give seeds separated by commas (0,1,2) or a count (3)") from None
    seeds = list(range(values[0])) if len(values) == 1 else values
    if not seeds or min(seeds) < 0 or len(set(seeds)) < len(seeds):
        raise ConfigError(f"--seeds {text!r}: give distinct seeds of 0 or more, or a count of at least 1")
    return seeds


def seed_checkpoint(checkpoint: Path, seed: int) -> Path:
    """Where the training with this seed writes: the checkpoint itself for seed 0, else NAME.seedN.pt."""
    checkpoint = Path(checkpoint)
    return checkpoint if seed == 0 else checkpoint.with_name(f"{checkpoint.stem}.seed{seed}{checkpoint.suffix}")


def seed_runs(checkpoint: Path, config: TrainConfig, seeds: list[int]) -> list[tuple[Path, TrainConfig]]:
    """Each seed's checkpoint and training configuration (the given one with that seed)."""
    return [(seed_checkpoint(checkpoint, seed), replace(config, seed=seed)) for seed in seeds]


def train_seeds(store_path: Path, checkpoint: Path, model_config: ModelConfig, config: TrainConfig,
                seeds: list[int], split_by: str = "post", **options: Any) -> list[StoreTraining]:
    """`train.train_from_store` once per seed (options passed on), each to its own checkpoint."""
    return [train_from_store(store_path, path, model_config, seed_config, split_by, **options)
            for path, seed_config in seed_runs(checkpoint, config, seeds)]
