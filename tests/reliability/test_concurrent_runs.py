"""Two `extract` runs on one store: the second refuses with a clear message, never
interleaving writes. Readers (`recommend`, `inspect`, `train`) may read while `extract`
appends."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phr_cli.data.store import StoreError, load_store
from reliability_data import write_clips

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


def lock_is_held(store: Path) -> bool:
    try:
        with open(str(store) + ".lock") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return write_clips(tmp_path_factory.mktemp("concurrent") / "clips", 8)


def test_a_second_extract_on_the_same_store_refuses(clips, tmp_path):
    store = tmp_path / "features.h5"
    first = subprocess.Popen([sys.executable, "-c", EXTRACT, str(clips), str(store)], env=ENV,
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not lock_is_held(store) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run([sys.executable, "-m", "phr_cli", "extract", str(clips), "--store", str(store),
                             "--random-weights", "--workers", "0", "--device", "cpu"],
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert first.poll() is None, "the first run ended before the second tried: nothing was tested"
    assert first.wait(timeout=600) == 0, first.stderr.read().decode()
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert second.stderr.strip().splitlines()[-1] == (
        f"error: {store}: another phr process is writing this store; wait for it to finish or use "
        "another --store")
    contents = load_store(store)
    assert len(contents.videos.key) == len(set(contents.videos.key)) == 9


def test_readers_see_a_consistent_store_while_extract_appends(clips, tmp_path):
    store = tmp_path / "features.h5"
    writer = subprocess.Popen([sys.executable, "-c", EXTRACT, str(clips), str(store)], env=ENV,
                              stderr=subprocess.PIPE)
    seen: list[int] = []
    while writer.poll() is None:
        try:
            contents = load_store(store)
        except StoreError as error:
            assert "no feature store here" in str(error) and not seen  # only before the first segment
            time.sleep(0.05)
            continue
        keys = contents.videos.key
        assert len(keys) == len(set(keys))
        seen.append(len(keys))
    assert writer.returncode == 0, writer.stderr.read().decode()
    assert seen == sorted(seen), "a reader saw videos disappear"
    assert len(seen) > 3 and seen[-1] <= 9 and len(load_store(store).videos.key) == 9
