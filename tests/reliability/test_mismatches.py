"""A checkpoint used with another store's encoders, stores and checkpoints from a newer
phr, damaged files: one line naming the fix, exit code 1, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest
import torch
from typer.testing import CliRunner

from phr_cli.cli import app
from reliability_data import write_text_posts
from support import media

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RANDOM = ["--random-weights", "--workers", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = write_text_posts(tmp_path_factory.mktemp("mismatch") / "posts", users=10, posts_per_user=8)
    media.write_clip(root / "clip.mp4", 1.2, size=(64, 48))
    store, checkpoint = root.parent / "features.h5", root.parent / "model.pt"
    runner = CliRunner()
    assert runner.invoke(app, ["extract", str(root), "--store", str(store), *RANDOM]).exit_code == 0
    result = runner.invoke(app, ["train", "--store", str(store), "--checkpoint", str(checkpoint), "--epochs", "2",
                                 "--dim", "8", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return store, checkpoint


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert ("Traceback" not in result.output and result.exception is None) or \
        isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: ")
    return lines[-1]


def test_a_checkpoint_with_a_store_of_other_encoders(trained, tmp_path):
    store, checkpoint = trained
    other = shutil.copy(store, tmp_path / "other.h5")
    with h5py.File(other, "a") as handle:
        encoders = json.loads(handle.attrs["encoders"])
        encoders["visual"]["weights"] = "sha256:" + "0" * 64
        handle.attrs["encoders"] = json.dumps(encoders, sort_keys=True)
    runner = CliRunner()
    evaluated = one_line_error(runner.invoke(app, ["evaluate", "--store", str(other), "--checkpoint",
                                                   str(checkpoint), "--device", "cpu"]))
    assert "was built with other encoders" in evaluated and "retrain" in evaluated
    clip = store.parent / "posts" / "clip.mp4"
    recommended = one_line_error(runner.invoke(app, ["recommend", str(clip), "--checkpoint", str(checkpoint),
                                                     "--store", str(other), "--device", "cpu"]))
    assert "other encoders" in recommended and "--store" in recommended


def test_a_store_from_a_newer_phr(trained, tmp_path):
    newer = shutil.copy(trained[0], tmp_path / "newer.h5")
    with h5py.File(newer, "a") as handle:
        handle.attrs["format_version"] = 99
    for command in (["inspect", "--store", str(newer)],
                    ["train", "--store", str(newer), "--checkpoint", str(tmp_path / "m.pt")]):
        message = one_line_error(CliRunner().invoke(app, command))
        assert "store format 99 is newer than this phr" in message and "upgrade phr" in message


def test_damaged_stores(trained, tmp_path):
    store = trained[0]
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(store.read_bytes()[: store.stat().st_size * 6 // 10])
    message = one_line_error(CliRunner().invoke(app, ["inspect", "--store", str(truncated)]))
    assert str(truncated) in message and "run `phr extract` again" in message

    flipped = shutil.copy(store, tmp_path / "flipped.h5")
    with h5py.File(flipped, "r") as handle:  # a byte inside the first chunk of visual features
        offset = handle["videos/visual"].id.get_chunk_info(0).byte_offset + 1000
    with open(flipped, "r+b") as raw:
        raw.seek(offset)
        byte = raw.read(1)
        raw.seek(offset)
        raw.write(bytes([byte[0] ^ 0xFF]))
    message = one_line_error(CliRunner().invoke(app, ["train", "--store", str(flipped), "--checkpoint",
                                                      str(tmp_path / "m.pt")]))
    assert "damaged phr feature store" in message and "move it away" in message


def test_damaged_and_newer_checkpoints(trained, tmp_path):
    store, checkpoint = trained
    torn = tmp_path / "torn.pt"
    torn.write_bytes(checkpoint.read_bytes()[:5000])
    newer = tmp_path / "newer.pt"
    raw = torch.load(checkpoint, weights_only=True)
    torch.save({**raw, "format": "phr-gcn-checkpoint/99"}, newer)
    runner = CliRunner()
    for path, expected in ((torn, "is not a readable phr checkpoint"), (newer, "upgrade phr")):
        for command in (["evaluate", "--store", str(store), "--checkpoint", str(path), "--device", "cpu"],
                        ["recommend", str(store.parent / "posts" / "clip.mp4"), "--checkpoint", str(path),
                         "--device", "cpu"]):
            assert expected in one_line_error(runner.invoke(app, command)), command
