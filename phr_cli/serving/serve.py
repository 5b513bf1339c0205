"""`phr serve`: hashtag suggestions over HTTP from a warm process (FastAPI under uvicorn).

Everything loads once (checkpoint, encoders, the store's features and explanation
evidence). A request's clip is looked up in the store, else decoded in a pool of worker
processes (the per-file time limit and memory cap of `phr extract`), then waits a short
collection window so that clips arriving together share one encoder batch; encoding and
scoring run on one device thread beside the event loop, so a slow clip never stalls it.

Safe by default: loopback only unless a bearer token is set (compared in constant time);
uploads are streamed into a private temporary folder, capped while they stream and deleted
after the answer; a JSON `path` is served only from under `--media-root`, resolved first
so that `..` and symbolic links cannot leave it.

Its lifecycle (serving/lifecycle.py): SIGHUP or `POST /admin/reload` swaps in the checkpoint
file anew (serving/reload.py), SIGTERM drains, `--workers` runs several processes; `/metrics`
serves Prometheus metrics (serving/metrics.py).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent import futures
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pebble
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from phr_cli.data import decode
from phr_cli.data.decode_options import DecodeLimits
from phr_cli.errors import PhrError
from phr_cli.serving import lifecycle, reload
from phr_cli.serving.metrics import CONTENT_TYPE, RequestMetrics, ServeMetrics
from phr_cli.serving.options import ServeOptions
from phr_cli.serving.recommend import PreparedClip, Recommender

log = logging.getLogger("phr.serve")
FIELD_LIMIT = 64 << 10  # bytes of a form field other than the clip (a caption is far shorter)


class RequestError(Exception):
    """A request the server refuses: answered with `status` and a one-line JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Stages:
    """Wall time of a request's stages (seconds), as its log line and Server-Timing header give them."""

    decode: float = 0.0  # store look-up and decoding, waiting for a decoder included
    encode: float = 0.0  # from joining a batch to its features: the window and device waits included
    score: float = 0.0  # scoring and ranking (its own time on the device thread)
    explain: float = 0.0  # the suggestions' explanations (likewise)

    def header(self) -> str:
        return ", ".join(f"{name};dur={1000 * value:.1f}" for name, value in vars(self).items())


