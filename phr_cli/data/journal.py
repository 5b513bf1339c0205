"""The live journal: posts published after training, as `phr serve` receives them.

A post is acknowledged only once it is durable here, so a server killed at any moment
(SIGKILL included) loses nothing it answered for; a restarted server replays the journal
into its history, and `phr train` / `phr extract` take it into the store, which stays the
system of record.

One interface, two back ends: SQLite in WAL mode (a file, the embedded default; several
processes of one machine share it) and PostgreSQL (`postgresql://…`, replicas on several
machines share it). A post carries its features, not its clip: uploads are deleted after
the answer, and features are what the model and the store need.

Readers poll with `read(after=sequence)`: sequence numbers become visible in the order
they were given (each back end makes sure), so a poller that remembers the last number it
read never misses a post.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from phr_cli.data.store import ACOUSTIC_DIM, TEXT_EMBEDDING_DIM, TEXTUAL_DIM, VISUAL_DIM
from phr_cli.errors import PhrError

# Each modality's width, in the order its values are packed into one blob.
WIDTHS = {"visual": VISUAL_DIM, "acoustic": ACOUSTIC_DIM, "textual": TEXTUAL_DIM, "text_embedding": TEXT_EMBEDDING_DIM}
MODALITIES = ("visual", "acoustic", "textual")


class JournalError(PhrError):
    """A journal that cannot be opened, read or written (the message names it)."""


@dataclass
class LivePost:
    """A post published after training: who, what they tagged it, when, and its content."""

    id: str
    user: str
    hashtags: list[str]  # normalised, without '#'
    caption: str = ""
    time: float = field(default_factory=time.time)  # Unix seconds
    key: str = ""  # content key of the clip (SHA-256 of its bytes); '' for a text-only post
    clip: str = ""  # the clip's name as the client sent it
    features: dict[str, np.ndarray] = field(default_factory=dict)  # WIDTHS' keys -> float32 vector
    masks: dict[str, bool] = field(default_factory=dict)  # MODALITIES -> present

    def pack(self) -> tuple[str, bytes]:
        """(JSON of the small fields, the features as one float32 blob)."""
        small = {"user": self.user, "hashtags": self.hashtags, "caption": self.caption, "time": self.time,
                 "key": self.key, "clip": self.clip, "masks": {m: bool(self.masks.get(m, False)) for m in MODALITIES}}
        blob = b"".join(np.asarray(self.features.get(name, np.zeros(width)), np.float32).reshape(width).tobytes()
                        for name, width in WIDTHS.items())
        return json.dumps(small), blob  # ASCII: a lone surrogate in a caption stays writable

    @classmethod
    def unpack(cls, post_id: str, small: str, blob: bytes) -> LivePost:
        fields_ = json.loads(small)
        values = np.frombuffer(blob, np.float32)
        features, start = {}, 0
        for name, width in WIDTHS.items():
            features[name] = values[start:start + width].copy()
            start += width
        return cls(post_id, fields_["user"], list(fields_["hashtags"]), fields_["caption"], float(fields_["time"]),
                   fields_["key"], fields_["clip"], features, dict(fields_["masks"]))


class Journal(ABC):
    """Where acknowledged posts live until the store takes them in."""

    location: str  # for messages: a path, or a URL without its password

    @abstractmethod
    def append(self, post: LivePost) -> tuple[int, bool]:
        """Write the post durably; (its sequence number, True) when new, or (the sequence
        number it already has, False) when a post with its id is there."""

    @abstractmethod
    def read(self, after: int = 0) -> list[tuple[int, LivePost]]:
        """The posts with a sequence number above `after`, in order."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SQLiteJournal(Journal):
    """A journal in one SQLite file, in WAL mode, each append synced before it returns."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.location = str(path)
        self._lock = threading.Lock()  # one connection, shared by serve's threads
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged post survives a power cut too
            self._db.execute("CREATE TABLE IF NOT EXISTS posts (sequence INTEGER PRIMARY KEY AUTOINCREMENT, "
                             "id TEXT NOT NULL UNIQUE, fields TEXT NOT NULL, features BLOB NOT NULL, "
                             "received REAL NOT NULL)")
        except (sqlite3.Error, OSError) as error:
            raise JournalError(f"{path}: cannot open the journal ({error})") from None

    def append(self, post: LivePost) -> tuple[int, bool]:
        small, blob = post.pack()
        try:
            with self._lock:
                cursor = self._db.execute(
                    "INSERT INTO posts (id, fields, features, received) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (id) DO NOTHING RETURNING sequence", (post.id, small, blob, time.time()))
                row = cursor.fetchone()
                if row is not None:
                    return int(row[0]), True
                [existing] = self._db.execute("SELECT sequence FROM posts WHERE id = ?", (post.id,)).fetchone()
                return int(existing), False
        except sqlite3.Error as error:
            raise JournalError(f"{self.location}: cannot write the journal ({error})") from None

    def read(self, after: int = 0) -> list[tuple[int, LivePost]]:
        try:
            with self._lock:
                rows = self._db.execute("SELECT sequence, id, fields, features FROM posts WHERE sequence > ? "
                                        "ORDER BY sequence", (after,)).fetchall()
        except sqlite3.Error as error:
            raise JournalError(f"{self.location}: cannot read the journal ({error})") from None
        return [(int(sequence), LivePost.unpack(post_id, small, blob)) for sequence, post_id, small, blob in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_journal(where: str | Path) -> Journal:
    """The journal at a path (SQLite) or a `postgresql://` URL."""
    text = str(where)
    if text.startswith(("postgresql://", "postgres://")):
        from phr_cli.data.journal_postgres import PostgresJournal

        return PostgresJournal(text)
    return SQLiteJournal(Path(text.removeprefix("sqlite:///")))
