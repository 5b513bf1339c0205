"""`phr extract` on this machine: decoding in a pool of worker processes, encoding here.

Worker processes decode videos ahead of the encoders; this process batches frames and
audio examples from many videos through ResNet50 and VGGish.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pebble

from phr_cli.data import decode
from phr_cli.data.decode import DecodedClip
from phr_cli.data.decode_options import DecodeLimits, FrameSampling
from phr_cli.encoders.pipeline import EncodedVideo, Encoders
from phr_cli.extract.options import ExtractOptions, ExtractReport


def encode_locally(todo: dict[str, Path], encoders: Encoders, options: ExtractOptions,
                   report: ExtractReport) -> Generator[list[EncodedVideo], None, None]:
    """Decode in worker processes, encode in this one, about batch_size frames at a time."""
    workers = (os.cpu_count() or 1) if options.workers is None else options.workers
    batch: list[tuple[str, DecodedClip]] = []
    pending_frames = 0

    def encode() -> list[EncodedVideo]:
        tick = time.perf_counter()
        encoded = encoders.encode_videos(batch, options.batch_size)
        report.encode_seconds += time.perf_counter() - tick
        return encoded

    wait_started = time.perf_counter()
    for key, _, clip in decode_in_pool(todo, workers, options.sampling, options.limits):
        report.decode_wait_seconds += time.perf_counter() - wait_started
        batch.append((key, clip))
        pending_frames += 0 if clip.frames is None else len(clip.frames)
        if pending_frames >= options.batch_size:
            yield encode()
            batch, pending_frames = [], 0
        wait_started = time.perf_counter()
    if batch:
        yield encode()


def decode_in_pool(paths: dict[str, Path], workers: int, sampling: FrameSampling,
                   limits: DecodeLimits | None = None) -> Iterator[tuple[str, Path, DecodedClip]]:
    """Decode clips in worker processes, a bounded number ahead, yielding as they finish.

    Each file gets `limits.seconds_per_file` of a worker's time; a worker past it, or one
    that dies (an FFmpeg crash, the kernel's OOM killer), is replaced by pebble and only
    that file gets a status. With `workers=0` clips decode in this process, unguarded.
    """
    limits = limits or DecodeLimits()
    items = iter(paths.items())
    if workers == 0:
        for key, path in items:
            yield key, path, decode.decode_guarded(path, sampling, limits)
        return
    # spawn, not fork: the parent holds torch threads that a forked child must not inherit.
    pool = pebble.ProcessPool(max_workers=workers, context=multiprocessing.get_context("spawn"),
                              initializer=decode.limit_memory, initargs=(limits.memory_bytes,))
    running: dict[futures.Future, tuple[str, Path]] = {}

    def submit_next() -> None:
        for key, path in items:
            future = pool.schedule(decode.decode_in_time, args=(path, sampling, limits),
                                   timeout=limits.seconds_per_file)
            running[future] = (key, path)
            return

    try:
        for _ in range(2 * workers):
            submit_next()
        while running:
            done, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in done:
                key, path = running.pop(future)
                submit_next()
                yield key, path, decode.result_from_pool(future, limits)
    finally:
        pool.stop()
        pool.join()
