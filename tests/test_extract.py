import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import FAST_SAMPLING, write_numbered_clips
from phr_cli.cli import app
from phr_cli.data import decode
from phr_cli.data.statuses import FAILED_STATUSES
from phr_cli.data.store import load_store, parts_dir
from phr_cli.extract import ExtractOptions, extract
from support import media

OPTIONS = ExtractOptions(device="cpu", workers=0, random_weights=True, sampling=FAST_SAMPLING,
                         batch_size=8)


@pytest.fixture(scope="module")
def extracted(clip_dir, tmp_path_factory):
    store = tmp_path_factory.mktemp("store") / "features.h5"
    report = extract(clip_dir, store, OPTIONS)
    return report, store


def test_every_file_gets_a_status_and_reason(extracted):
    report, store = extracted
    contents = load_store(store)
    status = dict(zip(contents.videos.path, contents.videos.status))
    assert status["ocean.mp4"] == "ok"
    assert status["sub/forêt.webm"] == "ok"
    assert status["fire one.mkv"] == "ok"
    assert status["silent.mp4"] == "no_audio"
    assert status["short.mp4"] == "too_short"
    assert status["truncated.mp4"] in ("truncated", "corrupt", "ok")
    for name in ("empty.mp4", "noise.avi", "notes.mov"):
        assert status[name] == "corrupt"
    assert all(r for s, r in zip(contents.videos.status, contents.videos.reason) if s != "ok")
    assert {f.path.name for f in report.failures} >= {"empty.mp4", "noise.avi", "notes.mov", "gone.mp4"}
    assert report.statuses["missing"] == 1


def test_duplicate_content_is_extracted_once(extracted):
    _report, store = extracted
    contents = load_store(store)
    assert "ocean copy.mp4" not in contents.videos.path
    posts = contents.posts
    ocean, copy = posts.path.index("ocean.mp4"), posts.path.index("ocean copy.mp4")
    assert posts.video_key[ocean] == posts.video_key[copy] != ""


def test_features_masks_and_text(extracted):
    _, store = extracted
    contents = load_store(store)
    videos, posts = contents.videos, contents.posts
    row = videos.path.index("silent.mp4")
    assert videos.visual_mask[row] and not videos.acoustic_mask[row]
    assert not np.any(videos.acoustic[row]) and np.any(videos.visual[row])
    ok = videos.path.index("ocean.mp4")
    assert videos.visual[ok].shape == (2048,) and videos.acoustic[ok].shape == (128,)
    assert videos.n_frames[ok] == 1 and videos.n_audio_examples[ok] == 2  # one keyframe: enough here
    # Hashtags are labels: normalised, and never in the text the encoder saw.
    first = posts.path.index("ocean.mp4")
    assert posts.hashtags[first] == ["beach", "ocean"] and posts.user[first] == "ana"
    text_only = posts.status.index("text_only")
    assert posts.textual_mask[text_only] and posts.video_key[text_only] == ""
    assert posts.textual.shape == (len(posts.user), 100)
    assert contents.projection.components.shape == (100, 384)
    # The projection stored is the one that produced the textual features.
    np.testing.assert_allclose(contents.projection.apply(posts.text_embedding[[first]])[0],
                               posts.textual[first], atol=1e-5)
    encoders = contents.attributes["encoders"]
    assert encoders["visual"]["weights"] == "random-init(seed=0)"
    assert encoders["textual"]["weights"] != "random-init(seed=0)"  # MiniLM is real, bundled
    assert encoders["acoustic"]["spec"]["preprocessing"]["final_relu"] is False


def test_a_rerun_reuses_what_succeeded_and_retries_what_failed(extracted, clip_dir):
    first, store = extracted
    before = load_store(store)
    failed = [key for key, status in zip(before.videos.key, before.videos.status) if status in FAILED_STATUSES]
    report = extract(clip_dir, store, OPTIONS)
    after = load_store(store)
    assert len(failed) >= 3 and report.extracted == report.retried == report.retried_failed == len(failed)
    assert report.reused == len(after.videos.key) - len(failed) and report.retried_ok == 0
    assert sorted(str(f.path) for f in report.failures) == sorted(str(f.path) for f in first.failures)
    assert after.videos.key == before.videos.key and after.videos.status == before.videos.status
    np.testing.assert_array_equal(np.stack(after.videos.visual), np.stack(before.videos.visual))


def test_worker_processes_give_the_same_features(extracted, clip_dir, tmp_path):
    _, store = extracted
    pooled = tmp_path / "pooled.h5"
    extract(clip_dir, pooled, ExtractOptions(**{**OPTIONS.__dict__, "workers": 2}))
    a, b = load_store(store).videos, load_store(pooled).videos
    assert a.key == b.key and a.status == b.status
    np.testing.assert_allclose(np.stack(a.visual), np.stack(b.visual), rtol=1e-4, atol=1e-4)


