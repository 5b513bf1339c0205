"""What `phr serve` is asked (`ServeOptions`). Apart from serve.py, so that they import
without FastAPI and torch: the CLI reads their defaults here.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from pathlib import Path

from phr_cli.errors import ConfigError

# Seconds: a clip never waits longer than this for others to share its batch; a longer window
# only delays every answer (an upload's own decode takes about as long).
MAX_BATCH_WINDOW = 1.0


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None  # required (as a bearer token) to listen beyond loopback
    media_root: Path | None = None  # JSON `path` bodies are refused without one
    max_upload_bytes: int = 100 << 20
    decode_workers: int = 2  # processes; 0 decodes on a thread of this process, without the guards
    file_timeout: float = 30.0  # seconds of decoding a clip gets
    batch_window: float = 0.01  # seconds a clip waits for others to share its encoder batch
    max_batch: int = 32
    # Where published posts (POST /posts) are recorded: a file (SQLite) or a postgresql:// URL shared by
    # replicas; None: beside the checkpoint (`journal_beside`).
    journal: str | None = None

    def __post_init__(self) -> None:
        problem = token_problem(self.token)
        if problem:
            raise ConfigError(f"--token (PHR_TOKEN) {problem}")
        if not is_loopback(self.host) and not self.token:
            raise ConfigError(f"listening on {self.host} (beyond this machine) needs a token: "
                              "pass --token or set PHR_TOKEN")
        if not (math.isfinite(self.file_timeout) and math.isfinite(self.batch_window)):
            raise ConfigError("the decode timeout and the batch window must be finite")
        if self.max_upload_bytes < 1 or self.decode_workers < 0 or self.file_timeout <= 0 \
                or not 0 <= self.batch_window <= MAX_BATCH_WINDOW or self.max_batch < 1:
            raise ConfigError("upload limit, timeout and batch size must be positive, workers ≥ 0 and the "
                              f"window within 0…{MAX_BATCH_WINDOW:g} s")


def token_problem(token: str | None) -> str:
    """Why no client could send `token` as its bearer token ("" when one can, or none is set)."""
    if token is None:
        return ""
    if not token.strip():
        return "is blank: give it a secret"
    if token != token.strip():
        return "starts or ends with spaces, which HTTP drops from a header: no client could send it"
    return ""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


JOURNAL_SUFFIX = ".journal.db"


def journal_beside(checkpoint: Path) -> Path:
    """The default journal of a checkpoint: models/gcn-phr.pt records into models/gcn-phr.journal.db."""
    return Path(checkpoint).with_suffix(JOURNAL_SUFFIX)
