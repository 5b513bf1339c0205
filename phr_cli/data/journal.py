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
# A journal post taken into the store has this source, then its id (`take_into_store`).
JOURNAL_SOURCE = "journal:"


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
    status: str = "ok"  # the clip's decoding status (statuses.Status), as the store records it

    def pack(self) -> tuple[str, bytes]:
        """(JSON of the small fields, the features as one float32 blob)."""
        small = {"user": self.user, "hashtags": self.hashtags, "caption": self.caption, "time": self.time,
                 "key": self.key, "clip": self.clip, "status": self.status,
                 "masks": {m: bool(self.masks.get(m, False)) for m in MODALITIES}}
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
                   fields_["key"], fields_["clip"], features, dict(fields_["masks"]), fields_.get("status", "ok"))


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


@dataclass
class Intake:
    """What `take_into_store` did."""

    posts: int  # journal posts added to the store
    videos: int  # their videos the store did not hold
    already: int  # journal posts the store held before


def take_into_store(journal: Journal, store: Path) -> Intake:
    """Add the journal's posts the store does not hold yet (their source names the journal
    post) as posts of the folder `journal:<location>`, with their videos' features; the store
    stays the system of record and later commands read them as any other post."""
    from phr_cli.data.statuses import Status
    from phr_cli.data.store import PostRows, StoreError, StoreWriter

    with StoreWriter.reopen(store) as writer:
        posts = writer.stored_posts()
        if posts is None:
            raise StoreError(f"{store}: the store has no posts table yet; finish `phr extract` (rerun it) first")
        assert posts.source is not None
        held = {source.removeprefix(JOURNAL_SOURCE) for source in posts.source if source.startswith(JOURNAL_SOURCE)}
        found = [post for _, post in journal.read()]
        new = [post for post in found if post.id not in held]
        if not new:
            return Intake(0, 0, len(found))
        stored_keys = set(writer.statuses())
        added_keys: set[str] = set()
        for post in new:
            if post.key and post.key not in stored_keys | added_keys and (post.masks.get("visual")
                                                                          or post.masks.get("acoustic")):
                added_keys.add(post.key)
                writer.add(key=post.key, path=post.clip, duration=0.0, status=post.status, reason="", n_frames=0,
                           n_audio_examples=0, visual=post.features["visual"], acoustic=post.features["acoustic"],
                           visual_mask=bool(post.masks.get("visual")), acoustic_mask=bool(post.masks.get("acoustic")))
        rows = PostRows(
            video_key=[post.key for post in new], path=[post.clip for post in new], user=[post.user for post in new],
            caption=[post.caption for post in new], hashtags=[list(post.hashtags) for post in new],
            status=[post.status if post.key else Status.TEXT_ONLY for post in new],
            text_embedding=np.stack([post.features["text_embedding"] for post in new]),
            textual=np.stack([post.features["textual"] for post in new]),
            textual_mask=np.array([bool(post.masks.get("textual")) for post in new]),
            time=np.array([post.time for post in new], dtype=np.float64),
            source=[JOURNAL_SOURCE + post.id for post in new], folder=[JOURNAL_SOURCE + journal.location] * len(new))
        writer.finalize(PostRows.concat(posts, rows), writer.stored_projection())
    return Intake(len(new), len(added_keys), len(found) - len(new))
