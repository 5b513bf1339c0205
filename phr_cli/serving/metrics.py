"""`phr serve`'s Prometheus metrics, served at /metrics in the text format (prometheus-client).

- `phr_http_requests_total{route,method,status}` and `phr_http_request_duration_seconds{route}`:
  every request, by its route's template (`/users/{user}`; `unmatched` for unknown paths);
- `phr_http_requests_in_progress`: requests being answered now;
- `phr_recommend_stage_seconds{stage}`: a /recommend request's decode, encode, score and explain times;
- `phr_post_record_seconds` and `phr_posts_total{outcome}`: a POST /posts' durable write and
  fold-in, and the posts recorded (`new`) or seen before (`repeated`, counted once);
- `phr_encode_queue_depth`: clips waiting for the next encoder batch;
- `phr_model_info{sha256}` (1: the checkpoint serving) and `phr_model_loaded_timestamp_seconds`;
- `phr_model_reloads_total{outcome}`: reloads that swapped, found the same file, or were refused/failed.

With `--workers N` the workers share their values through prometheus-client's multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR`, set by serving/lifecycle.py): any worker's /metrics adds them up.
There a worker's earlier checkpoints stay in `phr_model_info` with the value 0 (the mode keeps
every series a live process wrote) and the per-worker gauges carry a `pid` label.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own switch to shared values
CONTENT_TYPE = CONTENT_TYPE_LATEST
# Seconds: a stored clip scores in milliseconds; an upload decodes and encodes in seconds on a CPU.
STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STAGES = ("decode", "encode", "score", "explain")
UNMATCHED = "unmatched"  # the route label of a path no route serves: paths themselves would be unbounded


class ServeMetrics:
    """One server's metrics, in a registry of its own (several apps may live in one test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("phr_http_requests", "HTTP requests answered, by route template and status.",
                                ["route", "method", "status"], registry=self.registry)
        self.request_seconds = Histogram("phr_http_request_duration_seconds", "Time to answer a request.",
                                         ["route"], buckets=STAGE_BUCKETS, registry=self.registry)
        self.in_progress = Gauge("phr_http_requests_in_progress", "Requests being answered now.",
                                 registry=self.registry, multiprocess_mode="livesum")
        self.stage_seconds = Histogram("phr_recommend_stage_seconds", "A /recommend request's time per stage.",
                                       ["stage"], buckets=STAGE_BUCKETS, registry=self.registry)
        self.post_record_seconds = Histogram("phr_post_record_seconds", "A published post's durable write and "
                                             "fold-in (POST /posts).", buckets=STAGE_BUCKETS, registry=self.registry)
        self.posts = Counter("phr_posts", "Published posts (POST /posts): new, or repeated (counted once).",
                             ["outcome"], registry=self.registry)
        self.encode_queue = Gauge("phr_encode_queue_depth", "Clips waiting for the next encoder batch.",
                                  registry=self.registry, multiprocess_mode="livesum")
        self.model = Gauge("phr_model_info", "1 for the checkpoint serving, by its SHA-256.", ["sha256"],
                           registry=self.registry, multiprocess_mode="liveall")
        self.model_loaded = Gauge("phr_model_loaded_timestamp_seconds", "When the serving checkpoint was loaded.",
                                  registry=self.registry, multiprocess_mode="liveall")
        self.reloads = Counter("phr_model_reloads", "Checkpoint reloads by outcome.", ["outcome"],
                               registry=self.registry)

    def serving(self, sha256: str, loaded_at: float, previous: str | None = None) -> None:
        """The model now serving is the checkpoint with `sha256`, loaded at `loaded_at` (Unix time)."""
        if previous is not None and previous != sha256:
            self.model.labels(previous).set(0)
            self.model.remove(previous)
        self.model.labels(sha256).set(1)
        self.model_loaded.set(loaded_at)

    def observe_stages(self, seconds: dict[str, float]) -> None:
        for stage in STAGES:
            self.stage_seconds.labels(stage).observe(seconds.get(stage, 0.0))

    def exposition(self) -> bytes:
        """The text format: this process's registry, or every worker's values in multiprocess mode."""
        if MULTIPROCESS_DIR not in os.environ:
            return generate_latest(self.registry)
        collected = CollectorRegistry()
        multiprocess.MultiProcessCollector(collected)
        return generate_latest(collected)

    @staticmethod
    def close() -> None:
        """A worker going away: its live gauges leave the sums."""
        if MULTIPROCESS_DIR in os.environ:
            multiprocess.mark_process_dead(os.getpid())


class RequestMetrics:
    """ASGI middleware: counts and times every HTTP request by the route that served it."""

    def __init__(self, app: Any, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception before the answer started
        started = time.perf_counter()

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.in_progress.dec()
            route = getattr(scope.get("route"), "path", UNMATCHED)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
