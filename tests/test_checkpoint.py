"""The checkpoint record: one typed form on disk and in memory, and the formats CHANGELOG names."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from phr_cli.data.graph import Split
from phr_cli.data.provenance import Provenance
from phr_cli.data.store import FORMAT_VERSION
from phr_cli.errors import CheckpointError
from phr_cli.model.config import EvidenceConfig, Fusion, ItemIdConfig, ModelConfig, NetworkConfig
from phr_cli.training.checkpoint import CHECKPOINT_FORMAT, Checkpoint, ResumeState, WarmStart, load_checkpoint
from phr_cli.training.config import StepPropagation, TrainConfig

CHANGELOG = Path(__file__).parent.parent / "CHANGELOG.md"


def newest_format(file: str) -> str:
    """The version cell of the first row of CHANGELOG's format table for `file` (newest first),
    e.g. "`format_version` 2"."""
    for line in CHANGELOG.read_text(encoding="utf-8").splitlines():
        if line.startswith(f"| {file}"):
            return line.split("|")[2].strip()
    raise AssertionError(f"CHANGELOG.md has no row for {file}")


def test_the_changelog_names_the_formats_the_code_writes():
    assert newest_format("checkpoint") == f"`format` `{CHECKPOINT_FORMAT}`"
    assert newest_format("feature store") == f"`format_version` {FORMAT_VERSION}"


def record() -> Checkpoint:
    return Checkpoint(
        model_config=ModelConfig(NetworkConfig(dim=8, fusion=Fusion.SUM), EvidenceConfig(recency=False),
                                 ItemIdConfig(dropout=0.25), factors=False),
        train_config=TrainConfig(epochs=3, device="cpu", step_propagation=StepPropagation.FULL, rerank=False),
        split=Split(train=np.array([2, 0]), validation=np.array([1]), test=np.array([3]), seed=4, by="item"),
        users=["ana"], hashtags=["a", "b"], items=["x", "y"], modality_widths={"textual": 100},
        provenance=Provenance(store="features.h5", user_hashtags={"ana": ["a"]}),
        state_dict={"w": torch.arange(3.0)}, user_representations=torch.zeros(1, 8),
        hashtag_representations=torch.ones(2, 8), best_epoch=2, best_metric=0.5,
        history=[{"epoch": 1.0, "loss": 0.7}], completed=True,
        resume=ResumeState(epoch=3, bad_epochs=1, model={"w": torch.ones(3)}, optimizer={"state": {}},
                           torch_rng=torch.get_rng_state(), cuda_rng=None, numpy_rng={"state": 1}),
    )


def test_a_checkpoint_reads_back_as_it_was_written(tmp_path):
    written = record()
    written.save(tmp_path / "model.pt")
    read = load_checkpoint(tmp_path / "model.pt")
    assert read.model_config == written.model_config and read.train_config == written.train_config
    assert isinstance(read.model_config.network.fusion, Fusion)  # choices come back as enums, not strings
    assert read.train_config.step_propagation is StepPropagation.FULL
    assert np.array_equal(read.split.train, written.split.train) and read.split.by == "item"
    assert read.provenance == written.provenance and read.history == written.history
    assert read.resume is not None and written.resume is not None
    assert read.resume.epoch == 3 and torch.equal(read.resume.torch_rng, written.resume.torch_rng)
    assert torch.equal(read.state_dict["w"], written.state_dict["w"])
    # what is on disk is plain values and tensors: the safe unpickler reads it
    raw = torch.load(tmp_path / "model.pt", weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["model_config"]["network"]["fusion"] == "sum"


def test_the_previous_formats_still_read(tmp_path):
    raw = record().to_dict()
    raw["format"] = "phr-gcn-checkpoint/8"
    del raw["warm_start"]
    torch.save(raw, tmp_path / "eight.pt")
    assert load_checkpoint(tmp_path / "eight.pt").warm_start is None
    raw["format"] = "phr-gcn-checkpoint/7"
    del raw["stages"], raw["store_relative"]
    torch.save(raw, tmp_path / "seven.pt")
    read = load_checkpoint(tmp_path / "seven.pt")
    assert read.stages == {} and read.store_relative == "" and read.best_epoch == 2 and read.warm_start is None


def test_the_origin_of_a_warm_start_reads_back(tmp_path):
    written = record()
    written.warm_start = WarmStart("/models/old.pt", "ab" * 32, {"users": [1, 2], "hashtags": [2, 2], "items": [0, 2]})
    written.save(tmp_path / "model.pt")
    assert load_checkpoint(tmp_path / "model.pt").warm_start == written.warm_start
    assert written.warm_start.summary() == "1 of 2 users, 2 of 2 hashtags, 0 of 2 items rows carried over"


def test_the_store_is_found_relative_to_the_checkpoint_wherever_both_moved(tmp_path, monkeypatch):
    first = tmp_path / "first"
    (first / "data").mkdir(parents=True)
    (first / "data" / "features.h5").write_bytes(b"store")
    written = record()
    written.provenance.store = str(first / "data" / "features.h5")
    written.save(first / "models" / "model.pt")
    assert written.store_relative == "../data/features.h5"
    moved = tmp_path / "elsewhere" / "project"
    moved.parent.mkdir()
    first.rename(moved)
    monkeypatch.chdir(tmp_path)  # another working folder than training's
    read = load_checkpoint(Path("elsewhere/project/models/model.pt"))
    assert read.store_candidates() == [Path("elsewhere/project/data/features.h5"), first / "data" / "features.h5"]
    assert read.find_store() == Path("elsewhere/project/data/features.h5")
    (moved / "data" / "features.h5").unlink()
    assert read.find_store() is None


def test_another_format_is_refused_in_one_line(tmp_path):
    raw = record().to_dict()
    raw["format"] = "phr-gcn-checkpoint/6"
    torch.save(raw, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"is a phr-gcn-checkpoint/6 checkpoint; this phr reads "
                                              + re.escape(CHECKPOINT_FORMAT)):
        load_checkpoint(tmp_path / "old.pt")
