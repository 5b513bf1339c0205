"""Training with torch.distributed: 2 CPU ranks (gloo) reach 1 rank's validation metric."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from phr_cli.extract import ExtractOptions, extract
from phr_cli.training.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TRAIN = ["--device", "cpu", "--dim", "16", "--epochs", "6", "--patience", "6", "--batch-size", "64",
         "--lr", "0.01", "--seed", "5"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Text-only posts with planted hashtags: a topic's and a personal one."""
    root = tmp_path_factory.mktemp("ddp") / "posts"
    root.mkdir()
    rng = np.random.default_rng(0)
    topics = ["sea waves beach", "forest trees walk", "city night lights", "fire camp wood"]
    lines = ["video,user,caption,hashtags"] + [
        f",user{user},{topics[topic]} {post},topic{topic} mine{user % 5}"
        for user in range(24) for post, topic in enumerate(rng.integers(4, size=12))]
    (root / "posts.csv").write_text("\n".join(lines) + "\n")
    path = root.parent / "features.h5"
    extract(root, path, ExtractOptions(device="cpu", workers=0, random_weights=True))
    return path


def train(store: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "phr_cli", "train", "--store", str(store), "--checkpoint", str(out),
                           *TRAIN, *extra], env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done


def test_two_gloo_ranks_reach_the_metric_of_one(store, tmp_path):
    single = train(store, tmp_path / "one.pt")
    double = train(store, tmp_path / "two.pt", "--nproc", "2")
    one, two = load_checkpoint(tmp_path / "one.pt"), load_checkpoint(tmp_path / "two.pt")
    # The same steps on the whole batch, split over two ranks: equal up to summation order.
    assert one.best_metric == pytest.approx(two.best_metric, abs=0.02)
    # The first epoch's mean loss agrees to rounding (the same maths); later epochs drift
    # apart as Adam amplifies the rounding of a different summation order.
    assert two.history[0]["loss"] == pytest.approx(one.history[0]["loss"], rel=1e-4)
    np.testing.assert_array_equal(one.split.test, two.split.test)
    assert "best epoch" in single.stdout and double.stdout.count("best epoch") == 1  # rank 0 reports
