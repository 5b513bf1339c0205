"""A small store and two checkpoints trained on it (other seeds, other scores): what the tests of
`phr serve`'s reload, metrics and lifecycle serve, swap and stop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from conftest import FAST_SAMPLING
from phr_cli.extract import ExtractOptions, extract
from phr_cli.model.config import ModelConfig, NetworkConfig
from phr_cli.training.config import TrainConfig
from phr_cli.training.train import train_from_store
from support import media

TOPICS = {"ocean": 220.0, "fire": 880.0}
USERS = ("ana", "ben")


@dataclass(frozen=True)
class Served:
    store: Path
    first: Path  # a checkpoint (seed 0)
    second: Path  # another one on the same store (seed 1)
    stored_clip: Path  # a clip the store holds: answered without decoding or encoding
    new_clip: Path  # a clip the store lacks: decoded and encoded


def served_corpus(root: Path) -> Served:
    clips = root / "clips"
    clips.mkdir()
    rows = ["video,user,caption,hashtags"]
    for t, (topic, tone) in enumerate(TOPICS.items()):
        for k in range(3):
            name = f"{topic}_{k}.mp4"
            media.write_clip(clips / name, 1.2, pattern=topic, size=(64, 48), seed=10 * t + k, tone_hz=tone)
            rows += [f"{name},{user},clip {k},{topic} {user}daily {'first' if k == 0 else 'later'}" for user in USERS]
    (clips / "posts.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    new_clip = media.write_clip(root / "new.mp4", 1.2, pattern="fire", size=(64, 48), seed=99, tone_hz=880.0)
    store = root / "features.h5"
    extract(clips, store, ExtractOptions(device="cpu", workers=0, random_weights=True, sampling=FAST_SAMPLING))
    checkpoints = []
    for seed in (0, 1):
        path = root / f"model-{seed}.pt"
        train_from_store(store, path, ModelConfig(NetworkConfig(dim=8)),
                         TrainConfig(epochs=2, batch_size=16, device="cpu", seed=seed))
        checkpoints.append(path)
    return Served(store, checkpoints[0], checkpoints[1], clips / "ocean_0.mp4", new_clip)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(checkpoint: Path, store: Path, port: int, *options: str, log: Path) -> subprocess.Popen:
    """`phr serve` in a process of its own (stderr, its log, into `log`), answering /health."""
    command = [sys.executable, "-m", "phr_cli", "serve", "--checkpoint", str(checkpoint), "--store", str(store),
               "--port", str(port), "--device", "cpu", "--decode-workers", "0", *options]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}  # a 2-core machine: several processes share it
    with open(log, "wb") as written:
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=written, env=environment)
    deadline = time.monotonic() + 300  # a failure to start, not a speed limit
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"phr serve exited with {server.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.kill()
    raise AssertionError(f"phr serve did not answer:\n{log.read_text()}")
