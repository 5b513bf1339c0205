"""`phr inspect PATH`: a store's files, users and hashtags; a checkpoint; a manifest; anything else named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phr_cli.cli import app
from support import media

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def invoke(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def store_and_checkpoint(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("inspect") / "posts"
    root.mkdir()
    media.write_zero_bytes(root / "broken.mp4")
    rows = [f",user{i % 3},words {i},tag{i % 4} all" for i in range(12)] + ["gone.mp4,user0,a lost clip,lost"]
    (root / "posts.csv").write_text("video,user,caption,hashtags\n" + "\n".join(rows) + "\n")
    store, checkpoint = root.parent / "features.h5", root.parent / "model.pt"
    assert invoke("extract", root, "--store", store, "--random-weights", "--workers", "0", "--device", "cpu") \
        .exit_code == 1  # two files failed
    trained = invoke("train", "--store", store, "--checkpoint", checkpoint, "--epochs", "1", "--dim", "8",
                     "--device", "cpu")
    assert trained.exit_code == 0, trained.output
    return root, store, checkpoint


def test_a_store_lists_files_users_and_hashtags(store_and_checkpoint):
    root, store, _ = store_and_checkpoint
    shown = invoke("inspect", store, "--json", "--limit", "2")
    summary = json.loads(shown.stdout)
    assert summary["kind"] == "store" and summary["failed_files"] == 2
    assert sorted((f["file"], f["status"]) for f in summary["files"]) == [("broken.mp4", "corrupt"),
                                                                          ("gone.mp4", "missing")]
    assert all(f["reason"] for f in summary["files"]) and {f["folder"] for f in summary["files"]} == {
        str(root.resolve())}
    assert summary["top_hashtags"] == [["all", 12], ["tag0", 3]]  # top two of six
    assert summary["top_users"][0] == ["user0", 5]
    table = invoke("inspect", store, "--limit", "2")
    assert table.exit_code == 0 and "broken.mp4" in table.stdout and "top 2 of 6" in table.stdout
    failures = json.loads(invoke("inspect", "--store", store, "--failures", "--json").stdout)
    assert {f["status"] for f in failures["files"]} == {"corrupt", "missing"}
    assert "top_users" not in failures and "top_hashtags" not in failures
    only = invoke("inspect", "--store", store, "--failures")
    assert only.exit_code == 0 and "broken.mp4" in only.stdout and "gone.mp4" in only.stdout
    assert "user0" not in only.stdout and "tag0" not in only.stdout and "folder" in only.stdout


def test_a_video_at_two_paths_is_listed_at_both(tmp_path):
    root = tmp_path / "posts"
    root.mkdir()
    media.write_clip(root / "a.mp4", 1.2, size=(64, 48))
    media.copy_clip(root / "a.mp4", root / "copy of a.mp4")
    store = tmp_path / "s.h5"
    assert invoke("extract", root, "--store", store, "--random-weights", "--workers", "0", "--device", "cpu") \
        .exit_code == 0
    files = json.loads(invoke("inspect", store, "--json").stdout)["files"]
    assert [(f["folder"], f["file"], f["status"]) for f in files] == [
        (str(root.resolve()), "a.mp4", "ok"), (str(root.resolve()), "copy of a.mp4", "ok")]
    table = invoke("inspect", store)
    assert "copy of a.mp4" in table.stdout and "folder" in table.stdout


def test_a_checkpoint_is_summarised(store_and_checkpoint):
    _, store, checkpoint = store_and_checkpoint
    summary = json.loads(invoke("inspect", checkpoint, "--json").stdout)
    assert summary["kind"] == "checkpoint" and summary["model_config"]["network"]["dim"] == 8
    assert summary["best_epoch"] == 1 and summary["completed"] and summary["provenance"]["store"] == str(store)
    assert summary["split"]["train"] + summary["split"]["validation"] + summary["split"]["test"] == 12
    shown = invoke("inspect", checkpoint)
    assert shown.exit_code == 0 and "best epoch" in shown.stdout and "delete" not in shown.output


def test_a_manifest_is_summarised_with_its_problems(store_and_checkpoint):
    root, _, _ = store_and_checkpoint
    summary = json.loads(invoke("inspect", root / "posts.csv", "--json").stdout)
    assert summary["kind"] == "manifest" and summary["posts"] == 13 and summary["users"] == 3
    assert any("gone.mp4: file not found" in problem for problem in summary["problems"])


def test_other_paths_are_named_for_what_they_are(store_and_checkpoint, tmp_path):
    root, _store, checkpoint = store_and_checkpoint
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    for path, expected in ((root, "is a folder"), (notes, "is not a phr feature store, checkpoint or posts manifest"),
                           (tmp_path / "nothing.h5", "no such file")):
        result = invoke("inspect", path)
        assert result.exit_code == 1 and expected in result.output and "delete" not in result.output
    as_store = invoke("train", "--store", checkpoint, "--checkpoint", tmp_path / "m.pt", "--device", "cpu")
    assert as_store.exit_code == 1 and "is a PyTorch file (a phr checkpoint?), not a feature store" in as_store.output
