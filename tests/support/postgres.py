"""A throwaway PostgreSQL server for the tests: Debian's binaries, a data folder in /tmp, a free port.

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as the
`postgres` system user (the package creates it), in a folder of its own outside pytest's
root-only tmp tree. The superuser `phr` logs in over TCP with a password (SCRAM), so the
tests can check that a refused login does not print it.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

USER, PASSWORD = "phr", "journal-test-secret"
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def server_binaries() -> Path:
    """The folder with initdb and pg_ctl: on PATH, else the newest of Debian's /usr/lib/postgresql/<major>/bin."""
    on_path = [shutil.which(name) for name in ("initdb", "pg_ctl")]
    if all(on_path):
        return Path(str(on_path[0])).resolve().parent
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda path: int(Path(path).parts[-3]))
    if not debian:
        raise PostgresUnavailable("PostgreSQL's server is not installed (no initdb/pg_ctl on PATH or under "
                                  "/usr/lib/postgresql/*/bin): apt-get install postgresql")
    return Path(debian[-1]).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_server() -> Iterator[str]:
    """Start a server; yield the URL of its `postgres` database; stop it and delete its files."""
    binaries = server_binaries()
    as_root = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="phr-postgres-"))
    data, log = root / "data", root / "server.log"
    (root / "password").write_text(PASSWORD + "\n")
    if as_root:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(root / "password", "postgres", "postgres")
    # As root: the server's binaries as the postgres user; cwd where that user may read.
    run_as = {"user": "postgres", "group": "postgres", "extra_groups": []} if as_root else {}

    def run(*command: str | Path) -> None:
        subprocess.run([str(part) for part in command], cwd=root, check=True, capture_output=True, text=True, **run_as)

    port = free_port()
    try:
        run(binaries / "initdb", "-D", data, "--username", USER, "--pwfile", root / "password",
            "--auth-local", "trust", "--auth-host", "scram-sha-256", "--encoding", "UTF8", "--locale", "C",
            "--no-sync")  # a throwaway folder: the server itself still syncs every commit
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{root}'\n")
        run(binaries / "pg_ctl", "-D", data, "-l", log, "-w", "-t", str(START_TIMEOUT_S), "start")
    except subprocess.CalledProcessError as error:
        server_log = log.read_text() if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        output = error.stderr or error.stdout
        raise RuntimeError(f"cannot start PostgreSQL from {binaries}: {output}{server_log}") from None
    try:
        yield f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        run(binaries / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def create_database(server_url: str, name: str) -> str:
    """A new empty database on the server; its URL."""
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return server_url.rpartition("/")[0] + f"/{name}"