class Service:
    """The warm recommender with its decoding pool, device thread and encoder batches."""

    def __init__(self, recommender: Recommender, options: ServeOptions, checkpoint_path: Path,
                 metrics: ServeMetrics) -> None:
        self.options, self.metrics = options, metrics
        self.limits = DecodeLimits(seconds_per_file=options.file_timeout)
        recommender.load_store(explain=True)
        self.reloader = reload.Reloader(reload.loaded(recommender, checkpoint_path), checkpoint_path, metrics)
        self.upload_dir = Path(tempfile.mkdtemp(prefix="phr-serve-"))  # mode 0700: this user only
        self.device = futures.ThreadPoolExecutor(1, thread_name_prefix="phr-device")
        self.files = futures.ThreadPoolExecutor(4, thread_name_prefix="phr-files")  # hashing, thread decoding
        # spawn, not fork: this process holds torch threads a forked child must not inherit.
        self.pool = pebble.ProcessPool(
            max_workers=options.decode_workers, context=multiprocessing.get_context("spawn"),
            initializer=decode.limit_memory, initargs=(self.limits.memory_bytes,),
        ) if options.decode_workers else None
        # Each clip with the recommender of its request (a reload may come between two requests).
        self.waiting: list[tuple[Recommender, PreparedClip, asyncio.Future]] = []
        self.flush_timer: asyncio.TimerHandle | None = None

    @property
    def recommender(self) -> Recommender:
        """The model serving now: a request reads it once, at its start, and keeps it."""
        return self.reloader.model.recommender

    @property
    def checkpoint_sha256(self) -> str:
        return self.reloader.model.sha256

    def close(self) -> None:
        if self.pool is not None:
            self.pool.stop()
            self.pool.join()
        self.device.shutdown(wait=True)
        self.files.shutdown(wait=True)
        shutil.rmtree(self.upload_dir, ignore_errors=True)

    async def recommend(self, recommender: Recommender, clip: Path, name: str, user: str | None, caption: str,
                        top: int, stages: Stages) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        tick = time.perf_counter()
        prepared = await loop.run_in_executor(self.files, recommender.look_up, clip, caption)
        if prepared.needs_decoding:
            await self._decode(recommender, prepared)
        stages.decode = time.perf_counter() - tick
        tick = time.perf_counter()
        await self._encode(recommender, prepared)
        result = await loop.run_in_executor(self.device, recommender.rank, prepared, user, top, False, True)
        # Waiting for the device thread (behind other batches' encoders) counts as encoding.
        stages.score, stages.explain = prepared.timings.score, prepared.timings.explain
        stages.encode = time.perf_counter() - tick - stages.score - stages.explain
        result.clip = name
        answer = result.to_dict()
        answer["duration"] = prepared.duration
        return answer

    async def _decode(self, recommender: Recommender, prepared: PreparedClip) -> None:
        path, sampling = Path(prepared.clip), recommender.sampling
        if self.pool is None:
            decoded = await asyncio.get_running_loop().run_in_executor(
                self.files, decode.decode_guarded, path, sampling, self.limits)
        else:
            future = self.pool.schedule(decode.decode_in_time, args=(path, sampling, self.limits),
                                        timeout=self.limits.seconds_per_file)
            await asyncio.wait([asyncio.wrap_future(future)])  # a failure becomes the clip's status below
            decoded = decode.result_from_pool(future, self.limits)
        recommender.set_decoded(prepared, decoded)

    async def _encode(self, recommender: Recommender, prepared: PreparedClip) -> None:
        """Join the next encoder batch; it runs when the window closes or the batch is full."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self.waiting.append((recommender, prepared, done))
        self.metrics.encode_queue.set(len(self.waiting))
        if len(self.waiting) >= self.options.max_batch:
            self._flush()
        elif self.flush_timer is None:
            self.flush_timer = loop.call_later(self.options.batch_window, self._flush)
        await done

    def _flush(self) -> None:
        if self.flush_timer is not None:
            self.flush_timer.cancel()
            self.flush_timer = None
        waiting, self.waiting = self.waiting, []
        self.metrics.encode_queue.set(0)
        # One batch per model: a clip is encoded with its own request's text projection (the
        # encoders themselves are shared across a reload).
        for recommender in {id(r): r for r, _, _ in waiting}.values():
            self._run_batch(recommender, [(clip, done) for r, clip, done in waiting if r is recommender])

    def _run_batch(self, recommender: Recommender, batch: list[tuple[PreparedClip, asyncio.Future]]) -> None:
        running = asyncio.get_running_loop().run_in_executor(
            self.device, recommender.encode, [clip for clip, _ in batch])

        def settle(finished: asyncio.Future) -> None:
            for _, waiter in batch:
                if waiter.done():  # its request was cancelled (the client went away)
                    continue
                failure = finished.exception()
                if failure is not None:
                    waiter.set_exception(failure)
                else:
                    waiter.set_result(None)

        running.add_done_callback(settle)


def create_app(recommender: Recommender, options: ServeOptions, checkpoint_path: Path,
               after_reload: Callable[[], None] | None = None) -> FastAPI:
    """The HTTP API over a loaded recommender (the service starts with the app's lifespan).
    `after_reload` runs after `POST /admin/reload` swapped the model (workers: tell the others)."""
    state: dict[str, Service] = {}
    metrics = ServeMetrics()
    reloading: set[asyncio.Task] = set()  # SIGHUP's reloads, kept until they end

    def reload_in_background() -> None:
        task = asyncio.ensure_future(reload.answer(state["service"].reloader, None))  # logs its outcome
        reloading.add(task)
        task.add_done_callback(reloading.discard)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        state["service"] = Service(recommender, options, checkpoint_path, metrics)
        try:
            with lifecycle.on_hangup(reload_in_background):
                yield
        finally:
            state.pop("service").close()
            metrics.close()

    app = FastAPI(title="phr", description="Personalised hashtag suggestions for micro-videos (GCN-PHR).",
                  lifespan=lifespan, dependencies=[Depends(bearer_check(options))])
    app.exception_handler(HTTPException)(one_line_error)
    app.exception_handler(RequestValidationError)(invalid_request)
    app.add_middleware(RequestMetrics, metrics=metrics)

    @app.get("/metrics", response_class=Response)
    def prometheus_metrics() -> Response:
        """Prometheus metrics in the text format (requests, stage latencies, queue depth, model version)."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.post("/admin/reload")
    async def admin_reload() -> JSONResponse:
        """Load the checkpoint file again and swap it in, as SIGHUP does; needs --token. 200 with the
        new SHA-256; 409 with the reason when the file cannot replace the serving checkpoint, 500
        when loading failed otherwise: either way the previous checkpoint serves on."""
        if options.token is None:
            return JSONResponse({"error": "reloading over HTTP needs a token (--token); send SIGHUP instead"}, 403)
        status, body = await reload.answer(state["service"].reloader, after_reload)
        return JSONResponse(body, status)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """200 when ready, with the checkpoint's provenance."""
        recommender = state["service"].recommender
        checkpoint, provenance = recommender.checkpoint, recommender.checkpoint.provenance
        return {
            "status": "ready", "checkpoint": str(checkpoint_path), "device": str(recommender.device),
            "checkpoint_sha256": state["service"].checkpoint_sha256,
            "best_epoch": checkpoint.best_epoch, "users": len(checkpoint.users),
            "hashtags": len(checkpoint.hashtags), "random_weights": recommender.random_weights,
            "explanations": recommender.explain_problem or "available",
            # The store read: found relative to the checkpoint first (`Checkpoint.find_store`), or --store.
            "store": None if recommender.store_path is None else str(recommender.store_path),
            "provenance": {"store": provenance.store, "encoders": provenance.encoders,
                           "sampling": provenance.sampling, "posts_fingerprint": provenance.posts_fingerprint},
        }

    @app.get("/users/{user}")
    def user_hashtags(user: str) -> dict[str, Any]:
        """Whether the model knows the user, and their training hashtags with counts."""
        recommender = state["service"].recommender
        counts = recommender.user_hashtag_counts(user)
        return {"user": user, "known": recommender.checkpoint.user_position(user) >= 0,
                "hashtags": [{"hashtag": h, "count": n} for h, n in counts.items()]}

    @app.post("/recommend", openapi_extra=REQUEST_SCHEMA)
    async def recommend(request: Request) -> JSONResponse:
        """Suggestions for one clip: a multipart upload (`clip`, `user`, `caption`, `top`) or a
        JSON body with `path` under --media-root. Answers one element of `phr recommend --json`."""
        service = state["service"]
        recommender = service.recommender  # this request's model, whatever a reload swaps in meanwhile
        stages = Stages()
        uploaded: Path | None = None
        status, outcome = 500, "error"
        started = time.perf_counter()
        try:
            fields, clip, name, uploaded = await read_clip_request(request, service.upload_dir, options)
            user, caption, top = form_values(fields, len(recommender.checkpoint.hashtags))
            answer = await service.recommend(recommender, clip, name, user, caption, top, stages)
            status, outcome = (422, str(answer["status"])) if answer["error"] else (200, str(answer["status"]))
            metrics.observe_stages(vars(stages))
            log_request(status, outcome, answer.get("duration", 0.0), stages, started)
            return JSONResponse(answer, status, headers={"Server-Timing": stages.header()})
        except RequestError as error:
            log_request(error.status, "refused", 0.0, stages, started)
            return JSONResponse({"error": str(error)}, error.status)
        except PhrError as error:
            log_request(500, "failed", 0.0, stages, started)
            return JSONResponse({"error": str(error)}, 500)
        finally:
            if uploaded is not None:
                uploaded.unlink(missing_ok=True)

    return app


def bearer_check(options: ServeOptions) -> Callable[[Request], None]:
    """The dependency every route has: with a token set, a request must carry it as its bearer token."""

    def authorised(request: Request) -> None:
        if options.token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {options.token}".encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return authorised


async def one_line_error(_: Request, error: HTTPException) -> JSONResponse:
    return JSONResponse({"error": str(error.detail)}, error.status_code, headers=error.headers)


async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0] if error.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, 422)


