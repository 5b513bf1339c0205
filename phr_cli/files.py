"""File helpers shared by the store, the checkpoint and the encoders: the content hash of
a file, and the one atomic way phr replaces a file."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
