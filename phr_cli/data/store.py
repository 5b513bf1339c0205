"""The HDF5 feature store: the only module that touches h5py.

Layout of `features.h5`:
  /videos   one row per distinct video file (key = SHA-256 of its content): path,
            duration, status, reason, frame/example counts, visual (N,2048),
            acoustic (N,128) and a mask per modality
  /posts    one row per post: video key ('' when text-only), path, user, caption,
            hashtags (space-joined), status, text_embedding (M,384), textual (M,100),
            textual_mask, time (Unix seconds, NaN when unknown) and source (where the
            metadata came from, e.g. "posts.jsonl:12"); the last two since format 2;
            folder (the resolved folder the post was extracted from; '' in stores written
            before it was recorded, read as such)
  /text_projection  mean (384,), components (100,384), explained_variance_ratio
  attributes: format version, phr version, encoders (JSON: specs and weight hashes),
            frame sampling (JSON), feature dtype

Feature chunks carry Fletcher-32 checksums, so damage is reported, never read as data.

Crash safety: while `phr extract` runs, finished videos go to small segment files in
`features.h5.parts/`, each written to a temporary name, flushed to disk and renamed into
place. At the end the main file is rewritten the same way (temporary file, fsync,
rename) and the segments removed. A kill at any moment therefore leaves the last main
file intact plus complete segments; readers merge both, and a rerun resumes.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from phr_cli import __version__
from phr_cli.errors import PhrError
from phr_cli.files import atomic_file

# 2: /posts gained time and source; format 1 stores read with NaN times and empty sources.
FORMAT_VERSION = 2
IN_MEMORY_BYTES = 256 << 20  # files up to this size are built in memory (see _write_atomically)
MERGE_BLOCK_ROWS = 8192  # videos copied at a time when merging (bounds the merge's memory)
VISUAL_DIM, ACOUSTIC_DIM, TEXT_EMBEDDING_DIM, TEXTUAL_DIM = 2048, 128, 384, 100
STRING = h5py.string_dtype("utf-8")


class StoreError(PhrError):
    """A store that cannot be used as asked; the message names the file and the fix."""


@dataclass
class VideoRows:
    """Rows of /videos, in memory."""

    key: list[str] = field(default_factory=list)
    path: list[str] = field(default_factory=list)
    duration: list[float] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    reason: list[str] = field(default_factory=list)
    n_frames: list[int] = field(default_factory=list)
    n_audio_examples: list[int] = field(default_factory=list)
    visual: list[np.ndarray] = field(default_factory=list)
    acoustic: list[np.ndarray] = field(default_factory=list)
    visual_mask: list[bool] = field(default_factory=list)
    acoustic_mask: list[bool] = field(default_factory=list)

    COLUMNS = ("key", "path", "duration", "status", "reason", "n_frames", "n_audio_examples",
               "visual", "acoustic", "visual_mask", "acoustic_mask")

    def __len__(self) -> int:
        return len(self.key)

    def append(self, **values) -> None:
        for column in self.COLUMNS:
            getattr(self, column).append(values[column])

    def extend(self, other: VideoRows, rows: list[int] | None = None) -> None:
        picks = range(len(other)) if rows is None else rows
        for column in self.COLUMNS:
            source = getattr(other, column)
            getattr(self, column).extend(source[i] for i in picks)


# Every /videos column but the features: small enough to read whole.
_SMALL_COLUMNS = tuple(c for c in VideoRows.COLUMNS if c not in ("visual", "acoustic"))


@dataclass
class PostRows:
    """Rows of /posts, in memory."""

    video_key: list[str]
    path: list[str]
    user: list[str]
    caption: list[str]
    hashtags: list[list[str]]
    status: list[str]
    text_embedding: np.ndarray  # (M, 384)
    textual: np.ndarray  # (M, 100)
    textual_mask: np.ndarray  # (M,) bool
    time: np.ndarray | None = None  # (M,) float64 Unix seconds, NaN when unknown; None: all unknown
    source: list[str] | None = None  # "posts.jsonl:12", "sidecar", ...; None: all unknown
    folder: list[str] | None = None  # the resolved folder each post came from; None: unrecorded ('')

    def __post_init__(self) -> None:
        rows = len(self.user)
        self.time = np.full(rows, np.nan) if self.time is None else np.asarray(self.time, dtype=np.float64)
        self.source = [""] * rows if self.source is None else list(self.source)
        self.folder = [""] * rows if self.folder is None else list(self.folder)

    def __len__(self) -> int:
        return len(self.user)

    def rows(self, picks: list[int]) -> PostRows:
        """The rows `picks`, in that order."""
        index = np.asarray(picks, dtype=np.int64)
        assert self.time is not None
        return PostRows(**{name: [getattr(self, name)[i] for i in picks] for name in _POST_LISTS},
                        text_embedding=self.text_embedding[index], textual=self.textual[index],
                        textual_mask=self.textual_mask[index], time=self.time[index])

    @staticmethod
    def concat(first: PostRows, second: PostRows) -> PostRows:
        assert first.time is not None and second.time is not None
        return PostRows(**{name: getattr(first, name) + getattr(second, name) for name in _POST_LISTS},
                        text_embedding=np.concatenate([first.text_embedding, second.text_embedding]),
                        textual=np.concatenate([first.textual, second.textual]),
                        textual_mask=np.concatenate([first.textual_mask, second.textual_mask]),
                        time=np.concatenate([first.time, second.time]))

    def post_ids(self, with_folder: bool = False) -> np.ndarray:
        """A stable 64-bit id a post: its file (relative to its folder), video content, user,
        caption and hashtags; where the folder lives is no part of it, so a moved folder's
        posts keep their ids. Re-extracting an unchanged post gives the same id; a checkpoint
        records the ids of its posts to find them again in a store that grew. Identical posts
        of two folders are told apart by their order in the table.

        `with_folder`: the ids phr gave before, which also hashed the folder's resolved path
        (and left identical posts equal): what older checkpoints recorded."""
        assert self.folder is not None
        ids = np.empty(len(self), dtype=np.int64)
        seen: Counter[str] = Counter()
        for row, fields in enumerate(zip(self.path, self.video_key, self.user, self.caption)):
            text = "\0".join((*fields, " ".join(self.hashtags[row])))
            if with_folder:
                text = self.folder[row] + "\0" + text
            else:
                seen[text] += 1
                if seen[text] > 1:  # the second identical post on: its rank makes the id its own
                    text += f"\0{seen[text]}"
            ids[row] = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little",
                                      signed=True)
        return ids


_POST_LISTS = ("video_key", "path", "user", "caption", "hashtags", "status", "source", "folder")


@dataclass
class TextProjection:
    mean: np.ndarray  # (384,)
    components: np.ndarray  # (100, 384)
    explained_variance_ratio: np.ndarray  # (100,)

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        return ((embeddings - self.mean) @ self.components.T).astype(np.float32)


@dataclass
class StoreContents:
    path: Path
    attributes: dict
    videos: VideoRows
    posts: PostRows | None
    projection: TextProjection | None
    pending_segments: int  # segments not yet merged: an interrupted extract


def parts_dir(path: Path) -> Path:
    return Path(str(path) + ".parts")


def _write_atomically(path: Path, fill, expected_bytes: int) -> None:
    """Write an HDF5 file through `files.atomic_file` (temporary name, fsync, rename).

    HDF5 crashes the process when a write fails part-way (a full disk; seen with h5py 3,
    with its own file driver and with Python file objects alike). So a file up to
    IN_MEMORY_BYTES is built in memory, where writes cannot fail, and its bytes written with
    plain I/O, which raises OSError; a larger one is written only after checking the space.
    """
    with atomic_file(path) as temporary:
        if expected_bytes <= IN_MEMORY_BYTES:
            buffer = io.BytesIO()
            with h5py.File(buffer, "w") as handle:
                fill(handle)
            with open(temporary, "wb") as raw:
                raw.write(buffer.getbuffer())
        else:
            free = shutil.disk_usage(path.parent).free
            if free < expected_bytes * 1.1 + (64 << 20):
                raise OSError(errno.ENOSPC, f"No space left on device: about {expected_bytes >> 20} MiB "
                              f"needed, {free >> 20} MiB free")
            with h5py.File(temporary, "w") as handle:
                fill(handle)


def _video_bytes(rows: int, dtype: str) -> int:
    """About what `rows` videos take in a file: features plus strings and counts."""
    return rows * ((VISUAL_DIM + ACOUSTIC_DIM) * np.dtype(dtype).itemsize + 512) + (1 << 16)


def _write_videos(group: h5py.Group, rows: VideoRows, dtype: str) -> None:
    _write_columns(group, rows)
    for name, width in (("visual", VISUAL_DIM), ("acoustic", ACOUSTIC_DIM)):
        data = np.stack(getattr(rows, name)).astype(dtype) if len(rows) else np.zeros((0, width), dtype)
        group.create_dataset(name, data=data, **_feature_layout(len(rows), width))


def _feature_layout(rows: int, width: int) -> dict:
    """Chunks of 256 videos, each with a Fletcher-32 checksum: a damaged file then fails to
    read instead of giving wrong features."""
    return {"chunks": (min(rows, 256), width), "fletcher32": True} if rows else {}


def _write_columns(group: h5py.Group, rows: VideoRows) -> None:
    """Every /videos column but the features."""
    group.create_dataset("key", data=np.array(rows.key, dtype="S64"))
    for column in ("path", "status", "reason"):
        group.create_dataset(column, data=np.array(getattr(rows, column), dtype=object), dtype=STRING)
    group.create_dataset("duration", data=np.array(rows.duration, dtype=np.float64))
    group.create_dataset("n_frames", data=np.array(rows.n_frames, dtype=np.int32))
    group.create_dataset("n_audio_examples", data=np.array(rows.n_audio_examples, dtype=np.int32))
    for name in ("visual_mask", "acoustic_mask"):
        group.create_dataset(name, data=np.array(getattr(rows, name), dtype=bool))


def _merge_videos(group: h5py.Group, sources: list[Path], columns: VideoRows, picks: list[tuple[int, int]],
                  dtype: str) -> None:
    """Write /videos: `columns` (the rows without features) at once, and their features a
    block of rows at a time from their (source, row) `picks`."""
    picked = np.array(picks, dtype=np.int64).reshape(-1, 2)
    n = len(picked)
    # For each source: where its rows go in the output, and which of its rows they are.
    placement = [(np.flatnonzero(picked[:, 0] == number), picked[picked[:, 0] == number, 1])
                 for number in range(len(sources))]
    _write_columns(group, columns)
    features = {name: group.create_dataset(name, shape=(n, width), dtype=dtype, **_feature_layout(n, width))
                for name, width in (("visual", VISUAL_DIM), ("acoustic", ACOUSTIC_DIM))}
    for start in range(0, n, MERGE_BLOCK_ROWS):
        stop = min(start + MERGE_BLOCK_ROWS, n)
        blocks = {name: np.empty((stop - start, out.shape[1]), dtype) for name, out in features.items()}
        for source, (positions, rows) in zip(sources, placement):
            inside = (positions >= start) & (positions < stop)
            if inside.any():
                # h5py reads a list of rows only in increasing order.
                order = np.argsort(rows[inside])
                with _open_readable(source) as handle:  # once a block, for both modalities
                    for name, block in blocks.items():
                        block[positions[inside][order] - start] = handle["videos"][name][rows[inside][order]]
        for name, block in blocks.items():
            features[name][start:stop] = block


def _read_videos(group: h5py.Group) -> VideoRows:
    rows = VideoRows()
    rows.key = [k.decode() for k in group["key"][()]]
    for column in ("path", "status", "reason"):
        setattr(rows, column, [v.decode() if isinstance(v, bytes) else v for v in group[column][()]])
    rows.duration = group["duration"][()].tolist()
    rows.n_frames = group["n_frames"][()].tolist()
    rows.n_audio_examples = group["n_audio_examples"][()].tolist()
    for name in ("visual", "acoustic"):
        setattr(rows, name, list(group[name][()].astype(np.float32)))
        setattr(rows, f"{name}_mask", group[f"{name}_mask"][()].tolist())
    return rows


def _write_posts(group: h5py.Group, posts: PostRows) -> None:
    for column in ("video_key", "path", "user", "caption", "status", "source", "folder"):
        group.create_dataset(column, data=np.array(getattr(posts, column), dtype=object), dtype=STRING)
    joined = [" ".join(tags) for tags in posts.hashtags]
    group.create_dataset("hashtags", data=np.array(joined, dtype=object), dtype=STRING)
    group.create_dataset("text_embedding", data=posts.text_embedding.astype(np.float32))
    group.create_dataset("textual", data=posts.textual.astype(np.float32))
    group.create_dataset("textual_mask", data=posts.textual_mask.astype(bool))
    group.create_dataset("time", data=posts.time)


def _strings(dataset: h5py.Dataset) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in dataset[()]]


def _read_posts(group: h5py.Group) -> PostRows:
    return PostRows(
        video_key=_strings(group["video_key"]),
        path=_strings(group["path"]),
        user=_strings(group["user"]),
        caption=_strings(group["caption"]),
        hashtags=[tags.split() for tags in _strings(group["hashtags"])],
        status=_strings(group["status"]),
        text_embedding=group["text_embedding"][()],
        textual=group["textual"][()],
        textual_mask=group["textual_mask"][()],
        time=group["time"][()] if "time" in group else None,
        source=_strings(group["source"]) if "source" in group else None,
        folder=_strings(group["folder"]) if "folder" in group else None,
    )


def _read_projection(group: h5py.Group) -> TextProjection:
    return TextProjection(*(group[name][()] for name in ("mean", "components", "explained_variance_ratio")))


def _open_readable(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:  # only a segment can go (merged by a writer); load_store rereads
        raise _Vanished(path) from None
    except OSError as error:
        try:
            with open(path, "rb") as raw:
                head = raw.read(4)
        except OSError:  # unreadable (permissions, a folder): said by the message below
            head = b""
        if head == b"PK\x03\x04":  # torch.save's zip: what `phr train` writes
            raise StoreError(f"{path} is a PyTorch file (a phr checkpoint?), not a feature store; "
                             "pass it as --checkpoint, and a store from `phr extract` as --store") from None
        if path.suffix in (".csv", ".jsonl"):
            raise StoreError(f"{path} is a posts manifest, not a feature store; `phr extract "
                             f"{path.parent}` reads it into one") from None
        raise StoreError(f"{path}: not a readable phr feature store ({error}); if it is a damaged "
                         "store, move it away and run `phr extract` again") from None


def _attributes(handle: h5py.File, path: Path) -> dict:
    if "format_version" not in handle.attrs:
        raise StoreError(f"{path}: not a phr feature store (no format_version attribute)")
    version = int(handle.attrs["format_version"])
    if version > FORMAT_VERSION:
        raise StoreError(f"{path}: store format {version} is newer than this phr "
                         f"(format {FORMAT_VERSION}); upgrade phr")
    return {
        "format_version": version,
        "phr_version": str(handle.attrs["phr_version"]),
        "encoders": json.loads(handle.attrs["encoders"]),
        "sampling": json.loads(handle.attrs["sampling"]),
        "feature_dtype": str(handle.attrs["feature_dtype"]),
        "updated": str(handle.attrs["updated"]),
    }


def _segments(path: Path) -> list[Path]:
    directory = parts_dir(path)
    return sorted(directory.glob("seg-*.h5")) if directory.is_dir() else []


class _Vanished(Exception):
    """A file went while we were reading: a writer merged and removed a segment."""


def load_store(path: Path) -> StoreContents:
    """Read a whole store, including segments of an interrupted run (deduplicated by key,
    the newest copy of a video winning).

    Safe while `phr extract` appends: segments appear by atomic rename, and when a
    finalize removes them mid-read the read starts again from the new main file.
    """
    path = Path(path)
    for _ in range(10):
        try:
            return _load_once(path)
        except _Vanished:
            continue
    raise StoreError(f"{path}: the store kept changing while being read; try again")


def _load_once(path: Path) -> StoreContents:
    segments = _segments(path)
    if not path.exists() and not segments:
        raise StoreError(f"{path}: no feature store here; run `phr extract VIDEOS --store {path}` first")
    videos, posts, projection, attributes = VideoRows(), None, None, {}
    if path.exists():
        with _open_readable(path) as handle:
            attributes = _attributes(handle, path)
            with _damage_explained(path, "move it away and run `phr extract` again"):
                videos = _read_videos(handle["videos"])
                if "posts" in handle:
                    posts = _read_posts(handle["posts"])
                if "text_projection" in handle:
                    projection = _read_projection(handle["text_projection"])
    row_of = {key: row for row, key in enumerate(videos.key)}
    for segment in segments:
        with _open_readable(segment) as handle:
            attributes = attributes or _attributes(handle, segment)
            with _damage_explained(segment, "delete it and rerun `phr extract`: its videos "
                                   "are extracted again"):
                rows = _read_videos(handle["videos"])
        for index, key in enumerate(rows.key):
            if key in row_of:  # extracted again (a retried failure): the newer row wins
                for column in VideoRows.COLUMNS:
                    getattr(videos, column)[row_of[key]] = getattr(rows, column)[index]
            else:
                row_of[key] = len(videos)
                videos.extend(rows, [index])
    return StoreContents(path, attributes, videos, posts, projection, len(segments))


@contextmanager
def _damage_explained(path: Path, fix: str):
    """A file HDF5 opens but whose tables are missing or unreadable: say so and name the fix."""
    try:
        yield
    except (KeyError, OSError, ValueError, TypeError) as error:
        raise StoreError(f"{path}: damaged phr feature store ({' '.join(str(error).split())}); "
                         f"{fix}") from None


class StoreLock:
    """The exclusive right to write a store: an flock on `<store>.lock`, so that a second
    `phr extract` on the same store refuses at once instead of interleaving writes.

    The lock file goes when the lock is released (removed while still locked), and the
    folders made for the store go too when nothing was written to them: a run that fails
    leaves nothing beside the store. A taker checks that the file it locked is still the
    one at the path, since a releasing writer may have removed it in between."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file = Path(str(self.path) + ".lock")
        # The store's missing folders, deepest first: made here, removed on release when empty.
        self._made = [folder for folder in (self.path.parent, *self.path.parent.parents) if not folder.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            self._handle = open(self._file, "a")  # noqa: SIM115 - held open for the flock; release() closes it
            try:
                fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._handle.close()
                self._remove_made_folders()
                raise StoreError(f"{self.path}: another phr process is writing this store; "
                                 "wait for it to finish or use another --store") from None
            if self._is_current():
                break
            self._handle.close()  # a writer removed the file we locked: lock the new one
        # Temporary files left by a killed writer; the lock says no writer is alive.
        for stale in [*self.path.parent.glob(self.path.name + ".tmp-*"),
                      *parts_dir(self.path).glob("*.tmp-*")]:
            stale.unlink(missing_ok=True)

    def _is_current(self) -> bool:
        try:
            return os.stat(self._file).st_ino == os.fstat(self._handle.fileno()).st_ino
        except FileNotFoundError:
            return False

    def _remove_made_folders(self) -> None:
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:  # something was written there (the store), or another process uses it
                return

    def release(self) -> None:
        if not self._handle.closed:
            self._file.unlink(missing_ok=True)  # before unlocking: a taker then never locks a removed file
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._remove_made_folders()

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class StoreWriter:
    """Appends videos to a store as crash-safe segments, then compacts it into one file.

    Holds the store's `StoreLock` for its lifetime (its own, or one the caller took earlier).
    `encoders` None: the store's own (a run that encodes nothing need not load them); a
    writer of a new store is given them, with `use_encoders`, before it writes.
    """

    def __init__(self, path: Path, encoders: dict | None, sampling: dict, feature_dtype: str = "float32",
                 lock: StoreLock | None = None):
        self.path = Path(path)
        self._lock = lock or StoreLock(self.path)
        self._owns_lock = lock is None
        self.attributes: dict[str, Any] = {"encoders": encoders, "sampling": sampling,
                                           "feature_dtype": feature_dtype}
        self._stored: dict | None = None  # the attributes the store was written with
        sources = self._sources()
        if sources:  # every source was written with the same attributes: one is enough
            with _open_readable(sources[0]) as handle:
                self._stored = _attributes(handle, sources[0])
            if encoders is None:
                self.attributes["encoders"] = self._stored["encoders"]
            self._check_compatible(self._stored)
        self.pending = VideoRows()
        self._segment_count = 0
        # One thread writes segments committed with wait=False, one at a time.
        self._segment_thread: ThreadPoolExecutor | None = None
        self._segment_in_flight: Future | None = None

    def _sources(self) -> list[Path]:
        """The main file (if any), then the segments, oldest first."""
        return ([self.path] if self.path.exists() else []) + _segments(self.path)

    @classmethod
    def reopen(cls, path: Path) -> StoreWriter:
        """A writer, holding the lock, of an existing store with the attributes it was written
        with: to edit its posts without encoding anything. A path that holds no store is
        refused before the lock is taken."""
        path = Path(path)
        sources = ([path] if path.exists() else []) + _segments(path)
        if not sources:
            raise StoreError(f"{path}: no feature store here; run `phr extract VIDEOS --store {path}` first")
        with _open_readable(sources[0]) as handle:
            stored = _attributes(handle, sources[0])
        return cls(path, stored["encoders"], stored["sampling"], stored["feature_dtype"])

    @property
    def has_encoders(self) -> bool:
        """Whether the encoders are known: given, or the store's own."""
        return self.attributes["encoders"] is not None

    def use_encoders(self, encoders: dict) -> None:
        """The encoders of this run, once loaded: refused when the store was built with others."""
        self.attributes["encoders"] = encoders
        if self._stored is not None:
            self._check_compatible(self._stored)

    def _check_compatible(self, stored: dict) -> None:
        for name in ("encoders", "sampling", "feature_dtype"):
            if stored.get(name) != self.attributes[name]:
                raise StoreError(
                    f"{self.path}: this store was built with other {name.replace('_', ' ')} "
                    f"than this run asks for; use another --store, or the same options as before"
                )

    def _columns(self, *names: str, sources: list[Path] | None = None) -> tuple[list[list], list[int]]:
        """Small /videos columns over `sources` (default: every source), in source order
        (duplicates kept), each source opened once; and each source's number of rows."""
        values: list[list] = [[] for _ in names]
        lengths = []
        for source in self._sources() if sources is None else sources:
            with _open_readable(source) as handle, _damage_explained(source, "delete it and rerun"):
                for column, name in zip(values, names):
                    column += _strings(handle["videos"][name])
                lengths.append(len(handle["videos/key"]))
        return values, lengths

    def statuses(self) -> dict[str, str]:
        """Each stored video's status, by key, from its newest copy (pending rows committed first)."""
        self.commit()
        (keys, stored), _ = self._columns("key", "status")
        return dict(zip(keys, stored))  # sources oldest first: a later copy overwrites

    def stored_text_embeddings(self) -> dict[str, np.ndarray]:
        """Caption -> raw text embedding from the last finalized /posts table, for reuse."""
        if not self.path.exists():
            return {}
        with _open_readable(self.path) as handle, _damage_explained(self.path, "delete it and rerun"):
            if "posts" not in handle:
                return {}
            return dict(zip(_strings(handle["posts/caption"]), handle["posts/text_embedding"][()]))

    def stored_projection(self) -> TextProjection | None:
        """The last finalized caption projection (None before the first finalize)."""
        if not self.path.exists():
            return None
        with _open_readable(self.path) as handle, _damage_explained(self.path, "move it away and rerun"):
            return _read_projection(handle["text_projection"]) if "text_projection" in handle else None

    def stored_posts(self) -> PostRows | None:
        """The last finalized /posts table (None before the first finalize)."""
        if not self.path.exists():
            return None
        with _open_readable(self.path) as handle, _damage_explained(self.path, "move it away and rerun"):
            return _read_posts(handle["posts"]) if "posts" in handle else None

    def add(self, **values) -> None:
        self.pending.append(**values)

    def commit(self, wait: bool = True) -> None:
        """Make pending videos durable as one segment file, its rows sorted by key.

        With `wait=False` the file is written on the writer's own thread and this returns at
        once, so that encoding never waits for the disk. Segments are written one at a time:
        a commit first waits for the previous one, and raises its error if it failed.
        """
        self._wait_for_segment()
        if not len(self.pending):
            return
        self._segment_count += 1
        name = f"seg-{time.time_ns():020d}-{os.getpid()}-{self._segment_count:06d}.h5"
        rows = VideoRows()
        rows.extend(self.pending, sorted(range(len(self.pending)), key=self.pending.key.__getitem__))
        self.pending = VideoRows()
        if wait:
            self._write_segment(name, rows)
            return
        if self._segment_thread is None:
            self._segment_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="phr-segments")
        self._segment_in_flight = self._segment_thread.submit(self._write_segment, name, rows)

    def _wait_for_segment(self) -> None:
        in_flight, self._segment_in_flight = self._segment_in_flight, None
        if in_flight is not None:
            in_flight.result()

    def _write_segment(self, name: str, rows: VideoRows) -> None:
        directory = parts_dir(self.path)
        directory.mkdir(exist_ok=True)
        dtype = self.attributes["feature_dtype"]

        def fill(handle: h5py.File) -> None:
            self._write_attributes(handle)
            _write_videos(handle.create_group("videos"), rows, dtype)

        try:
            _write_atomically(directory / name, fill, _video_bytes(len(rows), dtype))
        except OSError as error:
            raise StoreError(f"{directory / name}: cannot write ({error.strerror or error}); what was "
                             "stored before is intact: free space and rerun `phr extract` to go on") from None

    def _write_attributes(self, handle: h5py.File) -> None:
        assert self.has_encoders, "a new store's writer is given its encoders (use_encoders) before it writes"
        handle.attrs["format_version"] = FORMAT_VERSION
        handle.attrs["phr_version"] = __version__
        handle.attrs["encoders"] = json.dumps(self.attributes["encoders"], sort_keys=True)
        handle.attrs["sampling"] = json.dumps(self.attributes["sampling"], sort_keys=True)
        handle.attrs["feature_dtype"] = self.attributes["feature_dtype"]
        handle.attrs["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def finalize(self, posts: PostRows, projection: TextProjection | None,
                 only_keys: set[str] | None = None) -> None:
        """Merge everything into the main file, sorted by key so that reruns give equal files;
        of a video stored twice (a failure extracted again) the newest copy is kept.

        With `only_keys`, the videos of other keys are left out (starting a store over).

        The merge streams: it reads the key columns, then copies features a block of keys
        at a time, so its memory does not grow with the number of videos.
        """
        self.commit()
        sources = self._sources()
        stored, lengths = self._columns(*_SMALL_COLUMNS, sources=sources)  # every row, in source order
        origins = [(number, row) for number, length in enumerate(lengths) for row in range(length)]
        # key -> its newest row (sources are oldest first): a video extracted again replaces its old row
        newest = {key: index for index, key in enumerate(stored[0])}
        chosen = [newest[key] for key in sorted(newest) if only_keys is None or key in only_keys]
        columns = VideoRows(**{name: [values[i] for i in chosen] for name, values in zip(_SMALL_COLUMNS, stored)})
        dtype = self.attributes["feature_dtype"]

        def fill(handle: h5py.File) -> None:
            self._write_attributes(handle)
            _merge_videos(handle.create_group("videos"), sources, columns, [origins[i] for i in chosen], dtype)
            _write_posts(handle.create_group("posts"), posts)
            if projection is not None:
                group = handle.create_group("text_projection")
                group.create_dataset("mean", data=projection.mean)
                group.create_dataset("components", data=projection.components)
                group.create_dataset("explained_variance_ratio", data=projection.explained_variance_ratio)

        expected = _video_bytes(len(chosen), dtype) + posts.text_embedding.nbytes + posts.textual.nbytes \
            + 256 * len(posts.caption)
        segments = _segments(self.path)
        try:
            _write_atomically(self.path, fill, expected)
        except OSError as error:
            raise StoreError(f"{self.path}: cannot write ({error.strerror or error}); the previous "
                             "store and this run's segments are intact: free space and rerun "
                             "`phr extract` to merge them") from None
        for segment in segments:
            segment.unlink()
        if parts_dir(self.path).is_dir() and not any(parts_dir(self.path).iterdir()):
            parts_dir(self.path).rmdir()

    def close(self) -> None:
        try:
            self.commit()
        finally:
            if self._segment_thread is not None:
                self._segment_thread.shutdown()  # after a failed commit, lets a segment in flight land
            if self._owns_lock:
                self._lock.release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            self.close()
        except StoreError:
            if exc is None:
                raise  # else the error already on its way out says more than this one


