"""The live journal in PostgreSQL: one history shared by `phr serve` replicas on several machines.

A `postgresql://` URL (libpq's syntax, `postgres://` too) names the database; the journal
keeps its posts in one table, `phr_journal`, created when missing, so a database shared
with other software is left alone otherwise.

Readers poll with `read(after=sequence)`, which is only safe when sequence numbers become
visible in the order they were given. PostgreSQL's sequences do not promise that: two
transactions may take 7 and 8 and commit 8 first, and a poller that saw 8 would skip 7 for
ever. So every append takes one transaction-level advisory lock before its number and keeps
it until its commit: appends from every replica are serialised (each is a few milliseconds),
numbers are taken and committed in the same order, and a commit is visible before its lock
is released, so whoever sees a number sees every number below it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from phr_cli.data.journal import Journal, JournalError, LivePost

TABLE = "phr_journal"
# pg_advisory_xact_lock's key for appends and for creating the table: any constant that other
# software on the same database is unlikely to use ("phr" in ASCII, then "jrnl").
APPEND_LOCK_KEY = 0x706872_6A726E6C
# Defaults a URL may override (libpq's parameters): a server that does not answer is an error
# within seconds, not a request hanging for the operating system's TCP timeout.
CONNECTION_DEFAULTS = {"connect_timeout": "5"}
# Session settings: a wait for the append lock is bounded, and a replica that vanishes while
# holding it (its machine down, the network cut) loses its session, and so the lock, on the
# server rather than blocking every other replica until TCP keepalive notices.
SESSION_SETTINGS = {"lock_timeout": "30s", "idle_in_transaction_session_timeout": "30s"}
POOL_SIZE = 4  # connections one process keeps at most: serve's threads share them
POOL_WAIT_S = 30.0  # longest wait for a free connection (or a new one) before an append or read fails

CREATE_TABLE = (f"CREATE TABLE IF NOT EXISTS {TABLE} ("
                "sequence BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
                # json, not jsonb: it keeps the text as written, and accepts what jsonb refuses (\u0000)
                "fields JSON NOT NULL, features BYTEA NOT NULL, "
                # the server's clock: one clock for every replica
                "received TIMESTAMPTZ NOT NULL DEFAULT now())")
TAKE_APPEND_LOCK = "SELECT pg_advisory_xact_lock(%s)"
INSERT = (f"INSERT INTO {TABLE} (id, fields, features) VALUES (%s, %s, %s) "
          "ON CONFLICT (id) DO NOTHING RETURNING sequence")
FIND = f"SELECT sequence FROM {TABLE} WHERE id = %s"
READ = f"SELECT sequence, id, fields::text, features FROM {TABLE} WHERE sequence > %s ORDER BY sequence"


class PostgresJournal(Journal):
    """A journal in a PostgreSQL table, shared by every process that opens the same URL.

    Thread-safe: each call borrows a connection from a small pool, which replaces
    connections the server dropped (a restart, an idle timeout) instead of failing on them.
    """

    def __init__(self, url: str) -> None:
        self.location = redacted(url)
        self._passwords = _passwords(url)
        with self._errors("open"):
            given = conninfo_to_dict(url)
            conninfo = make_conninfo(url, **{key: value for key, value in CONNECTION_DEFAULTS.items()
                                             if key not in given})
            # One direct connection first: an unreachable server or a refused login is reported
            # with libpq's own reason, where the pool would only say that it timed out.
            with psycopg.connect(conninfo) as connection:
                connection.execute(TAKE_APPEND_LOCK, (APPEND_LOCK_KEY,))
                connection.execute(CREATE_TABLE)  # under the lock: two replicas starting at once
            self._pool = ConnectionPool(conninfo, kwargs={"autocommit": True}, min_size=1, max_size=POOL_SIZE,
                                        timeout=POOL_WAIT_S, configure=_configure_session,
                                        check=ConnectionPool.check_connection, name=f"journal {self.location}",
                                        open=False)
            self._pool.open(wait=True, timeout=POOL_WAIT_S)

    def append(self, post: LivePost) -> tuple[int, bool]:
        small, blob = post.pack()
        with self._errors("write"), self._pool.connection() as connection, connection.transaction():
            connection.execute(TAKE_APPEND_LOCK, (APPEND_LOCK_KEY,))
            row = connection.execute(INSERT, (post.id, small, blob)).fetchone()
            if row is not None:
                return int(row[0]), True
            # Under the lock every earlier append has committed, so the post that holds this id is visible.
            existing = connection.execute(FIND, (post.id,)).fetchone()
            assert existing is not None, "ON CONFLICT found an id that the same transaction cannot see"
            return int(existing[0]), False

    def read(self, after: int = 0) -> list[tuple[int, LivePost]]:
        with self._errors("read"), self._pool.connection() as connection:
            rows = connection.execute(READ, (after,)).fetchall()
        return [(int(sequence), LivePost.unpack(post_id, small, blob)) for sequence, post_id, small, blob in rows]

    def close(self) -> None:
        self._pool.close()

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """psycopg's errors (and the pool's) as one JournalError line that names the journal."""
        try:
            yield
        except psycopg.Error as error:
            reason = " ".join(str(error).split())  # libpq's messages run over several lines
            for password in self._passwords:
                reason = reason.replace(password, "***")
            raise JournalError(f"{self.location}: cannot {action} the journal ({reason})") from None


def _configure_session(connection: psycopg.Connection) -> None:
    for name, value in SESSION_SETTINGS.items():
        connection.execute("SELECT set_config(%s, %s, false)", (name, value))


def redacted(url: str) -> str:
    """The URL without its password (in the user part or a `password=` parameter), for messages."""
    parts = urlsplit(url)
    user, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{user.partition(':')[0]}{at}{hosts}"
    query = urlencode([(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True)
                       if key != "password"], safe=":/,")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _passwords(url: str) -> set[str]:
    """The password a URL carries, as written and decoded, to keep it out of error messages."""
    parts = urlsplit(url)
    written = [parts.netloc.rpartition("@")[0].partition(":")[2]]
    written += [value for key, _, value in (pair.partition("=") for pair in parts.query.split("&"))
                if unquote(key) == "password"]
    return {form for password in written for form in (password, unquote(password)) if form}
