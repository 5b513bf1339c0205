"""`phr serve`'s processes and signals, on uvicorn.

- SIGHUP reloads the checkpoint in place (serving/reload.py); the server keeps serving.
- SIGTERM and SIGINT stop accepting connections, give the requests in flight up to
  `--drain-timeout` seconds to be answered (uvicorn's graceful shutdown), close the service and
  exit with status 0.
- `--workers N`: N processes share one listening socket (uvicorn's supervisor); each loads the
  model. The supervisor forwards SIGHUP to every worker, and each reloads itself in place, as a
  single server does (uvicorn's own SIGHUP would start new processes, loading the encoders anew).
  `POST /admin/reload` reloads the worker that answers it, which then sends SIGHUP to the
  supervisor so that the others follow (the answering one finds its file loaded already).
  The workers' Prometheus values are shared through a folder (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

from phr_cli.errors import PhrError
from phr_cli.serving.logs import logging_config
from phr_cli.serving.metrics import MULTIPROCESS_DIR
from phr_cli.serving.options import ServeOptions

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("phr.serve")
# Seconds a worker has to answer the supervisor's ping; its loading thread holds the GIL at times.
WORKER_PING_TIMEOUT = 30


def ignore_hangup() -> None:
    """SIGHUP while the model loads is ignored (by default it would end the process): the
    reload handler is installed once the server runs (`on_hangup`)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


@contextlib.contextmanager
def on_hangup(reload: Callable[[], Any]) -> Iterator[None]:
    """Call `reload` in the running event loop on SIGHUP, while the server runs. Only a server
    on the main thread installs it (a test client runs its app's loop on another thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        ignore_hangup()  # not the default action (ending the process) while it shuts down


def uvicorn_config(app: Any, options: ServeOptions, **settings: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=options.host, port=options.port, log_config=logging_config(options.log_format),
        access_log=False,  # phr logs each request itself, with its stages
        # uvicorn takes whole seconds (an int) but compares a float as well: keep the fraction.
        timeout_graceful_shutdown=options.drain_timeout,  # type: ignore[arg-type]
        **settings)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but a stop by SIGTERM or SIGINT ends with exit status 0 once drained:
    uvicorn raises the signal again after its graceful shutdown, which ends the process by it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve_one(app: FastAPI, options: ServeOptions) -> None:
    """Serve `app` in this process until SIGTERM or SIGINT, then drain."""
    DrainingServer(uvicorn_config(app, options)).run()


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process loads (pickled to it: the supervisor starts workers by spawning)."""

    checkpoint: Path
    device: str
    weights_dir: Path | None
    store: Path | None
    options: ServeOptions
    supervisor_pid: int


def worker_app(spec: WorkerSpec) -> FastAPI:
    """A worker's app (uvicorn's app factory): its own model, loaded here."""
    from phr_cli.serving.recommend import Recommender
    from phr_cli.serving.serve import create_app

    ignore_hangup()
    logging.captureWarnings(True)  # uvicorn configured this process's logging; warnings join it
    try:
        recommender = Recommender(spec.checkpoint, spec.device, spec.weights_dir, spec.store)
        recommender.load_store(explain=True)
    except PhrError as error:
        log.error("worker %d: %s", os.getpid(), error)
        sys.exit(STARTUP_FAILURE)  # the supervisor stops rather than start it again
    return create_app(recommender, spec.options, spec.checkpoint,
                      after_reload=partial(os.kill, spec.supervisor_pid, signal.SIGHUP))


class ReloadingSupervisor(Multiprocess):
    """uvicorn's supervisor of worker processes, forwarding SIGHUP to each worker to reload in place."""

    def handle_hup(self) -> None:
        log.info("SIGHUP: every worker reloads the checkpoint")
        for process in self.processes:
            if process.pid is not None and process.exitcode is None:
                os.kill(process.pid, signal.SIGHUP)

    def failed_to_start(self) -> bool:
        return any(process.exitcode == STARTUP_FAILURE for process in self.processes)


def serve_workers(spec: WorkerSpec) -> None:
    """Serve with `spec.options.workers` processes until SIGTERM or SIGINT; a PhrError when the
    workers could not start (each said why in the log)."""
    config = uvicorn_config(partial(worker_app, spec), spec.options, factory=True, workers=spec.options.workers,
                            timeout_worker_healthcheck=WORKER_PING_TIMEOUT)
    shared = os.environ.get(MULTIPROCESS_DIR)
    metrics_dir = None if shared else tempfile.mkdtemp(prefix="phr-serve-metrics-")
    if metrics_dir is not None:
        os.environ[MULTIPROCESS_DIR] = metrics_dir  # the workers inherit it
    try:
        supervisor = ReloadingSupervisor(config, sockets=[config.bind_socket()])
        supervisor.run()
    finally:
        if metrics_dir is not None:
            del os.environ[MULTIPROCESS_DIR]
            shutil.rmtree(metrics_dir, ignore_errors=True)
    if supervisor.failed_to_start():
        raise PhrError("a worker could not load the model (its reason is logged above); no server runs")


def worker_spec(checkpoint: Path, device: str, weights_dir: Path | None, store: Path | None,
                options: ServeOptions) -> WorkerSpec:
    return WorkerSpec(checkpoint, device, weights_dir, store, options, supervisor_pid=os.getpid())