def summarize(path: Path) -> dict:
    """What `phr inspect` shows: counts by status, users, hashtags, encoders and weights."""
    contents = load_store(path)
    videos, posts = contents.videos, contents.posts
    summary = {
        "store": str(path),
        "phr_version": contents.attributes.get("phr_version"),
        "format_version": contents.attributes.get("format_version"),
        "updated": contents.attributes.get("updated"),
        "videos": len(videos),
        "video_statuses": dict(sorted(Counter(videos.status).items())),
        "unmerged_segments": contents.pending_segments,
        "encoders": {
            modality: {"name": entry["spec"]["name"], "version": entry["spec"]["version"],
                       "weights": entry["weights"]}
            for modality, entry in contents.attributes.get("encoders", {}).items()
        },
        "sampling": contents.attributes.get("sampling"),
    }
    if posts is not None:
        summary.update(
            posts=len(posts.user),
            post_statuses=dict(sorted(Counter(posts.status).items())),
            users=len({u for u in posts.user if u}),
            hashtags=len({h for tags in posts.hashtags for h in tags}),
            text_only_posts=sum(1 for k in posts.video_key if not k),
        )
    return summary


@dataclass
class PostChanges:
    """What adding a folder's posts did to the /posts table."""

    added: int = 0  # posts the table did not have
    updated: int = 0  # the same file (or text) by the same user, with other content
    unchanged: int = 0
    removed: int = 0  # the folder's earlier posts it no longer has
    kept: int = 0  # other folders' posts


