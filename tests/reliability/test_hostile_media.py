"""Hostile media: every file ends with a status and a reason; no hang, no crash of the run,
no memory blow-up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hostile_corpus import EXPECTED, IGNORED, write_corpus

from conftest import FAST_SAMPLING
from phr_cli.data.decode import decode_clip
from phr_cli.data.decode_options import DecodeLimits
from phr_cli.data.statuses import FAILED_STATUSES
from phr_cli.data.store import load_store
from phr_cli.extract import ExtractOptions, extract
from phr_cli.extract.local import decode_in_pool
from support import media

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("hostile") / "uploads")


@pytest.fixture(scope="module")
def extracted(corpus):
    store = corpus.parent / "features.h5"
    options = ExtractOptions(device="cpu", workers=2, random_weights=True, sampling=FAST_SAMPLING,
                             limits=DecodeLimits(seconds_per_file=60))
    return extract(corpus, store, options), load_store(store)


def test_every_hostile_file_gets_an_expected_status_and_a_reason(extracted):
    report, store = extracted
    got = dict(zip(store.videos.path, zip(store.videos.status, store.videos.reason)))
    assert set(got) == set(EXPECTED), "each file once, and nothing that is not a video"
    for name, (status, reason) in got.items():
        assert status in EXPECTED[name], f"{name!r}: {status} ({reason})"
        assert (reason != "") == (status != "ok"), f"{name!r}: {status} with reason {reason!r}"
    assert not any(name in got for name in IGNORED)
    failed = {outcome.path.name for outcome in report.failures}
    assert failed == {name for name, (status, _) in got.items() if status in FAILED_STATUSES}


def test_what_decoded_keeps_its_features(extracted):
    _, store = extracted
    row = {path: i for i, path in enumerate(store.videos.path)}
    for name in ("variable frame rate.mp4", "rotated.mp4", "10-bit.mkv", "20000 frames.y4m",
                 "claims ten hours.mkv", "audio only.mp4"):
        i = row[name]
        has_video = name != "audio only.mp4"
        assert store.videos.visual_mask[i] == has_video, name
        assert np.isfinite(store.videos.visual[i]).all()
    assert not store.videos.visual_mask[row["absurd resolution.y4m"]]


def test_rotated_frames_are_turned_upright(tmp_path):
    clip = media.write_clip(tmp_path / "landscape.mp4", 1.0, pattern="city", size=(160, 96), gop=5)
    upright = decode_clip(clip).frames
    for degrees in (90, 180, 270):
        turned = decode_clip(media.set_rotation(clip, tmp_path / f"r{degrees}.mp4", degrees)).frames
        # A clockwise display rotation of `degrees`: np.rot90 turns counter-clockwise.
        np.testing.assert_array_equal(turned, np.rot90(upright, -degrees // 90, axes=(1, 2)))


def test_many_keyframes_are_sampled_by_seeking_with_bounded_memory(tmp_path):
    many = media.write_y4m_header(tmp_path / "many.y4m", 16, 16, frames=2000, fps=100)
    clip = decode_clip(many)
    assert clip.status == "no_audio" and len(clip.frames) == 16
    assert clip.n_keyframes > 256  # stopped counting: it sampled by time instead


def test_a_lying_header_does_not_make_decoding_slow(corpus):
    started = time.monotonic()
    clip = decode_clip(corpus / "claims ten hours.mkv")
    assert clip.duration == pytest.approx(36000) and clip.status == "ok"
    # Not a timing assertion on speed: a hang would be minutes; the audio cap is 600 s.
    assert time.monotonic() - started < 60
    assert len(clip.audio) <= 600 * 16000


def test_a_file_that_blocks_forever_is_stopped_at_the_time_limit(tmp_path):
    """A FIFO with no writer blocks FFmpeg's open() in the kernel: only killing the
    worker ends it. The other file must still be decoded."""
    fifo = tmp_path / "stalled.mp4"
    os.mkfifo(fifo)
    good = media.write_clip(tmp_path / "good.mp4", 1.0, size=(64, 48))
    limits = DecodeLimits(seconds_per_file=3)
    results = {key: clip for key, _, clip in
               decode_in_pool({"stalled": fifo, "good": good}, 2, FAST_SAMPLING, limits)}
    assert results["stalled"].status == "timed_out"
    assert "longer than 3 s" in results["stalled"].reason
    assert results["good"].status == "ok"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_a_decoder_that_dies_costs_only_its_file(tmp_path):
    """SIGKILL a worker in the middle of a file (what the OOM killer does): that file
    is `crashed`, the pool replaces the worker and the rest decode."""
    fifo = tmp_path / "victim.mp4"
    os.mkfifo(fifo)
    paths = {"victim": fifo}
    for i in range(3):
        paths[f"clip{i}"] = media.write_clip(tmp_path / f"clip{i}.mp4", 1.0, size=(64, 48), seed=i)

    def kill_the_blocked_worker() -> None:
        # The FIFO's open() has no file descriptor yet; the kernel says where it waits.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for child in _children(os.getpid()):
                try:
                    waiting_on = Path(f"/proc/{child}/wchan").read_text()
                except OSError:
                    continue
                if waiting_on == "wait_for_partner":
                    os.kill(child, signal.SIGKILL)
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_the_blocked_worker)
    killer.start()
    results = {key: clip for key, _, clip in
               decode_in_pool(paths, 2, FAST_SAMPLING, DecodeLimits(seconds_per_file=120))}
    killer.join()
    assert results["victim"].status == "crashed" and "SIGKILL" in results["victim"].reason
    assert [results[f"clip{i}"].status for i in range(3)] == ["ok"] * 3


MEASURE_WORKERS = """
import json, resource, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from conftest import FAST_SAMPLING
from phr_cli.extract.local import decode_in_pool
paths = {{p.name: p for p in Path(sys.argv[1]).iterdir() if p.is_file()}}
statuses = {{key: clip.status for key, _, clip in decode_in_pool(paths, 2, FAST_SAMPLING)}}
print(json.dumps({{"statuses": statuses,
                  "max_child_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}}))
"""


def test_decoding_workers_stay_small_on_the_hostile_corpus(corpus):
    script = MEASURE_WORKERS.format(tests=str(Path(__file__).parents[1]))
    done = subprocess.run([sys.executable, "-c", script, str(corpus)], capture_output=True,
                          text=True, timeout=600, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["statuses"]) == len(EXPECTED)
    # 20,000 keyframes held as 224x224 RGB would be 3 GiB; the bound keeps a worker small.
    assert result["max_child_rss_mib"] < 1024, result


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a file only root can read "
                    "and then drop privileges")
def test_unreadable_permissions_are_a_status_not_a_crash(tmp_path):
    folder = Path(tmp_path) / "shared"
    folder.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(folder, 0o755)
    locked = media.write_clip(folder / "locked.mp4", 1.0, size=(64, 48))
    os.chmod(locked, 0o000)
    # Import everything first: the unprivileged user may not read the installation.
    script = ("import os, sys; from pathlib import Path; from phr_cli.data.decode import decode_clip; "
              "os.setgid(65534); os.setuid(65534); "
              "c = decode_clip(Path(sys.argv[1])); print(c.status, c.reason)")
    done = subprocess.run([sys.executable, "-c", script, str(locked)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("unreadable cannot open: Permission denied")
