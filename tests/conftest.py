"""Shared fixtures: small clips generated with PyAV (FFmpeg) in the test run."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from phr_cli.data.decode_options import FrameSampling
from support import media, postgres

# Few frames per clip keep random-weight ResNet50 on a 2-core CPU quick.
FAST_SAMPLING = FrameSampling(min_keyframes=1, max_frames=2, fallback_frames=2)


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    """A folder of posts covering every extraction status, with a manifest."""
    root = tmp_path_factory.mktemp("clips")
    media.write_clip(root / "ocean.mp4", 2.0, pattern="ocean", tone_hz=220, size=(96, 64))
    media.write_clip(root / "fire one.mkv", 2.0, pattern="fire", tone_hz=880, noise=0.2, size=(96, 64))
    (root / "sub").mkdir()
    media.write_clip(root / "sub" / "forêt.webm", 2.0, pattern="forest", tone_hz=1500, size=(96, 64))
    media.write_clip(root / "silent.mp4", 2.0, pattern="city", tone_hz=None, size=(96, 64))
    media.write_clip(root / "short.mp4", 0.5, pattern="city", tone_hz=440, size=(96, 64))
    media.copy_clip(root / "ocean.mp4", root / "ocean copy.mp4")
    media.write_truncated(root / "ocean.mp4", root / "truncated.mp4", 0.45)
    media.write_zero_bytes(root / "empty.mp4")
    media.write_random_bytes(root / "noise.avi")
    media.write_text_file(root / "notes.mov")
    (root / "posts.csv").write_text(
        "video,user,caption,hashtags\n"
        "ocean.mp4,ana,Morning swim #beach #Ocean,\n"
        "fire one.mkv,ben,Camp night,fire campfire\n"
        "sub/forêt.webm,ana,Walk in the woods #forest,\n"
        "silent.mp4,ben,Street at night #city #night,\n"
        "short.mp4,cem,Quick one #city,\n"
        "ocean copy.mp4,cem,Same clip again #ocean,\n"
        ",ana,Only words here #travel,\n"
        "gone.mp4,ben,This file does not exist #ghost,\n",
        encoding="utf-8",
    )
    return root


def write_numbered_clips(root: Path, count: int = 8) -> Path:
    """`count` short distinct clips clip0.mp4 … in a new folder: work for a run to be killed in."""
    root.mkdir()
    for i in range(count):
        media.write_clip(root / f"clip{i}.mp4", 1.2, pattern=["ocean", "fire", "city"][i % 3],
                         tone_hz=200 + 100 * i, size=(64, 48), seed=i)
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small tensors on a shared 2-core machine: a second thread adds overhead and jitter."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL server for the session (its `postgres` database's URL, with a password).

    Without PostgreSQL installed the tests that need it skip, except under CI (the CI variable set),
    where they fail: .ci/run installs it, and a silent skip there would hide the back end's tests.
    """
    try:
        postgres.server_binaries()
    except postgres.PostgresUnavailable as missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; CI is set, so the PostgreSQL tests must run")
        pytest.skip(str(missing))
    with postgres.running_server() as url:
        yield url


_database_numbers = itertools.count()


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """The URL of a new empty database on the session's server, one per test."""
    return postgres.create_database(postgres_server, f"test_{next(_database_numbers)}")


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="also run the long kill loops of tests/reliability (marked slow)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long reliability loops, run with --slow")


# The longest files, first: `make test` runs the suite on two workers, a file to a worker in
# collection order (pytest-xdist's loadfile), so a long file collected last would run alone at
# the end. Durations from `pytest --durations=30`; the order changes no verdict.
LONGEST_FIRST = ("test_ray_extract.py", "test_kill_loops.py", "test_recommend.py", "test_disk_full.py",
                 "test_train.py", "test_comparison.py", "test_concurrent_runs.py", "test_train_distributed.py")


def pytest_collection_modifyitems(config, items):
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file's tests keep their order
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="long loop: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
