"""The checkpoint `phr train` writes and `phr recommend` / `phr evaluate` read.

One file (torch's safe, weights-only pickle): the configurations, the split, the
vocabulary, the best epoch's weights and representations, the history, the provenance of
the data (`Provenance`) and, while training runs, the state to resume from. Written
atomically (`files.atomic_file`), so a crash or a full disk leaves the previous one.
Reading a checkpoint needs nothing of the training loop.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from phr_cli.data.graph import Split
from phr_cli.data.posts import normalize_user
from phr_cli.data.provenance import Provenance
from phr_cli.errors import CheckpointError
from phr_cli.files import atomic_file, interrupt_after
from phr_cli.model.factors import FittedFactors
from phr_cli.model.network import GCNPHR, ModelConfig
from phr_cli.ranking.rerank import Reranker
from phr_cli.ranking.scorer import FactorScorer, ModelScorer
from phr_cli.training.config import TrainConfig

# /2: the default model's evidence terms and item IDs (state dict entries and config fields);
# /3: the evidence's timed uses; /4: its "similar own posts" tables and config field; /5: PITF's
# factors as a score part (`factors.TagFactors`) and config field; /6: the re-ranker
# (`rerank.Reranker`) and config field.
CHECKPOINT_FORMAT = "phr-gcn-checkpoint/6"




@dataclass
class Checkpoint:
    model_config: ModelConfig
    train_config: TrainConfig
    split: Split
    users: list[str]
    hashtags: list[str]
    items: list[str]
    modality_widths: dict[str, int]
    state_dict: dict[str, Tensor]  # best epoch's weights, the feature normalisation included
    user_representations: Tensor  # propagate() at the best epoch
    hashtag_representations: Tensor
    best_epoch: int
    best_metric: float
    history: list[dict[str, float]]
    completed: bool
    stopped_early: bool
    provenance: Provenance
    pitf_epoch: int | None = None  # the epoch of the PITF fit behind the model's factors (None: none)
    reranker: Reranker | None = None  # the second stage fitted on validation (None: none, or not kept)

    def model(self, device: torch.device = torch.device("cpu")) -> GCNPHR:
        """The best epoch's model in eval mode, serving the saved representations (no graph needed)."""
        model = GCNPHR(self.model_config, len(self.users), len(self.hashtags), self.modality_widths, len(self.items))
        model.load_state_dict(self.state_dict)
        model.to(device).eval()
        model.save_representations(self.user_representations, self.hashtag_representations)
        return model

    def factor_scorer(self, device: torch.device = torch.device("cpu")) -> FactorScorer:
        """The model's PITF factors alone as an `evaluate.Scorer`: the PITF fit behind them."""
        model = self.model(device)
        return FactorScorer(model, *model.propagate(), item_index={item: i for i, item in enumerate(self.items)})

    def fitted_factors(self) -> FittedFactors | None:
        """The PITF fit behind the model's factors part (None: the model has none)."""
        if self.pitf_epoch is None:
            return None
        prefix = "factors."
        return FittedFactors({k[len(prefix):]: v for k, v in self.state_dict.items() if k.startswith(prefix)},
                             self.pitf_epoch)

    def scorer(self, device: torch.device = torch.device("cpu")) -> ModelScorer:
        """The best epoch's model, re-ranker included, as an `evaluate.Scorer`."""
        model = self.model(device)
        return ModelScorer(model, *model.propagate(), item_index={item: i for i, item in enumerate(self.items)},
                           reranker=self.reranker)

    def user_position(self, user: str) -> int:
        """The user's row in the representations, -1 for a user without training posts."""
        user = normalize_user(user) or ""
        return self.users.index(user) if user in self.users else -1


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
    raw = read_checkpoint_file(path)
    written_as = raw.get("format") if isinstance(raw, dict) else None
    if isinstance(written_as, str) and written_as.startswith(CHECKPOINT_FORMAT.split("/")[0] + "/") \
            and written_as != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a {written_as} checkpoint; this phr reads {CHECKPOINT_FORMAT}: "
                              "upgrade phr, or retrain with this one")
    if written_as != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a phr checkpoint ({CHECKPOINT_FORMAT})")
    split = raw["split"]
    return Checkpoint(
        model_config=ModelConfig(**raw["model_config"]),
        train_config=TrainConfig(**raw["train_config"]),
        split=Split(
            train=split["train"].numpy(),
            validation=split["validation"].numpy(),
            test=split["test"].numpy(),
            seed=split["seed"],
            by=split["by"],
        ),
        users=raw["vocabulary"]["users"],
        hashtags=raw["vocabulary"]["hashtags"],
        items=raw["vocabulary"]["items"],
        modality_widths=raw["modality_widths"],
        state_dict=raw["state_dict"],
        user_representations=raw["user_representations"],
        hashtag_representations=raw["hashtag_representations"],
        best_epoch=raw["best_epoch"],
        best_metric=raw["best_metric"],
        history=raw["history"],
        completed=raw["completed"],
        stopped_early=raw["stopped_early"],
        provenance=Provenance.from_dict(raw["metadata"]),
        pitf_epoch=raw.get("pitf_epoch"),
        reranker=None if raw.get("reranker") is None else Reranker.from_dict(raw["reranker"]),
    )


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write a checkpoint's payload (as `train` builds it) atomically; a Ctrl-C during the
    write lands once the new checkpoint is in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with interrupt_after(), atomic_file(path) as temporary:
            with open(temporary, "wb") as handle:
                torch.save(payload, handle)
    except (OSError, RuntimeError) as error:  # torch reports a failed write as RuntimeError
        cause = getattr(error, "strerror", None) or " ".join(str(error).split())
        raise CheckpointError(f"{path}: cannot write the checkpoint ({cause}); the previous one is "
                              "intact: free space and rerun `phr train` to resume") from None


def split_to_dict(split: Split) -> dict[str, Any]:
    """A split as the checkpoint saves it (the inverse of what load_checkpoint reads)."""
    return {
        "train": torch.as_tensor(np.asarray(split.train, dtype=np.int64)),
        "validation": torch.as_tensor(np.asarray(split.validation, dtype=np.int64)),
        "test": torch.as_tensor(np.asarray(split.test, dtype=np.int64)),
        "seed": int(split.seed),
        "by": split.by,
    }












