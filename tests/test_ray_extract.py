"""`phr extract --ray` on a two-node Ray cluster started here: the store equals a local run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.data", reason="Ray is an optional extra: pip install 'phr[ray]'")

from ray.cluster_utils import Cluster

from conftest import FAST_SAMPLING, write_numbered_clips
from phr_cli.data.statuses import FAILED_STATUSES
from phr_cli.data.store import StoreContents, load_store, parts_dir
from phr_cli.extract import ExtractOptions, extract
from support import media

LOCAL = ExtractOptions(device="cpu", workers=0, random_weights=True, sampling=FAST_SAMPLING,
                       batch_size=8)
OBJECT_STORE_BYTES = 200 * 2**20  # a few decoded clips; Ray's default takes 30% of memory


@pytest.fixture(scope="module")
def cluster_address() -> str:
    """A head node and a worker node, each its own raylet and worker processes."""
    # Logical CPUs beyond the 2 real ones: either node alone can hold an encoder actor and
    # a decode task, so the run goes on when the other loses a worker.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": OBJECT_STORE_BYTES, "include_dashboard": False})
    cluster.add_node(num_cpus=2, object_store_memory=OBJECT_STORE_BYTES)
    cluster.wait_for_nodes()
    yield cluster.address
    cluster.shutdown()


def ray_options(address: str) -> ExtractOptions:
    return ExtractOptions(**{**LOCAL.__dict__, "ray": True, "ray_address": address})


@pytest.fixture(scope="module")
def stores(clip_dir, cluster_address, tmp_path_factory, one_torch_thread):
    folder = tmp_path_factory.mktemp("stores")
    ray_report = extract(clip_dir, folder / "ray.h5", ray_options(cluster_address))
    local_report = extract(clip_dir, folder / "local.h5", LOCAL)
    return ray_report, local_report, folder / "ray.h5", folder / "local.h5"


def assert_same_store(a: StoreContents, b: StoreContents) -> float:
    """Equal feature for feature; returns the largest visual/acoustic difference."""
    for column in ("key", "path", "duration", "status", "reason", "n_frames", "n_audio_examples",
                   "visual_mask", "acoustic_mask"):
        assert getattr(a.videos, column) == getattr(b.videos, column), column
    largest = 0.0
    for column in ("visual", "acoustic"):
        left, right = np.stack(getattr(a.videos, column)), np.stack(getattr(b.videos, column))
        np.testing.assert_allclose(left, right, rtol=0, atol=1e-4, err_msg=column)
        largest = max(largest, float(np.abs(left - right).max()))
    for column in ("video_key", "path", "user", "caption", "hashtags", "status"):
        assert getattr(a.posts, column) == getattr(b.posts, column), column
    np.testing.assert_array_equal(a.posts.textual_mask, b.posts.textual_mask)
    np.testing.assert_allclose(a.posts.textual, b.posts.textual, atol=1e-5)
    np.testing.assert_allclose(a.projection.components, b.projection.components, atol=1e-5)
    assert a.attributes["encoders"] == b.attributes["encoders"]
    assert a.attributes["sampling"] == b.attributes["sampling"]
    return largest


def test_ray_store_equals_the_single_process_one(stores):
    ray_report, local_report, ray_store, local_store = stores
    on_ray, local = load_store(ray_store), load_store(local_store)
    largest = assert_same_store(on_ray, local)
    print(f"ray vs local: {len(on_ray.videos.key)} videos, {len(on_ray.posts.user)} posts, "
          f"max |visual/acoustic difference| {largest:.2e}")
    assert on_ray.pending_segments == 0 and not parts_dir(ray_store).exists()
    assert ray_report.extracted == local_report.extracted == len(on_ray.videos.key)
    assert ray_report.statuses == local_report.statuses


def test_bad_files_get_their_status_through_ray(stores):
    ray_report, _, ray_store, _ = stores
    videos = load_store(ray_store).videos
    status = dict(zip(videos.path, videos.status))
    for name in ("empty.mp4", "noise.avi", "notes.mov"):
        assert status[name] == "corrupt"
    assert status["silent.mp4"] == "no_audio" and status["short.mp4"] == "too_short"
    assert {f.path.name for f in ray_report.failures} >= {"empty.mp4", "noise.avi", "notes.mov",
                                                          "gone.mp4"}


def test_ray_rerun_extracts_only_new_videos(stores, clip_dir, cluster_address, tmp_path):
    _, _, ray_store, _ = stores
    root = tmp_path / "clips"
    shutil.copytree(clip_dir, root)
    media.write_clip(root / "new.mp4", 1.2, pattern="forest", tone_hz=660, size=(96, 64), seed=3)
    store = tmp_path / "resumed.h5"
    shutil.copy(ray_store, store)
    before = load_store(store)
    report = extract(root, store, ray_options(cluster_address))
    after = load_store(store)
    failed = sum(status in FAILED_STATUSES for status in before.videos.status)  # retried, as on one machine
    assert failed and (report.extracted, report.retried) == (1 + failed, failed)
    assert report.reused == len(before.videos.key) - failed
    new_row = after.videos.path.index("new.mp4")
    assert after.videos.status[new_row] == "ok" and after.videos.visual_mask[new_row]
    kept = [after.videos.key.index(key) for key in before.videos.key]
    np.testing.assert_array_equal(np.stack(after.videos.visual)[kept], np.stack(before.videos.visual))


DRIVER = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import FAST_SAMPLING
from phr_cli.extract import ExtractOptions, extract
extract(Path(sys.argv[1]), Path(sys.argv[2]), ExtractOptions(
    device="cpu", random_weights=True, sampling=FAST_SAMPLING, batch_size=2, commit_every=1,
    ray=True, ray_address=sys.argv[3]))
"""


