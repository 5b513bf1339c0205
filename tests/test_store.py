import errno
import threading

import h5py
import numpy as np
import pytest

from phr_cli.data import store as store_module
from phr_cli.data.store import (
    FORMAT_VERSION,
    PostRows,
    StoreError,
    StoreWriter,
    TextProjection,
    load_store,
    merge_posts,
    parts_dir,
    summarize,
)

ENCODERS = {"visual": {"spec": {"name": "v", "version": "1"}, "weights": "random-init(seed=0)"}}
SAMPLING = {"max_frames": 2}


def video(key: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return dict(key=key, path=f"{key}.mp4", duration=1.0, status="ok", reason="", n_frames=2,
                n_audio_examples=1, visual=rng.random(2048, dtype=np.float32),
                acoustic=rng.random(128, dtype=np.float32), visual_mask=True, acoustic_mask=True)


def posts(keys: list[str]) -> PostRows:
    n = len(keys)
    return PostRows(video_key=keys, path=[f"{k}.mp4" for k in keys], user=["u"] * n,
                    caption=["c"] * n, hashtags=[["a", "b"]] * n, status=["ok"] * n,
                    text_embedding=np.zeros((n, 384), np.float32),
                    textual=np.zeros((n, 100), np.float32), textual_mask=np.ones(n, bool))


def test_segments_are_readable_before_finalize_and_merged_after(tmp_path):
    path = tmp_path / "features.h5"
    with StoreWriter(path, ENCODERS, SAMPLING) as writer:
        writer.add(**video("b", 1))
        writer.commit()
        writer.add(**video("a", 2))
        writer.commit()
        partial = load_store(path)
        assert partial.pending_segments == 2 and sorted(partial.videos.key) == ["a", "b"]
        writer.finalize(posts(["a", "b"]), None)
    contents = load_store(path)
    assert contents.videos.key == ["a", "b"]  # sorted by key
    assert contents.pending_segments == 0 and not parts_dir(path).exists()
    np.testing.assert_array_equal(contents.videos.visual[0], video("a", 2)["visual"])
    assert contents.posts.hashtags == [["a", "b"], ["a", "b"]]


def test_duplicate_keys_in_segments_count_once_and_resume_skips_them(tmp_path):
    path = tmp_path / "features.h5"
    with StoreWriter(path, ENCODERS, SAMPLING) as writer:
        writer.add(**video("a", 1))
        writer.commit()
    with StoreWriter(path, ENCODERS, SAMPLING) as writer:
        assert set(writer.statuses()) == {"a"}
        writer.add(**video("a", 1))
        writer.commit()
    assert load_store(path).videos.key == ["a"]


def test_background_commits_land_one_at_a_time_and_close_waits_for_them(tmp_path, monkeypatch):
    path = tmp_path / "features.h5"
    release = threading.Event()
    write_segment = StoreWriter._write_segment

    def slow_write(self, name, rows):
        assert release.wait(10)
        write_segment(self, name, rows)

    monkeypatch.setattr(StoreWriter, "_write_segment", slow_write)
    writer = StoreWriter(path, ENCODERS, SAMPLING)
    writer.add(**video("b", 1))
    writer.commit(wait=False)  # returns while the segment is still being written
    assert not parts_dir(path).exists() or not list(parts_dir(path).iterdir())
    writer.add(**video("a", 2))
    release.set()
    writer.close()  # waits for the segment in flight, then writes the pending one
    assert sorted(load_store(path).videos.key) == ["a", "b"]
    assert load_store(path).pending_segments == 2


def test_a_failed_background_commit_is_raised_by_the_next_commit(tmp_path, monkeypatch):
    path = tmp_path / "features.h5"

    def full_disk(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    with StoreWriter(path, ENCODERS, SAMPLING) as writer:
        writer.add(**video("a", 1))
        writer.commit()
        monkeypatch.setattr(store_module, "_write_atomically", full_disk)
        writer.add(**video("b", 2))
        writer.commit(wait=False)
        with pytest.raises(StoreError,
                           match=r"cannot write \(No space left on device\); what was stored before is intact"):
            writer.commit(wait=False)
        monkeypatch.undo()
    assert load_store(path).videos.key == ["a"]


def test_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    path = tmp_path / "features.h5"
    with StoreWriter(path, ENCODERS, SAMPLING), pytest.raises(StoreError, match="another phr process is writing"):
        StoreWriter(path, ENCODERS, SAMPLING)


def test_other_encoders_are_refused(tmp_path):
    path = tmp_path / "features.h5"
    with StoreWriter(path, ENCODERS, SAMPLING) as writer:
        writer.add(**video("a", 1))
    other = {"visual": {"spec": {"name": "v", "version": "1"}, "weights": "sha256-of-real-weights"}}
    with pytest.raises(StoreError, match="other encoders"):
        StoreWriter(path, other, SAMPLING)


def test_stores_made_before_the_reference_mix_and_preprocessing_are_refused(tmp_path):
    from phr_cli.encoders.registry import DEFAULT_ENCODERS, FEATURES_REVISION

    now = {m: {"spec": spec.to_dict(), "weights": "w"} for m, spec in DEFAULT_ENCODERS.items()}
    before = {m: {"spec": {**entry["spec"], "version": entry["spec"]["version"].removesuffix(f"/{FEATURES_REVISION}")},
                  "weights": "w"} for m, entry in now.items()}
    path = tmp_path / "features.h5"
    with StoreWriter(path, before, SAMPLING) as writer:
        writer.add(**video("a", 1))
    with pytest.raises(StoreError, match="other encoders"):
        StoreWriter(path, now, SAMPLING)


def test_unreadable_newer_and_missing_stores_explain_the_fix(tmp_path):
    with pytest.raises(StoreError, match="run `phr extract"):
        load_store(tmp_path / "none.h5")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all")
    with pytest.raises(StoreError, match="not a readable phr feature store"):
        load_store(garbage)
    newer = tmp_path / "newer.h5"
    with StoreWriter(newer, ENCODERS, SAMPLING) as writer:
        writer.finalize(posts([]), None)
    with h5py.File(newer, "a") as handle:
        handle.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(StoreError, match="newer than this phr"):
        load_store(newer)


def test_stale_temporary_files_are_cleaned_and_summary_counts(tmp_path):
    path = tmp_path / "features.h5"
    (tmp_path / "features.h5.tmp-999").write_bytes(b"half written")
    with StoreWriter(path, ENCODERS, SAMPLING) as writer:
        writer.add(**video("a", 1))
        writer.finalize(posts(["a", ""]), None)
    assert not (tmp_path / "features.h5.tmp-999").exists()
    summary = summarize(path)
    assert summary["videos"] == 1 and summary["posts"] == 2 and summary["text_only_posts"] == 1
    assert summary["encoders"]["visual"]["weights"] == "random-init(seed=0)"


@pytest.mark.parametrize("in_memory", [True, False])
def test_merge_streams_blocks_from_many_sources_into_key_order(tmp_path, monkeypatch, in_memory):
    """Blocks smaller than a source and sources interleaved by key: the merge must equal
    sorting every row in memory, whichever way the file is written."""
    from phr_cli.data import store as store_module

    monkeypatch.setattr(store_module, "MERGE_BLOCK_ROWS", 3)
    if not in_memory:
        monkeypatch.setattr(store_module, "IN_MEMORY_BYTES", 0)
    path = tmp_path / "features.h5"
    keys = [f"{i:02d}" for i in range(20)]
    rng = np.random.default_rng(0)
    with StoreWriter(path, ENCODERS, SAMPLING) as writer:
        for key in rng.permutation(keys)[:12]:
            writer.add(**video(key, int(key)))
            if rng.random() < 0.4:
                writer.commit()
        writer.finalize(posts(keys[:1]), None)
    with StoreWriter(path, ENCODERS, SAMPLING) as writer:
        known = set(writer.statuses())
        for key in rng.permutation(keys):
            if key not in known:
                writer.add(**{**video(key, int(key)), "status": f"s{key}"})
                writer.commit()
        writer.add(**video(keys[0], 99))  # extracted again (a retried failure): the newest copy wins
        writer.finalize(posts(keys), None)
    contents = load_store(path)
    assert contents.videos.key == keys
    for i, key in enumerate(keys):
        seed = 99 if i == 0 else int(key)
        np.testing.assert_array_equal(contents.videos.visual[i], video(key, seed)["visual"])
        np.testing.assert_array_equal(contents.videos.acoustic[i], video(key, seed)["acoustic"])
        assert contents.videos.status[i] in ("ok", f"s{key}") and contents.videos.path[i] == f"{key}.mp4"


def test_a_damaged_store_names_the_fix(tmp_path):
    path = tmp_path / "features.h5"
    with StoreWriter(path, ENCODERS, SAMPLING) as writer:
        writer.add(**video("a", 1))
        writer.finalize(posts(["a"]), None)
    with h5py.File(path, "a") as handle:
        del handle["videos/visual"]
    with pytest.raises(StoreError, match=r"damaged phr feature store .* move it away and run `phr extract` again"):
        load_store(path)


def test_post_times_and_sources_round_trip_and_a_format_1_store_reads_without_them(tmp_path):
    path = tmp_path / "features.h5"
    rows = posts(["a", ""])
    rows.time, rows.source = np.array([1714557600.5, np.nan]), ["posts.jsonl:1", "posts.jsonl:2"]
    with StoreWriter(path, ENCODERS, SAMPLING) as writer:
        writer.add(**video("a", 1))
        writer.finalize(rows, None)
    stored = load_store(path).posts
    np.testing.assert_array_equal(stored.time, [1714557600.5, np.nan])
    assert stored.source == ["posts.jsonl:1", "posts.jsonl:2"]

    with h5py.File(path, "a") as handle:  # what format 1 wrote: no time, no source
        handle.attrs["format_version"] = 1
        del handle["posts/time"], handle["posts/source"]
    old = load_store(path)
    assert old.attributes["format_version"] == 1
    assert np.isnan(old.posts.time).all() and old.posts.source == ["", ""]


def folder_posts(folder: str, rows: list[tuple[str, str, str]]) -> PostRows:
    """(path, user, hashtags) rows from one folder."""
    n = len(rows)
    return PostRows(video_key=[f"k{p}" if p else "" for p, _, _ in rows], path=[p for p, _, _ in rows],
                    user=[u for _, u, _ in rows], caption=["c"] * n, hashtags=[t.split() for _, _, t in rows],
                    status=["ok"] * n, folder=[folder] * n, text_embedding=np.zeros((n, 384), np.float32),
                    textual=np.zeros((n, 100), np.float32), textual_mask=np.ones(n, bool))


def test_merging_a_folder_keeps_the_others_and_updates_its_own_in_place():
    stored = PostRows.concat(folder_posts("/a", [("1.mp4", "ana", "x"), ("2.mp4", "ben", "y")]),
                             folder_posts("/b", [("3.mp4", "cem", "z")]))
    again = folder_posts("/a", [("1.mp4", "ana", "x"), ("2.mp4", "ben", "y w"), ("4.mp4", "dia", "v")])
    merged, changes = merge_posts(stored, again, "/a")
    assert merged.path == ["1.mp4", "2.mp4", "4.mp4", "3.mp4"]  # /a where it was, /b kept
    assert (changes.unchanged, changes.updated, changes.added, changes.removed, changes.kept) == (1, 1, 1, 0, 1)
    fewer, changes = merge_posts(merged, folder_posts("/a", [("1.mp4", "ana", "x")]), "/a")
    assert fewer.path == ["1.mp4", "3.mp4"] and changes.removed == 2
    new_folder, changes = merge_posts(stored, folder_posts("/c", [("5.mp4", "eli", "u")]), "/c")
    assert new_folder.path == ["1.mp4", "2.mp4", "3.mp4", "5.mp4"] and (changes.added, changes.kept) == (1, 3)


def test_posts_of_a_store_without_recorded_folders_are_adopted_only_when_asked():
    legacy = folder_posts("", [("1.mp4", "ana", "x")])
    again = folder_posts("/a", [("1.mp4", "ana", "x")])
    adopted, changes = merge_posts(legacy, again, "/a", adopt_unrecorded=True)
    assert adopted.path == ["1.mp4"] and changes.unchanged == 1  # where it lives is no part of a post's id
    kept, changes = merge_posts(legacy, again, "/a")
    assert kept.path == ["1.mp4", "1.mp4"] and changes.kept == 1


def test_post_ids_are_stable_tell_content_apart_and_do_not_depend_on_where_the_folder_is(tmp_path):
    one = folder_posts("/a", [("1.mp4", "ana", "x"), ("1.mp4", "ben", "x")])
    assert len(set(one.post_ids().tolist())) == 2
    same = folder_posts("/a", [("1.mp4", "ana", "x"), ("1.mp4", "ben", "x")])
    assert one.post_ids().tolist() == same.post_ids().tolist()
    moved = folder_posts("/elsewhere/a", [("1.mp4", "ana", "x"), ("1.mp4", "ben", "x")])
    assert moved.post_ids().tolist() == one.post_ids().tolist()
    assert one.post_ids()[0] != folder_posts("/a", [("1.mp4", "ana", "x y")]).post_ids()[0]
    assert one.post_ids()[0] != folder_posts("/a", [("2.mp4", "ana", "x")]).post_ids()[0]
    # The same post in two folders of one store: two ids, the first folder's unchanged.
    both = PostRows.concat(one, moved).post_ids().tolist()
    assert len(set(both)) == 4 and both[:2] == one.post_ids().tolist()
    # What checkpoints recorded before: the folder's path was hashed in.
    assert one.post_ids(with_folder=True)[0] != moved.post_ids(with_folder=True)[0]
    path = tmp_path / "features.h5"
    with StoreWriter(path, ENCODERS, SAMPLING) as writer:
        writer.finalize(one, None)
    stored = load_store(path).posts
    assert stored.folder == ["/a", "/a"] and stored.post_ids().tolist() == one.post_ids().tolist()


def test_merging_keeps_each_posts_time_and_manifest_line_and_a_store_without_folders_reads_them_empty(tmp_path):
    stored = folder_posts("/a", [("1.mp4", "ana", "x"), ("2.mp4", "ben", "y")])
    stored.time, stored.source = np.array([1.0, np.nan]), ["posts.csv:2", "posts.csv:3"]
    other = folder_posts("/b", [("3.mp4", "cem", "z")])
    other.time, other.source = np.array([3.0]), ["sidecar"]
    merged, _ = merge_posts(stored, other, "/b")
    assert merged.folder == ["/a", "/a", "/b"] and merged.source == ["posts.csv:2", "posts.csv:3", "sidecar"]
    np.testing.assert_array_equal(merged.time, [1.0, np.nan, 3.0])
    path = tmp_path / "features.h5"
    with StoreWriter(path, ENCODERS, SAMPLING) as writer:
        writer.finalize(merged, None)
    with h5py.File(path, "a") as handle:  # what phr wrote before folders were recorded
        del handle["posts/folder"]
    old = load_store(path).posts
    assert old.folder == ["", "", ""] and old.source == ["posts.csv:2", "posts.csv:3", "sidecar"]


def test_a_checkpoint_finds_its_posts_by_their_ids_whichever_way_it_recorded_them(tmp_path):
    """A checkpoint from before ids left the folder out recorded the older ids: both find
    their posts in a store that grew since."""
    import torch

    from phr_cli.data.graph import posts_from_store
    from phr_cli.data.provenance import Provenance, posts_fingerprint, select_trained_posts

    rows = folder_posts("/a", [("1.mp4", "ana", "x"), ("2.mp4", "ben", "y"), ("3.mp4", "cem", "z")])
    projection = TextProjection(np.zeros(384, np.float32), np.zeros((100, 384), np.float32), np.zeros(100))
    path = tmp_path / "features.h5"
    with StoreWriter(path, ENCODERS, SAMPLING) as writer:
        writer.finalize(rows, projection)
    contents = load_store(path)
    trained = np.array([0, 1])
    fingerprint = posts_fingerprint(posts_from_store(contents).posts.subset(trained))
    for ids in (contents.posts.post_ids(), contents.posts.post_ids(with_folder=True)):
        provenance = Provenance(posts_fingerprint=fingerprint, post_ids=torch.as_tensor(ids[trained]),
                                text_projection_mean=torch.as_tensor(projection.mean),
                                text_projection_components=torch.as_tensor(projection.components))
        chosen, notice = select_trained_posts(contents, provenance)
        assert chosen.store_rows.tolist() == [0, 1] and "1 trainable post(s) added" in notice
