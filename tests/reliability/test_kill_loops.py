"""kill -9 of `extract` and `train` at random moments: the store always opens, every
finished video is there once, a rerun completes it, and the end state equals an
uninterrupted run's; `train` resumes from its last checkpoint.

Quick by default (two kills each); `pytest --slow` runs the long loops.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import FAST_SAMPLING
from phr_cli.data.store import StoreError, load_store, parts_dir
from phr_cli.extract import ExtractOptions, extract
from phr_cli.training.checkpoint import load_checkpoint
from reliability_data import write_clips, write_text_posts

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
EXTRACT = """
import sys
from pathlib import Path
from conftest import FAST_SAMPLING
from phr_cli.extract import ExtractOptions, extract
extract(Path(sys.argv[1]), Path(sys.argv[2]), ExtractOptions(
    device="cpu", workers=1, random_weights=True, sampling=FAST_SAMPLING, batch_size=1,
    commit_every=1))
"""
TRAIN_ARGS = ["--device", "cpu", "--dim", "16", "--patience", "1000", "--batch-size", "32",
              "--lr", "0.01", "--seed", "3"]


def run_killed(command: list[str], after_seconds: float) -> bool:
    """Run `command`, SIGKILL it and its workers after `after_seconds`; False if it finished first."""
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=after_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return True
    assert process.returncode == 0, stderr.decode()
    return False


def run_to_the_end(command: list[str]) -> None:
    done = subprocess.run(command, env=ENV, capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr.decode()


def stored_keys_per_file(store: Path) -> list[str]:
    """Keys of the main file and of every segment, duplicates kept."""
    keys = []
    for path in ([store] if store.exists() else []) + sorted(parts_dir(store).glob("seg-*.h5")):
        with h5py.File(path, "r") as handle:
            keys += [k.decode() for k in handle["videos/key"][()]]
    return keys


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return write_clips(tmp_path_factory.mktemp("kill") / "clips", 10)


@pytest.fixture(scope="module")
def clean_store(clips) -> Path:
    path = clips.parent / "clean.h5"
    extract(clips, path, OPTIONS)
    return path


OPTIONS = ExtractOptions(device="cpu", workers=0, random_weights=True, sampling=FAST_SAMPLING)


def _kill_extract_loop(clips: Path, clean_store: Path, tmp_path: Path, kills: int, seed: int,
                       longest: float) -> int:
    store = tmp_path / "killed.h5"
    command = [sys.executable, "-c", EXTRACT, str(clips), str(store)]
    rng = random.Random(seed)
    killed = 0
    for _ in range(kills):
        if not run_killed(command, rng.uniform(1.0, longest)):
            break
        killed += 1
        keys = stored_keys_per_file(store)
        assert len(keys) == len(set(keys)), "a video stored twice"
        try:
            survived = load_store(store)  # opens after any kill...
        except StoreError as error:  # ...unless killed before the first segment
            assert "no feature store here" in str(error) and not keys
            continue
        assert set(survived.videos.key) == set(keys)
    run_to_the_end(command)
    resumed, clean = load_store(store), load_store(clean_store)
    assert resumed.pending_segments == 0 and stored_keys_per_file(store) == clean.videos.key
    assert resumed.videos.status == clean.videos.status
    np.testing.assert_allclose(np.stack(resumed.videos.visual), np.stack(clean.videos.visual), atol=1e-4)
    np.testing.assert_allclose(np.stack(resumed.videos.acoustic), np.stack(clean.videos.acoustic), atol=1e-4)
    assert resumed.posts.user == clean.posts.user and resumed.posts.hashtags == clean.posts.hashtags
    np.testing.assert_allclose(resumed.posts.textual, clean.posts.textual, atol=1e-5)
    return killed


def test_extract_survives_kill_9_at_random_moments(clips, clean_store, tmp_path):
    assert _kill_extract_loop(clips, clean_store, tmp_path, kills=2, seed=1, longest=25.0) >= 1


@pytest.mark.slow
def test_extract_survives_a_long_kill_loop(tmp_path):
    many = write_clips(tmp_path / "many", 40)
    clean = tmp_path / "clean.h5"
    extract(many, clean, OPTIONS)
    # Each run spends a few seconds starting (torch, encoders), then about a second a video.
    assert _kill_extract_loop(many, clean, tmp_path, kills=12, seed=2, longest=14.0) >= 8


@pytest.fixture(scope="module")
def text_store(tmp_path_factory) -> Path:
    root = write_text_posts(tmp_path_factory.mktemp("train") / "posts")
    store = root.parent / "text.h5"
    extract(root, store, OPTIONS)
    return store


def _train_command(store: Path, checkpoint: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "phr_cli", "train", "--store", str(store), "--checkpoint", str(checkpoint),
            "--epochs", str(epochs), *TRAIN_ARGS]


def _kill_train_loop(text_store: Path, tmp_path: Path, kills: int, seed: int, epochs: int,
                     longest: float) -> int:
    clean = tmp_path / "clean.pt"
    run_to_the_end(_train_command(text_store, clean, epochs))
    checkpoint = tmp_path / "killed.pt"
    command = _train_command(text_store, checkpoint, epochs)
    rng = random.Random(seed)
    killed, epochs_seen = 0, []
    for _ in range(kills):
        if not run_killed(command, rng.uniform(2.0, longest)):
            break
        killed += 1
        if checkpoint.exists():  # written atomically: whole or absent
            epochs_seen.append(len(load_checkpoint(checkpoint).history))
    assert epochs_seen == sorted(epochs_seen), "a rerun went back instead of resuming"
    run_to_the_end(command)
    resumed, reference = load_checkpoint(checkpoint), load_checkpoint(clean)
    assert resumed.completed and resumed.best_epoch == reference.best_epoch
    assert [h["metric"] for h in resumed.history] == [h["metric"] for h in reference.history]
    for name, tensor in reference.state_dict.items():  # bit for bit; unknown post times are NaN in both
        torch.testing.assert_close(resumed.state_dict[name], tensor, rtol=0, atol=0, equal_nan=True, msg=name)
    return killed


def test_train_resumes_after_kill_9_at_random_moments(text_store, tmp_path):
    assert _kill_train_loop(text_store, tmp_path, kills=2, seed=1, epochs=12, longest=12.0) >= 1


@pytest.mark.slow
def test_train_survives_a_long_kill_loop(text_store, tmp_path):
    # Starting takes a few seconds; 300 epochs of this small set take longer than all the kills.
    assert _kill_train_loop(text_store, tmp_path, kills=10, seed=2, epochs=300, longest=10.0) >= 8
