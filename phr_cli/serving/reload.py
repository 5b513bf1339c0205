"""Hot reload: the checkpoint file read again and swapped in while requests flow.

A retrained checkpoint is moved into place (a rename, so that a reader sees the old file or the
new one, whole) and the server told: SIGHUP, or `POST /admin/reload`. The new file loads beside
the serving model, on a thread of its own, and is checked against what runs: its encoders
must be the running ones (which are reused, not loaded again: batches in flight keep encoding
with them), and the store the server reads must match it (`Recommender.load_store`). Only then
does the reference that each request reads once, at its start, point at it: a request in
flight finishes on the model it started with, and a file that fails leaves the old model serving.
The new model follows the same journal as the old one: the posts published since its training
are folded into it before the swap (serving/history.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from phr_cli.errors import PhrError
from phr_cli.files import sha256_of
from phr_cli.serving.history import LiveHistory
from phr_cli.serving.metrics import ServeMetrics
from phr_cli.serving.recommend import Recommender

log = logging.getLogger("phr.serve")


class ReloadRefused(PhrError):
    """The checkpoint in place cannot replace the serving one (answered 409; the old one serves on)."""


@dataclass(frozen=True)
class LoadedModel:
    """A recommender, its live history and the checkpoint file it came from (its SHA-256,
    computed once per load)."""

    recommender: Recommender
    history: LiveHistory
    sha256: str
    loaded_at: float  # Unix time


def loaded(recommender: Recommender, history: LiveHistory, checkpoint_path: Path) -> LoadedModel:
    """The model of a recommender the command loaded at start-up."""
    return LoadedModel(recommender, history, sha256_of(checkpoint_path), time.time())


def replacement(current: LoadedModel, checkpoint_path: Path) -> LoadedModel:
    """The checkpoint now at `checkpoint_path`, loaded and checked to replace `current` (a
    ReloadRefused saying why not). Runs on a thread beside the serving model; takes seconds."""
    try:
        sha256 = sha256_of(checkpoint_path)
    except OSError as error:
        raise ReloadRefused(f"{checkpoint_path}: cannot read it ({error.strerror})") from None
    running = current.recommender
    try:
        # The same device, weights and store as the serving model: only the checkpoint changes.
        recommender = Recommender(checkpoint_path, running.device, running.encoders.weights_dir,
                                  running.store_path)
        if recommender.fingerprint != running.fingerprint:
            changed = sorted(m for m in running.fingerprint if recommender.fingerprint.get(m) != running.fingerprint[m])
            raise ReloadRefused(f"{checkpoint_path} was trained with other {' and '.join(changed)} encoders than "
                                "the running ones; restart phr serve to change encoders")
        recommender.load_store(explain=True)
        # The same journal (one connection, shared): what was published since, folded in now.
        history = LiveHistory(current.history.journal, recommender)
        history.catch_up()
    except ReloadRefused:
        raise
    except PhrError as error:
        raise ReloadRefused(str(error)) from None
    if sha256_of(checkpoint_path) != sha256:  # replaced while it loaded: which file is this?
        raise ReloadRefused(f"{checkpoint_path} was replaced while it loaded; reload again")
    recommender.encoders = running.encoders  # the same weights, already loaded
    return LoadedModel(recommender, history, sha256, time.time())


@dataclass(frozen=True)
class ReloadOutcome:
    model: LoadedModel  # the one serving now
    previous_sha256: str

    @property
    def changed(self) -> bool:
        return self.model.sha256 != self.previous_sha256

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint_sha256": self.model.sha256, "previous_sha256": self.previous_sha256,
                "changed": self.changed, "loaded_at": self.model.loaded_at}


class Reloader:
    """Holds the serving model (`model`, which a request reads once, at its start) and swaps it
    for the checkpoint file in place, one reload at a time."""

    def __init__(self, model: LoadedModel, checkpoint_path: Path, metrics: ServeMetrics) -> None:
        self.model, self.checkpoint_path, self.metrics = model, checkpoint_path, metrics
        self._one_at_a_time = asyncio.Lock()
        metrics.serving(model.sha256, model.loaded_at)

    async def reload(self) -> ReloadOutcome:
        """Load the file again and swap it in; the same file (by SHA-256) is not loaded twice.
        Raises ReloadRefused, or whatever else failed, with the old model still serving."""
        async with self._one_at_a_time:
            previous = self.model
            try:
                if await asyncio.to_thread(sha256_of, self.checkpoint_path) == previous.sha256:
                    self.metrics.reloads.labels("unchanged").inc()
                    log.info("reload: %s is the checkpoint serving already", self.checkpoint_path,
                             extra={"checkpoint_sha256": previous.sha256})
                    return ReloadOutcome(previous, previous.sha256)
                new = await asyncio.to_thread(replacement, previous, self.checkpoint_path)
            except OSError as error:
                self._refused(ReloadRefused(f"{self.checkpoint_path}: cannot read it ({error.strerror})"))
            except ReloadRefused as error:
                self._refused(error)
            except Exception:
                self.metrics.reloads.labels("failed").inc()
                log.exception("reload failed; the checkpoint %s serves on", previous.sha256)
                raise
            self.model = new  # requests from now on; those in flight keep the one they read
            self.metrics.serving(new.sha256, new.loaded_at, previous.sha256)
            self.metrics.reloads.labels("swapped").inc()
            log.info("reloaded %s", self.checkpoint_path,
                     extra={"checkpoint_sha256": new.sha256, "previous_sha256": previous.sha256})
            return ReloadOutcome(new, previous.sha256)

    def _refused(self, error: ReloadRefused) -> NoReturn:
        self.metrics.reloads.labels("refused").inc()
        log.warning("reload refused, the checkpoint %s serves on: %s", self.model.sha256, error)
        raise error


async def answer(reloader: Reloader, after_swap: Callable[[], None] | None) -> tuple[int, dict[str, Any]]:
    """POST /admin/reload's status and body: 200 with the SHA-256 serving now; 409 with the reason
    when the file cannot replace the serving model; 500 when loading failed otherwise (out of
    memory, say: the log has the traceback). `after_swap` runs after a swap (with --workers: tell
    the other workers)."""
    try:
        outcome = await reloader.reload()
    except ReloadRefused as error:
        return 409, {"error": str(error)}
    except Exception as error:  # the old model serves on; say so rather than drop the connection
        return 500, {"error": f"reload failed ({type(error).__name__}: {' '.join(str(error).split())[:200]}); "
                              "the previous checkpoint serves on"}
    if outcome.changed and after_swap is not None:
        after_swap()
    return 200, outcome.to_dict()