def _slot(posts: PostRows, row: int) -> tuple[str, str, str]:
    """What a post is about, whatever its content: its file and user (a text-only post: its caption)."""
    return posts.path[row], posts.user[row], "" if posts.path[row] else posts.caption[row]


def merge_posts(stored: PostRows | None, new: PostRows, folder: str,
                adopt_unrecorded: bool = False) -> tuple[PostRows, PostChanges]:
    """The /posts table after extracting the folder `folder` again: its earlier posts give way
    to `new` (in their place), every other folder's are kept. Posts of a store written before
    folders were recorded (folder '') count as this folder's when `adopt_unrecorded`.

    `new.textual` is returned as given: the caller refits the text projection on the result.
    """
    if stored is None or not len(stored):
        return new, PostChanges(added=len(new))
    assert stored.folder is not None
    mine = {folder, ""} if adopt_unrecorded else {folder}
    earlier = [row for row in range(len(stored)) if stored.folder[row] in mine]
    old_ids, old_slots = Counter(stored.rows(earlier).post_ids().tolist()), \
        Counter(_slot(stored, row) for row in earlier)
    changes = PostChanges(kept=len(stored) - len(earlier))
    for row, post_id in enumerate(new.post_ids().tolist()):
        slot = _slot(new, row)
        if old_ids[post_id] > 0:
            old_ids[post_id] -= 1
            old_slots[slot] -= 1
            changes.unchanged += 1
        elif old_slots[slot] > 0:
            old_slots[slot] -= 1
            changes.updated += 1
        else:
            changes.added += 1
    changes.removed = len(earlier) - changes.unchanged - changes.updated
    # Folders stay in the order they were first added: an unchanged rerun leaves the table equal.
    stored_folders = stored.folder
    folders = list(dict.fromkeys(folder if f in mine else f for f in stored_folders))
    merged: PostRows | None = None
    for each in folders:
        block = new if each == folder else \
            stored.rows([row for row in range(len(stored)) if stored_folders[row] == each])
        merged = block if merged is None else PostRows.concat(merged, block)
    if folder not in folders:
        merged = new if merged is None else PostRows.concat(merged, new)
    assert merged is not None  # the stored table had rows, hence folders
    return merged, changes
