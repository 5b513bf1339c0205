"""The checkpoint `phr train` writes and every later command reads: one typed record (`Checkpoint`).

One file (torch's safe, weights-only pickle): the configurations, the split, the
vocabulary, the best epoch's weights and representations, the history, the provenance of
the data (`Provenance`), what the steps after the epochs did (`stages`), the store's path
relative to the checkpoint's folder, the checkpoint a warm start began from (`WarmStart`),
and the state to continue from (the optimizer's only while the run is unfinished). Written
atomically (`files.atomic_file`), so a crash or a full disk leaves the previous one. Reading a
checkpoint needs nothing of the training loop.
"""

from __future__ import annotations

import math
import os
import pickle
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from phr_cli import __version__
from phr_cli.choices import plain_values
from phr_cli.data.graph import Split
from phr_cli.data.posts import normalize_user
from phr_cli.data.provenance import Provenance
from phr_cli.errors import CheckpointError
from phr_cli.files import atomic_file, interrupt_after
from phr_cli.model.config import ModelConfig
from phr_cli.model.factors import FittedFactors
from phr_cli.model.phr import PHRModel
from phr_cli.ranking.rerank import Reranker
from phr_cli.ranking.scorer import FactorScorer, ModelScorer
from phr_cli.training.config import TrainConfig

# /2: the default model's evidence terms and item IDs (state dict entries and config fields);
# /3: the evidence's timed uses; /4: its "similar own posts" tables and config field; /5: PITF's
# factors as a score part (`factors.TagFactors`) and config field; /6: the re-ranker
# (`rerank.Reranker`) and config field; /7: the model configuration by part (network,
# evidence, item IDs, factors), the network's weights under "network.", `rerank` a training
# option; /8: `stages`, `store_relative`, no optimizer state once finished; /9: `refreshed`;
# /10: `warm_start` (CHANGELOG.md).
CHECKPOINT_FORMAT = "phr-gcn-checkpoint/10"
# Formats read as well: each lacks only what the later ones added, read as empty.
EARLIER_READABLE = ("phr-gcn-checkpoint/9", "phr-gcn-checkpoint/8", "phr-gcn-checkpoint/7")
READABLE_FORMATS = (CHECKPOINT_FORMAT, *EARLIER_READABLE)


@dataclass
class ResumeState:
    """What a run continues from: the state after its last saved epoch (an interrupted run
    resumes from it, a finished one is extended from it)."""

    epoch: int
    bad_epochs: int  # epochs since the best one
    model: dict[str, Tensor]  # the weights after the epoch (the best epoch's are saved apart)
    optimizer: dict[str, Any] | None  # Adam's moments; None once finished (an extension starts them afresh)
    torch_rng: Tensor
    cuda_rng: Tensor | None
    numpy_rng: dict[str, Any]


@dataclass
class WarmStart:
    """The checkpoint a run was warm-started from (`phr train --warm-start`), and how much of it carried over."""

    path: str  # absolute, as it was when the run started
    sha256: str  # of that file then
    # Per vocabulary ("users", "hashtags", "items"): [rows carried over, rows of this model].
    carried: dict[str, list[int]]
    # The carried-over weights' validation metric, before the first epoch (None: not validated yet).
    validation_metric: float | None = None

    def summary(self) -> str:
        """'N of M users, … rows carried over'."""
        return ", ".join(f"{carried:,} of {total:,} {vocabulary}" for vocabulary, (carried, total)
                         in self.carried.items()) + " rows carried over"


