import h5py
import numpy as np
import pytest

from phr_cli.store import (
    FORMAT_VERSION,
    PostRows,
    StoreError,
    StoreWriter,
    load_store,
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
        assert writer.known_keys() == {"a"}
        writer.add(**video("a", 1))
        writer.commit()
    assert load_store(path).videos.key == ["a"]


def test_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    path = tmp_path / "features.h5"
    with StoreWriter(path, ENCODERS, SAMPLING):
        with pytest.raises(StoreError, match="another phr process is writing"):
            StoreWriter(path, ENCODERS, SAMPLING)


def test_other_encoders_are_refused(tmp_path):
    path = tmp_path / "features.h5"
    with StoreWriter(path, ENCODERS, SAMPLING) as writer:
        writer.add(**video("a", 1))
    other = {"visual": {"spec": {"name": "v", "version": "1"}, "weights": "sha256-of-real-weights"}}
    with pytest.raises(StoreError, match="other encoders"):
        StoreWriter(path, other, SAMPLING)


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
