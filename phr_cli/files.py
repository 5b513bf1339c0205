"""File helpers shared by the store, the checkpoint and the encoders: the content hash of
a file, and the one atomic way phr replaces a file."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType


def sha256_of(path: Path) -> str:
    """SHA-256 of the file's bytes (hex): a video's content key, a weight file's identity."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:  # hashlib.file_digest would do, from Python 3.11 on
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(path: Path) -> Path:
    """Where `atomic_file` writes before the rename (a crash may leave it; writers sweep
    `NAME.tmp-*`)."""
    return path.with_name(path.name + f".tmp-{os.getpid()}")


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write the new file to; when the block ends
    without an error, the file is fsynced and renamed over `path`, then the folder fsynced.
    A reader, or a crash, sees the old file or the new one, never part of one. The
    temporary file is removed whatever happens."""
    temporary = temporary_name(path)
    try:
        yield temporary
        with open(temporary, "rb+") as raw:
            os.fsync(raw.fileno())
        os.replace(temporary, path)
        fsync_dir(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def interrupt_after() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) that arrives inside the block until the block has ended, then
    deliver it to the handler that was there before. A write that must not be cut short (a
    checkpoint: torch turns an interrupt inside its writer into a RuntimeError that reads as
    a failed write) finishes first, and the interrupt then keeps it. Signal handlers belong
    to the main thread, and a handler installed outside Python cannot be put back: there
    the block runs as it is."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        signal.raise_signal(signal.SIGINT)