@dataclass
class Checkpoint:
    """Everything `phr train` writes: written and read here only (`save`, `load_checkpoint`)."""

    model_config: ModelConfig
    train_config: TrainConfig
    split: Split
    users: list[str]
    hashtags: list[str]
    items: list[str]
    modality_widths: dict[str, int]
    provenance: Provenance
    state_dict: dict[str, Tensor] = field(default_factory=dict)  # best epoch's weights, normalisation included
    user_representations: Tensor | None = None  # the network's propagate() at the best epoch
    hashtag_representations: Tensor | None = None
    best_epoch: int = 0  # 1-based; 0: a warm start's weights, which no epoch beat (or none run yet)
    best_metric: float = -math.inf
    history: list[dict[str, float]] = field(default_factory=list)
    completed: bool = False
    stopped_early: bool = False
    pitf_epoch: int | None = None  # the epoch of the PITF fit behind the model's factors (None: none)
    calibration: dict[str, Any] | None = None  # `calibration.Calibration` as a dict (None: not calibrated)
    reranker: Reranker | None = None  # the second stage fitted on validation (None: none, or not kept)
    reranking: dict[str, Any] | None = None  # how the re-ranker was chosen (`rerank.Reranking` as a dict)
    resume: ResumeState | None = None  # None once nothing is left to resume
    # The steps after the epochs, each with what it did ("kept; …", "skipped (…)"), in order.
    stages: dict[str, str] = field(default_factory=dict)
    store_relative: str = ""  # the store's path relative to the checkpoint's folder, as `save` found it
    # What `phr train --refresh` folded in since training (training/refresh.py); {}: nothing.
    refreshed: dict[str, Any] = field(default_factory=dict)
    warm_start: WarmStart | None = None  # None: the run started from a fresh initialisation
    phr_version: str = __version__
    path: Path | None = None  # where it was read from (not saved)

    def model(self, device: torch.device = torch.device("cpu")) -> PHRModel:
        """The best epoch's model in eval mode, serving the saved representations (no graph needed)."""
        model = PHRModel(self.model_config, len(self.users), len(self.hashtags), self.modality_widths, len(self.items))
        model.load_state_dict(self.state_dict)
        model.to(device).eval()
        assert self.user_representations is not None and self.hashtag_representations is not None
        model.network.save_representations(self.user_representations, self.hashtag_representations)
        return model

    def factor_scorer(self, device: torch.device = torch.device("cpu")) -> FactorScorer:
        """The model's PITF factors alone as a `metrics.Scorer`: the PITF fit behind them."""
        model = self.model(device)
        return FactorScorer(model, *model.network.propagate(), item_index=self.item_index())

    def fitted_factors(self) -> FittedFactors | None:
        """The PITF fit behind the model's factors part (None: the model has none)."""
        if self.pitf_epoch is None:
            return None
        prefix = "factors."
        return FittedFactors({k[len(prefix):]: v for k, v in self.state_dict.items() if k.startswith(prefix)},
                             self.pitf_epoch)

    def scorer(self, device: torch.device = torch.device("cpu")) -> ModelScorer:
        """The best epoch's model, re-ranker included, as a `metrics.Scorer`."""
        model = self.model(device)
        return ModelScorer(model, *model.network.propagate(), item_index=self.item_index(), reranker=self.reranker)

    def store_candidates(self) -> list[Path]:
        """Where the store it was trained on may be: relative to the checkpoint's folder as
        recorded, then the absolute path recorded (a checkpoint travels with its store)."""
        candidates = []
        if self.store_relative and self.path is not None:
            candidates.append(Path(os.path.normpath(self.path.parent / self.store_relative)))
        if self.provenance.store:
            candidates.append(Path(self.provenance.store))
        return list(dict.fromkeys(candidates))

    def find_store(self) -> Path | None:
        """The first of `store_candidates` that exists (None: none does)."""
        return next((path for path in self.store_candidates() if path.exists()), None)

    @property
    def trained_users(self) -> list[str]:
        """The users of the training graph (a refresh appends the users first seen since)."""
        return self.users[: self.refreshed["trained"][0]] if self.refreshed else self.users

    @property
    def trained_hashtags(self) -> list[str]:
        return self.hashtags[: self.refreshed["trained"][1]] if self.refreshed else self.hashtags

    def item_index(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.items)}

    def user_position(self, user: str) -> int:
        """The user's row in the representations, -1 for a user without training posts."""
        user = normalize_user(user) or ""
        return self.users.index(user) if user in self.users else -1

    def to_dict(self) -> dict[str, Any]:
        """The on-disk form: plain values and tensors only, what torch's safe unpickler reads."""
        return {
            "format": CHECKPOINT_FORMAT,
            "phr_version": self.phr_version,
            "model_config": plain_values(self.model_config),
            "train_config": plain_values(self.train_config),
            "split": {
                "train": torch.as_tensor(np.asarray(self.split.train, dtype=np.int64)),
                "validation": torch.as_tensor(np.asarray(self.split.validation, dtype=np.int64)),
                "test": torch.as_tensor(np.asarray(self.split.test, dtype=np.int64)),
                "seed": int(self.split.seed),
                "by": self.split.by,
            },
            "vocabulary": {"users": self.users, "hashtags": self.hashtags, "items": self.items},
            "modality_widths": self.modality_widths,
            "metadata": self.provenance.to_dict(),
            "state_dict": self.state_dict,
            "user_representations": self.user_representations,
            "hashtag_representations": self.hashtag_representations,
            "best_epoch": self.best_epoch,
            "best_metric": self.best_metric,
            "history": self.history,
            "completed": self.completed,
            "stopped_early": self.stopped_early,
            "pitf_epoch": self.pitf_epoch,
            "calibration": self.calibration,
            "reranker": None if self.reranker is None else self.reranker.to_dict(),
            "reranking": self.reranking,
            "resume": None if self.resume is None else asdict(self.resume),
            "stages": self.stages,
            "store_relative": self.store_relative,
            "refreshed": self.refreshed,
            "warm_start": None if self.warm_start is None else asdict(self.warm_start),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Checkpoint:
        split = raw["split"]
        return cls(
            model_config=ModelConfig(**raw["model_config"]),
            train_config=TrainConfig(**raw["train_config"]),
            split=Split(train=split["train"].numpy(), validation=split["validation"].numpy(),
                        test=split["test"].numpy(), seed=split["seed"], by=split["by"]),
            users=raw["vocabulary"]["users"],
            hashtags=raw["vocabulary"]["hashtags"],
            items=raw["vocabulary"]["items"],
            modality_widths=raw["modality_widths"],
            provenance=Provenance.from_dict(raw["metadata"]),
            state_dict=raw["state_dict"],
            user_representations=raw["user_representations"],
            hashtag_representations=raw["hashtag_representations"],
            best_epoch=raw["best_epoch"],
            best_metric=raw["best_metric"],
            history=raw["history"],
            completed=raw["completed"],
            stopped_early=raw["stopped_early"],
            pitf_epoch=raw["pitf_epoch"],
            calibration=raw["calibration"],
            reranker=None if raw["reranker"] is None else Reranker.from_dict(raw["reranker"]),
            reranking=raw["reranking"],
            resume=None if raw["resume"] is None else ResumeState(**raw["resume"]),
            stages=raw.get("stages", {}),  # format 7 recorded none
            store_relative=raw.get("store_relative", ""),
            refreshed=raw.get("refreshed", {}),  # format 8 and before: never refreshed
            warm_start=WarmStart(**raw["warm_start"]) if raw.get("warm_start") else None,  # format 9 and before: none
            phr_version=raw["phr_version"],
        )

    def save(self, path: Path) -> None:
        """Write it to path, with the store's path relative to path's folder."""
        if self.provenance.store:
            self.store_relative = os.path.relpath(os.path.abspath(self.provenance.store),
                                                  os.path.abspath(Path(path).parent))
        save_checkpoint(self.to_dict(), path)


def read_checkpoint_file(path: Path) -> Any:
    """The unpickled contents of a checkpoint file (weights only), whatever they hold."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint; run `phr train --checkpoint {path}` first") from None
    # Another file, or a torn one: unpickling garbage raises any of these (a text file, KeyError).
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, KeyError, IndexError, ValueError,
            TypeError, AttributeError, struct.error) as error:
        raise CheckpointError(f"{path} is not a readable phr checkpoint ({type(error).__name__}); "
                              "train one with `phr train`") from None


def load_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint at path; a one-line CheckpointError for another file or another format."""
    raw = read_checkpoint_file(path)
    written_as = raw.get("format") if isinstance(raw, dict) else None
    if isinstance(written_as, str) and written_as.startswith(CHECKPOINT_FORMAT.split("/")[0] + "/") \
            and written_as not in READABLE_FORMATS:
        raise CheckpointError(f"{path} is a {written_as} checkpoint; this phr reads {', '.join(READABLE_FORMATS)}: "
                              "upgrade phr, or retrain with this one")
    if written_as not in READABLE_FORMATS:
        raise CheckpointError(f"{path} is not a phr checkpoint ({CHECKPOINT_FORMAT})")
    checkpoint = Checkpoint.from_dict(raw)
    checkpoint.path = Path(path)
    return checkpoint


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write a checkpoint's payload (as `train` builds it) atomically; a Ctrl-C during the
    write lands once the new checkpoint is in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with interrupt_after(), atomic_file(path) as temporary, open(temporary, "wb") as handle:
            torch.save(payload, handle)
    except (OSError, RuntimeError) as error:  # torch reports a failed write as RuntimeError
        cause = getattr(error, "strerror", None) or " ".join(str(error).split())
        raise CheckpointError(f"{path}: cannot write the checkpoint ({cause}); the previous one is "
                              "intact: free space and rerun `phr train` to resume") from None