async def read_clip_request(request: Request, upload_dir: Path,
                            options: ServeOptions) -> tuple[dict[str, Any], Path, str, Path | None]:
    """A /recommend request's fields, its clip, the clip's name and the uploaded file to delete
    after the answer (None for a JSON `path` under the media root)."""
    content_type, _ = parse_options_header(request.headers.get("content-type"))
    if content_type == b"multipart/form-data":
        fields, uploaded = await read_upload(request, upload_dir, options.max_upload_bytes)
        return fields, uploaded, fields.pop("clip_name"), uploaded
    if content_type == b"application/json":
        fields = await read_json(request)
        return fields, inside_media_root(options.media_root, fields.get("path")), str(fields["path"]), None
    raise RequestError(415, "send multipart/form-data (clip, user, caption, top) or JSON with path")


REQUEST_SCHEMA: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["clip", "user"], "properties": {
        "clip": {"type": "string", "format": "binary"}, "user": {"type": "string"},
        "caption": {"type": "string"}, "top": {"type": "integer", "minimum": 1}}}},
    "application/json": {"schema": {"type": "object", "required": ["path", "user"], "properties": {
        "path": {"type": "string", "description": "a file under --media-root"}, "user": {"type": "string"},
        "caption": {"type": "string"}, "top": {"type": "integer", "minimum": 1}}}},
}}}