KILLABLE = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import FAST_SAMPLING
from phr_cli.extract import ExtractOptions, extract
extract(Path(sys.argv[1]), Path(sys.argv[2]), ExtractOptions(
    device="cpu", workers=0, random_weights=True, sampling=FAST_SAMPLING, batch_size=1,
    commit_every=1))
"""


def test_kill_9_mid_run_loses_only_unfinished_videos(tmp_path):
    root = write_numbered_clips(tmp_path / "clips")
    store = tmp_path / "killed.h5"
    script = KILLABLE.format(tests=str(Path(__file__).parent))
    process = subprocess.Popen([sys.executable, "-c", script, str(root), str(store)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts_dir(store).glob("seg-*.h5"))) < 2:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    survived = load_store(store)  # readable right after the kill
    assert 2 <= len(survived.videos.key) < 8 and survived.posts is None

    report = extract(root, store, OPTIONS)
    assert report.reused == len(survived.videos.key) and report.extracted == 8 - report.reused
    resumed = load_store(store)
    clean_path = tmp_path / "clean.h5"
    extract(root, clean_path, OPTIONS)
    clean = load_store(clean_path)
    assert resumed.videos.key == clean.videos.key and resumed.videos.status == clean.videos.status
    np.testing.assert_allclose(np.stack(resumed.videos.visual), np.stack(clean.videos.visual), atol=1e-4)
    np.testing.assert_allclose(np.stack(resumed.videos.acoustic), np.stack(clean.videos.acoustic), atol=1e-4)
    np.testing.assert_allclose(resumed.posts.textual, clean.posts.textual, atol=1e-5)
    assert resumed.pending_segments == 0


def test_cli_exit_codes_and_inspect(tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    media.write_clip(root / "a.mp4", 1.2, size=(64, 48))
    runner = CliRunner()
    store = tmp_path / "s.h5"
    ok = runner.invoke(app, ["extract", str(root), "--store", str(store), "--random-weights",
                             "--workers", "0", "--device", "cpu"])
    assert ok.exit_code == 0, ok.output
    media.write_zero_bytes(root / "broken.mp4")
    failed = runner.invoke(app, ["extract", str(root), "--store", str(store), "--random-weights",
                                 "--workers", "0"])
    assert failed.exit_code == 1 and "broken.mp4" in failed.output
    shown = runner.invoke(app, ["inspect", "--store", str(store), "--json"])
    summary = json.loads(shown.stdout)
    assert summary["videos"] == 2 and summary["video_statuses"] == {"corrupt": 1, "ok": 1}
    missing = runner.invoke(app, ["extract", str(root), "--store", str(tmp_path / "t.h5"),
                                  "--weights-dir", str(tmp_path)])
    assert missing.exit_code == 1 and "resnet50-11ad3fa6.pth" in missing.output


def test_ray_flag_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # None in sys.modules: import fails
    monkeypatch.setitem(sys.modules, "ray.data", None)
    result = CliRunner().invoke(app, ["extract", str(tmp_path), "--ray"])
    assert result.exit_code == 2
    assert "--ray needs Ray: pip install 'phr[ray]'" in result.output
    wrong = CliRunner().invoke(app, ["extract", str(tmp_path), "--ray-address", "host:6379"])
    assert wrong.exit_code == 2 and "need --ray" in wrong.output


def test_post_times_and_manifest_lines_reach_the_store(tmp_path):
    root = tmp_path / "posts"
    root.mkdir()
    rows = [{"user": "u", "caption": "first #a", "time": "2024-05-01T00:00:00Z"},
            {"user": "v", "caption": "second #b"},
            {"user": "u", "caption": "third #c", "time": 1714608000}]
    (root / "posts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    extract(root, tmp_path / "features.h5", OPTIONS)
    posts = load_store(tmp_path / "features.h5").posts
    np.testing.assert_array_equal(posts.time, [1714521600.0, np.nan, 1714608000.0])
    assert posts.source == ["posts.jsonl:1", "posts.jsonl:2", "posts.jsonl:3"]


def write_manifest(root: Path, rows: list[str]) -> Path:
    root.mkdir(exist_ok=True)
    (root / "posts.csv").write_text("video,user,caption,hashtags\n" + "".join(r + "\n" for r in rows),
                                    encoding="utf-8")
    return root


def posts_of(store: Path) -> list[tuple[str, str, str]]:
    posts = load_store(store).posts
    return sorted(zip(posts.user, posts.caption, (" ".join(t) for t in posts.hashtags)))


def test_a_store_is_only_added_to_and_a_folder_extracted_again_is_updated(tmp_path):
    first = write_manifest(tmp_path / "first", [",ana,sea one,sea", ",ben,sea two,sea", ",ana,fire,fire"])
    second = write_manifest(tmp_path / "second", ["a.mp4,cem,a clip,clip", ",dia,words,text"])
    media.write_clip(second / "a.mp4", 1.2, size=(64, 48))
    store = tmp_path / "s.h5"
    extract(first, store, OPTIONS)
    report = extract(second, store, OPTIONS)
    changes = report.post_changes
    assert (changes.added, changes.kept, changes.updated, changes.removed) == (2, 3, 0, 0)
    assert [u for u, _, _ in posts_of(store)] == ["ana", "ana", "ben", "cem", "dia"]
    stored = load_store(store).posts
    assert set(stored.folder) == {str(first.resolve()), str(second.resolve())}
    assert set(stored.source) == {"posts.csv:2", "posts.csv:3", "posts.csv:4"}  # each post's manifest line

    # An edited manifest takes effect: one post retagged, one gone, one new; the video is reused.
    write_manifest(second, ["a.mp4,cem,a clip,clip video", ",eli,new words,text"])
    again = extract(second, store, OPTIONS)
    changes = again.post_changes
    assert (changes.added, changes.updated, changes.unchanged, changes.removed, changes.kept) == (1, 1, 0, 1, 3)
    assert again.extracted == 0 and again.reused == 1
    assert posts_of(store) == [("ana", "fire", "fire"), ("ana", "sea one", "sea"), ("ben", "sea two", "sea"),
                               ("cem", "a clip", "clip video"), ("eli", "new words", "text")]
    unchanged = extract(first, store, OPTIONS).post_changes
    assert (unchanged.unchanged, unchanged.added, unchanged.kept) == (3, 0, 2)


def test_replace_starts_the_store_over(tmp_path):
    first = write_manifest(tmp_path / "first", [",ana,sea one,sea"])
    second = write_manifest(tmp_path / "second", ["a.mp4,cem,a clip,clip"])
    media.write_clip(second / "a.mp4", 1.2, size=(64, 48))
    store = tmp_path / "s.h5"
    extract(second, store, OPTIONS)
    extract(first, store, OPTIONS)
    replace = ExtractOptions(**{**vars(OPTIONS), "replace": True})
    again = extract(second, store, replace)
    assert (again.extracted, again.reused) == (1, 0)  # --replace extracts every video again
    report = extract(first, store, replace)
    assert report.post_changes.kept == 0
    contents = load_store(store)
    assert contents.posts.user == ["ana"] and contents.videos.key == []  # no post uses the clip now


def test_an_empty_folder_is_an_error_that_leaves_the_store_untouched(tmp_path):
    root = write_manifest(tmp_path / "posts", [",ana,sea one,sea"])
    store = tmp_path / "s.h5"
    extract(root, store, OPTIONS)
    before = store.read_bytes()
    runner = CliRunner()
    (tmp_path / "empty").mkdir()
    (tmp_path / "unrelated").mkdir()
    (tmp_path / "unrelated" / "notes.txt").write_text("no videos here")
    for folder in (tmp_path / "empty", tmp_path / "unrelated", write_manifest(tmp_path / "header-only", [])):
        result = runner.invoke(app, ["extract", str(folder), "--store", str(store), "--random-weights",
                                     "--workers", "0", "--device", "cpu"])
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert lines[-1].startswith("error: ") and "unchanged" in lines[-1] and "Traceback" not in result.output
    assert store.read_bytes() == before


def test_the_summary_says_what_was_added_updated_and_kept(tmp_path):
    first = write_manifest(tmp_path / "first", [",ana,sea one,sea", ",ben,sea two,sea"])
    second = write_manifest(tmp_path / "second", [",cem,fire,fire"])
    store = tmp_path / "s.h5"
    runner = CliRunner()
    args = ["--store", str(store), "--random-weights", "--workers", "0", "--device", "cpu"]
    assert runner.invoke(app, ["extract", str(first), *args]).exit_code == 0
    result = runner.invoke(app, ["extract", str(second), *args])
    assert result.exit_code == 0, result.output
    assert "1 added, 0 updated, 0 unchanged, 0 removed (this folder); 2 kept (other folders)" in result.stdout


def time_out_every_file(monkeypatch) -> None:
    """Decoding (in-process, --workers 0) that reports every file as past --file-timeout."""
    monkeypatch.setattr(decode, "decode_guarded", lambda path, sampling, limits: decode.timed_out(limits))


def test_failed_files_are_retried_and_their_failure_replaced(tmp_path, monkeypatch):
    root = write_numbered_clips(tmp_path / "two", count=2)
    store = tmp_path / "s.h5"
    with monkeypatch.context() as patch:
        time_out_every_file(patch)
        first = extract(root, store, OPTIONS)
    assert first.statuses == {"timed_out": 2} and len(first.failures) == 2
    assert not Path(str(store) + ".lock").exists()
    with monkeypatch.context() as patch:  # still failing: retried, reported failed again
        time_out_every_file(patch)
        again = extract(root, store, OPTIONS)
    assert (again.retried, again.retried_ok, again.retried_failed, again.reused) == (2, 0, 2, 0)
    assert len(again.failures) == 2
    fixed = extract(root, store, OPTIONS)
    assert (fixed.retried, fixed.retried_ok, fixed.retried_failed, fixed.reused, fixed.extracted) == (2, 2, 0, 0, 2)
    assert not fixed.failures
    contents = load_store(store)
    assert contents.videos.status == ["ok", "ok"] and contents.posts.status == ["ok", "ok"]
    assert all(contents.videos.visual_mask)
    reused = extract(root, store, OPTIONS)
    assert (reused.retried, reused.reused, reused.extracted, reused.encoders_loaded) == (0, 2, 0, False)


def test_a_fully_reused_run_loads_no_encoder_and_prints_no_rate(tmp_path, monkeypatch):
    root = write_numbered_clips(tmp_path / "clips", count=1)
    store = tmp_path / "s.h5"
    args = ["extract", str(root), "--store", str(store), "--random-weights", "--workers", "0", "--device", "cpu"]
    assert CliRunner().invoke(app, args).exit_code == 0
    from phr_cli.encoders import pipeline

    def no_loading(*_):
        raise AssertionError("an encoder was loaded")

    monkeypatch.setattr(pipeline.Encoders, "__init__", no_loading)
    result = CliRunner().invoke(app, [*args, "-q"])
    assert result.exit_code == 0, result.output
    assert "videos/s" not in result.stdout and "1 posts, 1 videos: 0 extracted, 1 reused" in result.stdout
    assert "nothing to encode, encoders not loaded" in result.stdout
    assert result.stderr == ""  # -q: no header, no progress


def test_the_cli_says_what_was_retried_and_exits_1_while_a_file_still_fails(tmp_path, monkeypatch):
    root = write_numbered_clips(tmp_path / "clips", count=2)
    store = tmp_path / "s.h5"
    args = ["extract", str(root), "--store", str(store), "--random-weights", "--workers", "0", "--device", "cpu"]
    time_out_every_file(monkeypatch)
    assert CliRunner().invoke(app, args).exit_code == 1
    failing = CliRunner().invoke(app, args)
    assert failing.exit_code == 1
    assert "retried 2 file(s) that had failed: 0 now succeeded, 2 failed again" in failing.stdout
    # Failed files are not "extracted", and no rate is claimed for them.
    assert "2 videos: 0 extracted, 2 failed, 0 reused" in failing.stdout and "videos/s" not in failing.stdout
    monkeypatch.undo()
    fixed = CliRunner().invoke(app, args)
    assert fixed.exit_code == 0, fixed.output
    assert "retried 2 file(s) that had failed: 2 now succeeded, 0 failed again" in fixed.stdout
    assert "2 extracted, 0 reused" in fixed.stdout
    shown = json.loads(CliRunner().invoke(app, ["inspect", "--store", str(store), "--json"]).stdout)
    assert shown["video_statuses"] == {"ok": 2} and shown["failed_files"] == 0


def test_a_failed_first_run_leaves_no_lock_or_folder_behind(tmp_path):
    root = write_numbered_clips(tmp_path / "clips", count=1)
    store = tmp_path / "new" / "deeper" / "s.h5"
    missing = CliRunner().invoke(app, ["extract", str(root), "--store", str(store), "--weights-dir", str(tmp_path),
                                       "--workers", "0", "--device", "cpu"])
    assert missing.exit_code == 1 and "resnet50-11ad3fa6.pth" in missing.output
    assert not (tmp_path / "new").exists()
    media.write_zero_bytes(root / "clip0.mp4")  # every file fails: the store records it, and no lock stays
    failed = CliRunner().invoke(app, ["extract", str(root), "--store", str(store), "--random-weights",
                                      "--workers", "0", "--device", "cpu"])
    assert failed.exit_code == 1 and store.exists()
    assert sorted(p.name for p in store.parent.iterdir()) == ["s.h5"]