def encoder_actor_pids() -> list[int]:
    """Ray worker processes under this test (the cluster's raylets are its children)."""
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent_of[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # exited while we looked

    def under_this_test(pid: int) -> bool:
        while pid > 1:
            pid = parent_of.get(pid, 0)
            if pid == os.getpid():
                return True
        return False

    found = []
    for pid in parent_of:
        try:
            title = (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "_EncoderActor" in title and under_this_test(pid):
            found.append(pid)
    return found


def test_a_killed_encoder_worker_costs_only_its_unfinished_videos(cluster_address, tmp_path,
                                                                  one_torch_thread):
    root = write_numbered_clips(tmp_path / "clips")
    store = tmp_path / "ray.h5"
    script = DRIVER.format(tests=str(Path(__file__).parent))
    driver = subprocess.Popen([sys.executable, "-c", script, str(root), str(store), cluster_address])
    try:
        # Until the first video is stored, however slow the machine (a loaded one starts Ray's
        # niced workers late): the deadline only bounds a hang.
        deadline = time.monotonic() + 1200
        while driver.poll() is None and time.monotonic() < deadline and not list(parts_dir(store).glob("seg-*.h5")):
            time.sleep(0.05)
        stored_before_kill = len(list(parts_dir(store).glob("seg-*.h5")))
        victims = encoder_actor_pids()
        assert victims and 1 <= stored_before_kill < 8
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        assert driver.wait(timeout=300) == 0  # Ray restarted the actor and retried its batch
    finally:
        if driver.poll() is None:  # a failed assertion must not leave the driver running
            driver.kill()
            driver.wait()

    local_store = tmp_path / "local.h5"
    extract(root, local_store, LOCAL)
    largest = assert_same_store(load_store(store), load_store(local_store))
    print(f"killed encoder actor(s) {victims} after {stored_before_kill} of 8 videos were stored; "
          f"max |difference| to a local run {largest:.2e}")


def test_a_phr_error_on_a_worker_reaches_the_user_unwrapped():
    from ray.exceptions import RayTaskError

    from phr_cli.encoders.registry import MissingWeightsError
    from phr_cli.extract.ray import phr_cause

    missing = MissingWeightsError("resnet50-11ad3fa6.pth: not found in /weights; download it from …")
    wrapped = RayTaskError("_EncoderActor.__init__", "Traceback …", missing)
    try:
        raise RuntimeError("Ray Data execution failed") from wrapped
    except RuntimeError as outer:
        assert phr_cause(outer) is missing
    assert phr_cause(RuntimeError("a Ray failure of its own")) is None
