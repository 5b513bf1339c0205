"""`phr store`: a store's folders listed, re-rooted after the videos moved, dropped; post ids
that do not depend on where a folder lives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from phr_cli.cli import app
from phr_cli.data.store import StoreLock, load_store
from support import media

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RANDOM = ["--random-weights", "--workers", "0", "--device", "cpu"]


def invoke(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def write_posts(root: Path, rows: list[str]) -> Path:
    root.mkdir(parents=True)
    (root / "posts.csv").write_text("video,user,caption,hashtags\n" + "".join(r + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A store of two folders: `trips` (a clip and a text post) and `notes` (text posts)."""
    base = tmp_path_factory.mktemp("store")
    trips = write_posts(base / "parent" / "trips", ["a.mp4,ana,at the sea,sea", ",ben,a long drive,road"])
    media.write_clip(trips / "a.mp4", 1.2, size=(64, 48))
    notes = write_posts(base / "notes", [",cem,shopping list,home", ",dia,recipe,food"])
    store = base / "features.h5"
    for folder in (trips, notes):
        assert invoke("extract", folder, "--store", store, *RANDOM).exit_code == 0
    return trips, notes, store


@pytest.fixture
def store(built, tmp_path) -> Path:
    return Path(shutil.copy(built[2], tmp_path / "features.h5"))


def folders(store: Path) -> list[dict]:
    shown = invoke("store", "folders", "--store", store, "--json")
    assert shown.exit_code == 0, shown.output
    return json.loads(shown.stdout)


def test_folders_lists_each_folder_with_its_posts_and_statuses(built, store):
    trips, notes, _ = built
    assert folders(store) == [
        {"folder": str(trips.resolve()), "posts": 2, "statuses": {"ok": 1, "text_only": 1}, "exists": True},
        {"folder": str(notes.resolve()), "posts": 2, "statuses": {"text_only": 2}, "exists": True},
    ]
    table = invoke("store", "folders", "--store", store)
    assert table.exit_code == 0 and "ok 1, text_only 1" in table.stdout and "text_only 2" in table.stdout


def test_a_moved_folder_keeps_its_post_ids_and_is_renamed_in_place(built, store, tmp_path):
    trips, notes, _ = built
    before = load_store(store).posts
    moved = Path(shutil.copytree(trips.parent, tmp_path / "elsewhere")) / "trips"
    fresh = tmp_path / "fresh.h5"  # the moved folder alone, extracted from its new place
    assert invoke("extract", moved, "--store", fresh, *RANDOM).exit_code == 0
    assert load_store(fresh).posts.post_ids().tolist() == before.post_ids().tolist()[:2]

    gone = [entry for entry in folders(store) if entry["folder"] == str(trips.resolve())]
    renamed = invoke("store", "rename", trips, moved, "--store", store)
    assert renamed.exit_code == 0, renamed.output
    assert f"2 posts of {trips.resolve()} now under {moved.resolve()}" in renamed.stdout
    after = load_store(store).posts
    assert after.folder == [str(moved.resolve())] * 2 + [str(notes.resolve())] * 2 and gone
    assert after.post_ids().tolist() == before.post_ids().tolist() and after.path == before.path
    again = invoke("extract", moved, "--store", store, *RANDOM)
    assert again.exit_code == 0, again.output
    assert "0 added, 0 updated, 2 unchanged, 0 removed (this folder); 2 kept (other folders)" in again.stdout
    assert not Path(str(store) + ".lock").exists()


def test_dropping_a_folder_removes_its_posts_and_the_videos_only_it_used(built, store):
    trips, notes, _ = built
    dropped = invoke("store", "drop", trips, "--store", store)
    assert dropped.exit_code == 0, dropped.output
    assert f"dropped 2 posts and 1 videos of {trips.resolve()}" in dropped.stdout
    contents = load_store(store)
    assert contents.posts.folder == [str(notes.resolve())] * 2 and contents.videos.key == []
    assert [entry["folder"] for entry in folders(store)] == [str(notes.resolve())]


def test_edits_that_cannot_be_made_are_one_line_errors_and_leave_the_store_as_it_was(built, store, tmp_path):
    trips, notes, _ = built
    before = store.read_bytes()
    (tmp_path / "a-file").write_text("not a folder")
    cases = [
        (("drop", tmp_path / "unknown"), f"has no posts from {tmp_path / 'unknown'}; its folders: {trips.resolve()}"),
        (("rename", trips, tmp_path / "a-file"), "not a folder; move the videos there first"),
        (("rename", trips, notes), f"already has posts from {notes.resolve()}; `phr store drop` one"),
        (("rename", trips, trips), "recorded there already; nothing to rename"),
    ]
    for arguments, message in cases:
        result = invoke("store", *arguments, "--store", store)
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    missing = invoke("store", "drop", trips, "--store", tmp_path / "none" / "features.h5")
    assert missing.exit_code == 1 and "no feature store here" in missing.output
    assert not (tmp_path / "none").exists()
    with StoreLock(store):
        busy = invoke("store", "drop", trips, "--store", store)
    assert busy.exit_code == 1 and "another phr process is writing this store" in busy.output
    assert store.read_bytes() == before and not Path(str(store) + ".lock").exists()
