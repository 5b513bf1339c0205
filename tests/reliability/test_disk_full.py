"""A full disk fails `extract` and `train` cleanly: a one-line error naming the file,
exit code 1, and what was there before still reads; a rerun with space completes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phr_cli.cli import app
from phr_cli.data.store import load_store
from phr_cli.training.checkpoint import load_checkpoint
from support import media

pytestmark = pytest.mark.usefixtures("one_torch_thread")
EXTRACT = ["--random-weights", "--workers", "0", "--device", "cpu"]


@pytest.fixture
def small_disk(tmp_path):
    """Mount a tmpfs whose size the test sets; unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = []

    def mount(kib: int) -> Path:
        if mounted:
            subprocess.run(["umount", str(mount_point)], check=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(mount_point)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounted.append(True)
        return mount_point

    yield mount
    if mounted:
        subprocess.run(["umount", str(mount_point)], check=True)


def used_kib(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) // 1024 + 1


def test_extract_on_a_full_disk_keeps_the_store_and_resumes(tmp_path, small_disk):
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(3):
        media.write_clip(clips / f"first{i}.mp4", 1.0, size=(64, 48), seed=i)
    runner = CliRunner()
    staging = tmp_path / "staging"
    staging.mkdir()
    assert runner.invoke(app, ["extract", str(clips), "--store", str(staging / "f.h5"), *EXTRACT]).exit_code == 0

    disk = small_disk(used_kib(staging) + 24)  # room for the store and a little more, not a copy
    shutil.copy(staging / "f.h5", disk / "f.h5")
    for i in range(12):
        media.write_clip(clips / f"more{i}.mp4", 1.0, size=(64, 48), seed=10 + i)
    full = runner.invoke(app, ["extract", str(clips), "--store", str(disk / "f.h5"), *EXTRACT])
    assert full.exit_code == 1
    error = full.output.strip().splitlines()[-1]
    assert error.startswith("error: ") and "No space left on device" in error and str(disk) in error
    assert "Traceback" not in full.output
    kept = load_store(disk / "f.h5")
    assert len(kept.videos) >= 3 and kept.posts is not None and len(kept.posts.user) == 3
    assert not list(disk.rglob("*.tmp-*")), "temporary files left behind"

    small_disk(4096)  # the same folder, now with room (a tmpfs loses its files: copy back)
    shutil.copy(staging / "f.h5", disk / "f.h5")
    done = runner.invoke(app, ["extract", str(clips), "--store", str(disk / "f.h5"), *EXTRACT])
    assert done.exit_code == 0, done.output
    assert len(load_store(disk / "f.h5").videos) == 15


def test_train_on_a_full_disk_keeps_the_last_checkpoint(tmp_path, small_disk):
    folder = tmp_path / "posts"
    folder.mkdir()
    (folder / "posts.csv").write_text("video,user,caption,hashtags\n" + "".join(
        f",user{i % 6},words {i} about topic {i % 3},topic{i % 3} u{i % 6}\n" for i in range(90)))
    runner = CliRunner()
    store = tmp_path / "f.h5"
    assert runner.invoke(app, ["extract", str(folder), "--store", str(store), *EXTRACT]).exit_code == 0
    train = ["train", "--store", str(store), "--device", "cpu", "--dim", "8", "--patience", "50"]
    staging = tmp_path / "model.pt"
    assert runner.invoke(app, [*train, "--checkpoint", str(staging), "--epochs", "2"]).exit_code == 0

    disk = small_disk(staging.stat().st_size // 1024 + 8)  # one checkpoint fits, not a second
    shutil.copy(staging, disk / "model.pt")
    full = runner.invoke(app, [*train, "--checkpoint", str(disk / "model.pt"), "--epochs", "4"])
    assert full.exit_code == 1 and "Traceback" not in full.output
    error = full.output.strip().splitlines()[-1]
    assert error.startswith("error: ") and str(disk / "model.pt") in error and "free space" in error
    assert len(load_checkpoint(disk / "model.pt").history) == 2
    assert not list(disk.glob("*.tmp*"))