def log_request(status: int, outcome: str, duration: float, stages: Stages, started: float) -> None:
    total = time.perf_counter() - started
    fields = {"status": status, "outcome": outcome, "clip_seconds": round(duration, 3), "total_ms": round(1000 * total)}
    fields.update({f"{stage}_ms": round(1000 * seconds) for stage, seconds in vars(stages).items()})
    log.info("%d %s clip %.1f s, decode %.0f ms, encode %.0f ms, score %.0f ms, explain %.0f ms, total %.0f ms",
             status, outcome, duration, 1000 * stages.decode, 1000 * stages.encode, 1000 * stages.score,
             1000 * stages.explain, 1000 * total, extra=fields)


def form_values(fields: dict[str, Any], n_hashtags: int) -> tuple[str, str, int]:
    """user, caption and top of a request, checked."""
    user = fields.get("user")
    if not isinstance(user, str) or not user:
        raise RequestError(422, "missing field 'user'")
    caption = fields.get("caption") or ""
    if not isinstance(caption, str):
        raise RequestError(422, "'caption' must be text")
    try:
        top = int(fields.get("top") or 10)
    except (TypeError, ValueError):
        raise RequestError(422, f"'top' must be a whole number, not {fields.get('top')!r}") from None
    if top < 1:
        raise RequestError(422, "'top' must be at least 1")
    return user, caption, min(top, n_hashtags)


async def read_json(request: Request) -> dict[str, Any]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FIELD_LIMIT:
            raise RequestError(413, f"a JSON body is limited to {FIELD_LIMIT} bytes")
    try:
        fields = json.loads(body)
    except ValueError:
        raise RequestError(400, "the body is not valid JSON") from None
    if not isinstance(fields, dict):
        raise RequestError(400, "the JSON body must be an object")
    return fields


