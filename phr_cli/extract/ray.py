"""`phr extract --ray`: decoding and encoding as a Ray Data pipeline.

    paths ──map(decode, 1 CPU task a video)──▶ clips ──map_batches(encoder actors)──▶ rows
                                                       (models loaded once an actor,
                                                        one GPU each when the cluster has any)

The rows stream back to the driver, which stores them through the same StoreWriter as a
single-machine run (segments committed as they arrive, then merged), so resume, failure
statuses, the lock and the final store are those of `phr_cli.extract.pipeline`. Ray retries the
tasks and restarts the actors of a worker that dies; only its unfinished videos are
redone. Video paths and `--weights-dir` must be readable at the same path on every node.
Decoding keeps `DecodeLimits`' pixel guard; the per-file time limit and the memory cap
belong to the local worker pool (`extract.local.decode_in_pool`) and do not apply to Ray tasks.

Imported only when `--ray` is given: Ray is an optional extra (`pip install 'phr[ray]'`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from dataclasses import fields
from pathlib import Path

import numpy as np
import ray
import ray.data
import torch

from phr_cli.data.decode import DecodedClip, decode_guarded
from phr_cli.data.decode_options import DecodeLimits, FrameSampling
from phr_cli.devices import DeviceError
from phr_cli.encoders.pipeline import EncodedVideo, Encoders
from phr_cli.errors import EncoderMismatchError, PhrError
from phr_cli.extract.options import ExtractOptions, ExtractReport

ENCODED_COLUMNS = tuple(f.name for f in fields(EncodedVideo))
CONTENT_MODALITIES = ("visual", "acoustic")  # encoded by the actors; captions stay on the driver
DECODE_MEMORY_BYTES = 512 * 2**20  # a clip's frames, 10 minutes of audio, FFmpeg's buffers
# Ray Data settings for this run, put back afterwards: the caller's Ray session is theirs.
DATA_SETTINGS = {
    "enable_progress_bars": False,  # phr prints its own progress
    "print_on_execution_start": False,
    # Decoded clips travel as pickled objects (frames may be None); say it is meant.
    "enable_fallback_to_arrow_object_ext_type": True,
}


def _decode_row(row: dict, sampling: FrameSampling, limits: DecodeLimits) -> dict:
    return {"key": row["key"], "clip": decode_guarded(Path(row["path"]), sampling, limits)}


class _EncoderActor:
    """Holds ResNet50 and VGGish once per actor and encodes batches of decoded clips."""

    def __init__(self, device: torch.device, weights_dir: Path | None, random_weights: bool,
                 batch_size: int, precision: str, expected_fingerprint: dict) -> None:
        self.encoders = Encoders(device, weights_dir, random_weights, precision)
        found = self.encoders.fingerprint(CONTENT_MODALITIES)
        differing = [m for m in CONTENT_MODALITIES if found[m] != expected_fingerprint[m]]
        if differing:
            raise EncoderMismatchError(
                f"Ray node {ray.util.get_node_ip_address()}: the {' and '.join(differing)} "
                f"encoder differs from the driver's (weights "
                f"{', '.join(found[m]['weights'] for m in differing)} here, "
                f"{', '.join(expected_fingerprint[m]['weights'] for m in differing)} on the "
                "driver); give every node the same phr version and weight files")
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        decoded: list[tuple[str, DecodedClip]] = list(zip(batch["key"].tolist(), batch["clip"]))
        videos = self.encoders.encode_videos(decoded, self.batch_size)
        return {column: np.array([getattr(v, column) for v in videos]) for column in ENCODED_COLUMNS}


def _rows(batch: dict[str, np.ndarray]) -> list[EncodedVideo]:
    """Columns back from the actors -> EncodedVideo with plain Python scalars."""
    columns = {name: list(batch[name]) if batch[name].ndim > 1 else batch[name].tolist()
               for name in ENCODED_COLUMNS}
    return [EncodedVideo(**{name: columns[name][i] for name in ENCODED_COLUMNS})
            for i in range(len(columns["key"]))]


def phr_cause(error: BaseException | None) -> BaseException | None:
    """The phr error (missing weights, another encoder) inside Ray's wrappers, if any."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, PhrError):
            return error
        error = getattr(error, "cause", None) or error.__cause__
    return None


def _uses_gpu(device: str) -> bool:
    cluster_has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    if device.startswith("cuda") and not cluster_has_gpus:
        raise DeviceError(f"device {device!r} asked for, but the Ray cluster has no GPU")
    return cluster_has_gpus if device == "auto" else device.startswith("cuda")


def encode_on_ray(todo: dict[str, Path], options: ExtractOptions, fingerprint: dict,
                  report: ExtractReport) -> Generator[list[EncodedVideo], None, None]:
    """Decode and encode `todo` (key -> path) on the cluster, yielding rows as they finish."""
    if not todo:
        return  # a rerun with nothing new needs no cluster
    joined_here = not ray.is_initialized()
    if joined_here:
        ray.init(address=options.ray_address, logging_level=logging.WARNING)
    context = ray.data.DataContext.get_current()
    previous_settings = {name: getattr(context, name, None) for name in DATA_SETTINGS}
    try:
        for name, value in DATA_SETTINGS.items():
            setattr(context, name, value)
        gpu = _uses_gpu(options.device)
        actors = options.ray_encoders or (int(ray.cluster_resources().get("GPU", 0)) or 1)
        # One block per video: a task decodes one file, so a lost worker costs only its own.
        items = [{"key": key, "path": str(path.resolve())} for key, path in todo.items()]
        # Reserving memory also keeps Ray Data from fusing decoding into the encoder actors
        # (it fuses stages that ask for the same resources), where it would run serially.
        clips = ray.data.from_items(items, override_num_blocks=len(items)).map(
            _decode_row,  # type: ignore[arg-type]  # its other arguments come through fn_kwargs
            fn_kwargs={"sampling": options.sampling, "limits": options.limits}, num_cpus=1,
            memory=DECODE_MEMORY_BYTES, concurrency=options.workers or None)
        # About batch_size frames per encoder call, as on one machine.
        videos_per_call = max(1, options.batch_size // options.sampling.max_frames)
        encoded = clips.map_batches(
            _EncoderActor,
            fn_constructor_kwargs={
                "device": torch.device("cuda" if gpu else "cpu"), "weights_dir": options.weights_dir,
                "random_weights": options.random_weights, "batch_size": options.batch_size,
                "precision": options.precision, "expected_fingerprint": fingerprint,
            },
            batch_size=videos_per_call, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            # One CPU: Ray then sets OMP_NUM_THREADS=1, so a CPU actor runs one torch thread.
            num_gpus=1 if gpu else 0, num_cpus=1,
        )
        wait_started = time.perf_counter()
        try:
            for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
                report.decode_wait_seconds += time.perf_counter() - wait_started
                yield _rows(batch)
                wait_started = time.perf_counter()
        except Exception as error:
            cause = phr_cause(error)
            if cause is None:
                raise
            raise cause from None  # phr's own one-line error, not Ray's wrapped traceback
    finally:
        for name, previous in previous_settings.items():
            setattr(context, name, previous)
        if joined_here:
            ray.shutdown()
