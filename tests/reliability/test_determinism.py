"""The same seed gives the same split, the same checkpoint and the same recommendations
on CPU, through the commands users run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from phr_cli.cli import app
from phr_cli.training.checkpoint import load_checkpoint
from reliability_data import write_text_posts
from support import media

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = write_text_posts(tmp_path_factory.mktemp("determinism") / "posts", users=12, posts_per_user=10)
    media.write_clip(root / "new clip.mp4", 1.2, size=(64, 48), pattern="ocean")
    path = root.parent / "features.h5"
    result = CliRunner().invoke(app, ["extract", str(root), "--store", str(path), "--random-weights",
                                      "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return path


def train(store: Path, out: Path, seed: int) -> Path:
    result = CliRunner().invoke(app, ["train", "--store", str(store), "--checkpoint", str(out), "--epochs", "3",
                                      "--dim", "8", "--seed", str(seed), "--device", "cpu", "--restart"])
    assert result.exit_code == 0, result.output
    return out


def recommend(store: Path, checkpoint: Path) -> list:
    clip = store.parent / "posts" / "new clip.mp4"
    result = CliRunner().invoke(app, ["recommend", str(clip), "--user", "user3", "--caption", "sea waves",
                                      "--checkpoint", str(checkpoint), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_same_seed_same_split_checkpoint_and_recommendations(store, tmp_path):
    first, second = train(store, tmp_path / "a.pt", 7), train(store, tmp_path / "b.pt", 7)
    a, b = load_checkpoint(first), load_checkpoint(second)
    for part in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(a.split, part), getattr(b.split, part))
    assert a.state_dict.keys() == b.state_dict.keys()
    for name in a.state_dict:  # bit for bit; unknown post times are NaN in both
        torch.testing.assert_close(a.state_dict[name], b.state_dict[name], rtol=0, atol=0, equal_nan=True, msg=name)
    assert [h["metric"] for h in a.history] == [h["metric"] for h in b.history]
    assert recommend(store, first) == recommend(store, second)

    other = load_checkpoint(train(store, tmp_path / "c.pt", 8))
    assert not np.array_equal(other.split.test, a.split.test)  # the seed does matter