def inside_media_root(media_root: Path | None, given: Any) -> Path:
    """`given` resolved (links followed, `..` removed) if it names a file under the media root."""
    if media_root is None:
        raise RequestError(403, "paths are not served: start the server with --media-root")
    if not isinstance(given, str) or not given:
        raise RequestError(422, "missing field 'path'")
    root = media_root.resolve()
    try:
        resolved = (root / given).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a link loop
        raise RequestError(404, f"{given}: no such file under the media root") from None
    if not resolved.is_relative_to(root):
        raise RequestError(403, f"{given}: outside the media root")
    if not resolved.is_file():
        raise RequestError(404, f"{given}: not a file")
    return resolved


async def read_upload(request: Request, folder: Path, limit: int) -> tuple[dict[str, Any], Path]:
    """Stream a multipart body: the `clip` part into a new private file in `folder` (at most
    `limit` bytes, counted as it arrives), the other fields into memory. Returns the fields
    (with "clip_name", the uploaded file's name) and the file."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + FIELD_LIMIT:
        raise RequestError(413, f"the upload is larger than the {limit:,}-byte limit")
    _, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if not boundary:
        raise RequestError(400, "a multipart body without a boundary")
    descriptor, name = tempfile.mkstemp(dir=folder, suffix=".upload")
    path = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as file:
            fields = await _parse_parts(request, boundary, file, limit)
        if "clip_name" not in fields:
            raise RequestError(422, "missing field 'clip' (the uploaded file)")
        return fields, path
    except BaseException:
        path.unlink(missing_ok=True)
        raise


class _MultipartFields:
    """The callbacks of a MultipartParser: the `clip` part is written to `file` (at most
    `limit` bytes), the other parts collected into `fields` (at most FIELD_LIMIT bytes each)."""

    def __init__(self, file: BinaryIO, limit: int) -> None:
        self.file, self.limit = file, limit
        self.fields: dict[str, Any] = {}
        self.current: dict[str, Any] = {}
        self.header: list[bytes] = [b"", b""]

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header[0] += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.header[1] += data[start:end]

    def header_end(self) -> None:
        if self.header[0].lower() == b"content-disposition":
            _, params = parse_options_header(self.header[1])
            self.current["name"] = params.get(b"name", b"").decode(errors="replace")
            if b"filename" in params:
                self.current["filename"] = params[b"filename"].decode(errors="replace")
        self.header[0], self.header[1] = b"", b""

    def part_begin(self) -> None:
        self.current.clear()
        self.current["size"], self.current["value"] = 0, b""

    def part_data(self, data: bytes, start: int, end: int) -> None:
        current = self.current
        current["size"] += end - start
        if current.get("name") == "clip":
            if current["size"] > self.limit:
                raise RequestError(413, f"the upload is larger than the {self.limit:,}-byte limit")
            self.file.write(data[start:end])
        elif current["size"] > FIELD_LIMIT:
            raise RequestError(413, f"field {current.get('name')!r} is longer than {FIELD_LIMIT} bytes")
        else:
            current["value"] += data[start:end]

    def part_end(self) -> None:
        if self.current.get("name") == "clip":
            self.fields["clip_name"] = self.current.get("filename") or "upload"
        elif self.current.get("name"):
            self.fields[self.current["name"]] = self.current["value"].decode(errors="replace")


async def _parse_parts(request: Request, boundary: bytes, file: BinaryIO, limit: int) -> dict[str, Any]:
    collected = _MultipartFields(file, limit)
    parser = MultipartParser(boundary, {
        "on_part_begin": collected.part_begin, "on_part_data": collected.part_data,
        "on_part_end": collected.part_end, "on_header_field": collected.header_field,
        "on_header_value": collected.header_value, "on_header_end": collected.header_end,
    })
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as error:
        raise RequestError(400, f"a malformed multipart body ({' '.join(str(error).split())})") from None
    return collected.fields


def run(recommender: Recommender, options: ServeOptions, checkpoint_path: Path) -> None:
    """Serve in this process until SIGTERM or SIGINT, then drain (serving/lifecycle.py; the
    service closes on the way out). `--workers` above 1 runs `lifecycle.serve_workers` instead."""
    lifecycle.serve_one(create_app(recommender, options, checkpoint_path), options)

