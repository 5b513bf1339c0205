"""The live journal, on both back ends: SQLite (a file) and PostgreSQL (a real server, see conftest)."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading

import numpy as np
import psycopg
import pytest

from phr_cli.data.journal import WIDTHS, Journal, JournalError, LivePost, SQLiteJournal, open_journal
from phr_cli.data.journal_postgres import PostgresJournal
from support import postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_at(request, tmp_path) -> str:
    """Where a new, empty journal lives: a file path or a `postgresql://` URL."""
    if request.param == "sqlite":
        return str(tmp_path / "journal.db")
    return request.getfixturevalue("postgres_url")


def live_post(post_id: str, seed: int = 0, **fields) -> LivePost:
    rng = np.random.default_rng(seed)
    features = {name: rng.standard_normal(width).astype(np.float32) for name, width in WIDTHS.items()}
    values = {"user": f"user{seed % 3}", "hashtags": ["beach", "été"], "caption": "Matin à la plage 🌊\nsecond line",
              "time": 1_700_000_000.123456 + seed, "key": f"{seed:064x}", "clip": f"clip {seed}.mp4",
              "features": features, "masks": {"visual": True, "acoustic": seed % 2 == 0, "textual": True}}
    return LivePost(post_id, **{**values, **fields})


def assert_same_post(read: LivePost, written: LivePost) -> None:
    assert (read.id, read.user, read.hashtags, read.caption, read.time, read.key, read.clip, read.masks) == (
        written.id, written.user, written.hashtags, written.caption, written.time, written.key, written.clip,
        written.masks)
    assert read.features.keys() == written.features.keys()
    for name, values in written.features.items():
        np.testing.assert_array_equal(read.features[name], values)
        assert read.features[name].dtype == np.float32


def test_open_journal_picks_the_back_end_from_the_location(journal_at):
    with open_journal(journal_at) as journal:
        assert isinstance(journal, PostgresJournal if journal_at.startswith("postgresql://") else SQLiteJournal)


def test_a_post_reads_back_with_its_fields_and_features(journal_at):
    written = live_post("p1", seed=1, caption="Matin à la plage 🌊\nwith a NUL \x00 that jsonb would refuse")
    with open_journal(journal_at) as journal:
        sequence, new = journal.append(written)
        [(read_sequence, read)] = journal.read()
    assert new and read_sequence == sequence
    assert_same_post(read, written)


def test_a_text_only_post_reads_back_with_zero_features(journal_at):
    written = LivePost("text", "ana", ["travel"], "Only words", features={}, masks={"textual": True})
    with open_journal(journal_at) as journal:
        journal.append(written)
        [(_, read)] = journal.read()
    assert read.masks == {"visual": False, "acoustic": False, "textual": True}
    assert all(not values.any() and values.shape == (WIDTHS[name],) for name, values in read.features.items())


def test_a_repeated_id_keeps_its_first_sequence_and_is_stored_once(journal_at):
    with open_journal(journal_at) as journal:
        first, first_new = journal.append(live_post("p1", seed=1))
        journal.append(live_post("p2", seed=2))
        again, again_new = journal.append(live_post("p1", seed=3, caption="a retry with other content"))
        posts = journal.read()
    assert (first_new, again_new, again) == (True, False, first)
    assert [post.id for _, post in posts] == ["p1", "p2"]
    assert_same_post(posts[0][1], live_post("p1", seed=1))  # the first write wins


def test_read_after_a_sequence_returns_the_later_posts_in_order(journal_at):
    with open_journal(journal_at) as journal:
        sequences = [journal.append(live_post(f"p{i}", seed=i))[0] for i in range(5)]
        assert sequences == sorted(sequences)
        later = journal.read(after=sequences[1])
        assert journal.read(after=sequences[-1]) == []
    assert [sequence for sequence, _ in later] == sequences[2:]
    assert [post.id for _, post in later] == ["p2", "p3", "p4"]


def test_two_replicas_on_one_journal_see_each_others_posts(journal_at):
    with open_journal(journal_at) as one, open_journal(journal_at) as other:
        one.append(live_post("from-one", seed=1))
        other.append(live_post("from-other", seed=2))
        assert other.append(live_post("from-one", seed=1))[1] is False  # the other's id is known here too
        for replica in (one, other):
            assert [post.id for _, post in replica.read()] == ["from-one", "from-other"]


def test_concurrent_appends_lose_nothing_and_a_poller_never_skips_one(journal_at):
    """Writer threads on two journal objects (two connections each way) and a third object polling
    `read(after=last seen)` the way serve's replicas do: the poller ends with every post, once,
    in increasing sequence, which it would not if a number could become visible before a smaller one."""
    writers, posts_each = 4, 25
    appended: dict[str, int] = {}
    polled: list[tuple[int, str]] = []
    done = threading.Event()
    with open_journal(journal_at) as first, open_journal(journal_at) as second, open_journal(journal_at) as poller:

        def write(writer: int) -> None:
            journal: Journal = first if writer % 2 == 0 else second
            for i in range(posts_each):
                post_id = f"w{writer}-{i}"
                sequence, new = journal.append(live_post(post_id, seed=i))
                assert new
                appended[post_id] = sequence

        def poll() -> None:
            last = 0
            while True:
                finished = done.is_set()  # read once more after the writers finished
                for sequence, post in poller.read(after=last):
                    polled.append((sequence, post.id))
                    last = sequence
                if finished:
                    return
                done.wait(0.002)

        polling = threading.Thread(target=poll)
        polling.start()
        threads = [threading.Thread(target=write, args=(writer,)) for writer in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        done.set()
        polling.join()
        everything = first.read()
    assert len(appended) == writers * posts_each
    assert len(set(appended.values())) == len(appended)
    assert sorted((sequence, post_id) for post_id, sequence in appended.items()) == polled
    assert [(sequence, post.id) for sequence, post in everything] == polled


def test_an_acknowledged_post_survives_its_writer_being_killed(journal_at):
    """A child appends, prints the sequence it got and is SIGKILLed at once, its journal still open."""
    written = live_post("survivor", seed=7)
    script = ("import pickle, sys, time\n"
              "from phr_cli.data.journal import open_journal\n"
              "journal = open_journal(sys.argv[1])\n"
              "sequence, _ = journal.append(pickle.load(sys.stdin.buffer))\n"
              "print(sequence, flush=True)\n"
              "time.sleep(600)\n")
    child = subprocess.Popen([sys.executable, "-c", script, journal_at], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    try:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(pickle.dumps(written))
        child.stdin.close()
        acknowledged = int(child.stdout.readline())
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    with open_journal(journal_at) as journal:
        [(sequence, read)] = journal.read()
    assert sequence == acknowledged
    assert_same_post(read, written)


def test_an_unopenable_sqlite_journal_is_one_line_naming_it(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    where = tmp_path / "a-file" / "journal.db"
    with pytest.raises(JournalError) as raised:
        open_journal(where)
    assert str(where) in str(raised.value) and "\n" not in str(raised.value)


def test_an_unreachable_server_is_one_line_without_the_password():
    url = f"postgresql://phr:hunter2-secret@127.0.0.1:{postgres.free_port()}/postgres"
    with pytest.raises(JournalError) as raised:
        open_journal(url)
    message = str(raised.value)
    assert message.startswith("postgresql://phr@127.0.0.1:") and "refused" in message
    assert "hunter2" not in message and "\n" not in message


@pytest.mark.parametrize("password_at", ["user", "query"])
def test_a_refused_login_is_one_line_without_the_password(postgres_server, password_at):
    address = postgres_server.removeprefix(f"postgresql://{postgres.USER}:{postgres.PASSWORD}@")
    url = (f"postgresql://{postgres.USER}:wrong%20horse@{address}" if password_at == "user"
           else f"postgresql://{postgres.USER}@{address}?password=wrong%20horse&sslmode=disable")
    with pytest.raises(JournalError) as raised:
        open_journal(url)
    message = str(raised.value)
    assert "password authentication failed" in message and "\n" not in message
    assert "wrong" not in message and "horse" not in message
    assert message.startswith(f"postgresql://{postgres.USER}@{address}")


def test_a_malformed_url_is_one_line_without_the_password():
    with pytest.raises(JournalError) as raised:
        open_journal("postgresql://phr:two words@127.0.0.1:5432/postgres")
    message = str(raised.value)
    assert "two words" not in message and "\n" not in message


def test_a_journal_names_its_url_without_the_password(postgres_url):
    with open_journal(postgres_url) as journal:
        assert journal.location == postgres_url.replace(f":{postgres.PASSWORD}@", "@")


def test_connections_the_server_dropped_are_replaced(postgres_url):
    """A server restart or an administrator ends the journal's sessions: the next calls reconnect."""
    with open_journal(postgres_url) as journal:
        journal.append(live_post("before", seed=1))
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            ended = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                  "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()
        assert ended is not None and ended[0] >= 1
        journal.append(live_post("after", seed=2))
        assert [post.id for _, post in journal.read()] == ["before", "after"]


def test_replicas_starting_together_on_a_new_database_all_open_it(postgres_url):
    """Each creates the table if missing; under the lock none of them trips over another's creation."""
    start = threading.Barrier(4)
    errors: list[Exception] = []

    def open_one() -> None:
        start.wait()
        try:
            open_journal(postgres_url).close()
        except JournalError as error:
            errors.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
