"""`phr serve`: hashtag suggestions over HTTP from a warm process (FastAPI under uvicorn).

Everything loads once (checkpoint, the store's features and explanation evidence; the
encoders on the device thread as the server starts, /health/ready answering 503 until they
are in). A request's clip is looked up in the store, else decoded in a pool of worker
processes (the per-file time limit and memory cap of `phr extract`), then waits a short
collection window so that clips arriving together share one encoder batch; encoding and
scoring run on one device thread beside the event loop, so a slow clip never stalls it.

Safe by default: loopback only unless a bearer token is set (compared in constant time;
/health/live, the API documents and /docs need none); uploads are streamed into a private
temporary folder, capped while they stream and deleted after the answer; a JSON `path` is
served only from under `--media-root`, resolved first so that `..` and symbolic links
cannot leave it. Answers name a clip as the client did, and show server paths (the
checkpoint, the store) to loopback clients only. The contract is schema.py's models.

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
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent import futures
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Generic, TypeVar

import pebble
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from phr_cli.data import decode
from phr_cli.data.decode_options import DecodeLimits
from phr_cli.data.journal import LivePost, open_journal
from phr_cli.data.posts import normalize_user
from phr_cli.data.statuses import Status
from phr_cli.encoders.pipeline import Encoders
from phr_cli.errors import PhrError
from phr_cli.serving import lifecycle, reload
from phr_cli.serving.history import LiveHistory
from phr_cli.serving.metrics import CONTENT_TYPE, RequestMetrics, ServeMetrics
from phr_cli.serving.options import ServeOptions, is_loopback, journal_beside
from phr_cli.serving.recommend import ClipRecommendation, PreparedClip, Recommender
from phr_cli.serving.schema import (
    POST_EXAMPLE,
    RECOMMEND_EXAMPLE,
    ErrorMessage,
    FieldsT,
    Liveness,
    NothingToLearn,
    Posted,
    PostFields,
    Provenance,
    Readiness,
    ReadinessStatus,
    Recommendation,
    RecommendFields,
    UserHashtags,
    clip_request_body,
    json_body,
)

log = logging.getLogger("phr.serve")
Answer = TypeVar("Answer")  # what a route's service call gives
FIELD_LIMIT = 64 << 10  # bytes of a form field other than the clip (a caption is far shorter)

# What each refusal means, as the API document gives it.
REFUSALS = {
    400: "A malformed body (not JSON, or a broken multipart upload).",
    401: "A missing or wrong bearer token.",
    403: "A JSON `path` outside --media-root, or paths not served (no --media-root).",
    404: "A JSON `path` that names no file under --media-root.",
    413: "An upload or a field over its size limit.",
    415: "A body that is neither multipart/form-data nor JSON.",
    422: "A field missing, repeated or out of its range.",
    500: "The server could not rank the clip (e.g. its encoders differ from the checkpoint's).",
}


# The scheme as the API document declares it; `bearer_check` compares the token.
BEARER = HTTPBearer(auto_error=False, description="The token `phr serve` was started with (--token).")


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses` of a route: each status with its one-line error body."""
    return {status: {"model": ErrorMessage, "description": REFUSALS[status]} for status in statuses}


class RequestError(Exception):
    """A request the server refuses: answered with `status` and a one-line JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NothingToLearnError(Exception):
    """A published post whose clip gave nothing to learn from: answered 422 with the clip's status."""

    def __init__(self, message: str, status: Status) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Stages:
    """Wall time of a request's stages (seconds), as its log line and Server-Timing header give them."""

    decode: float = 0.0  # store look-up and decoding, waiting for a decoder included
    encode: float = 0.0  # from joining a batch to its features: the window and device waits included
    score: float = 0.0  # scoring and ranking (its own time on the device thread)
    explain: float = 0.0  # the suggestions' explanations (likewise)
    record: float = 0.0  # a published post: the journal's durable write and its fold-in (POST /posts)

    def header(self) -> str:
        return ", ".join(f"{name};dur={1000 * value:.1f}" for name, value in vars(self).items())


@dataclass
class ClipRequest(Generic[FieldsT]):
    """A clip request, read and checked: its fields, the file to read and the clip's name for answers."""

    fields: FieldsT
    clip: Path  # the upload in the server's private folder, or the JSON path resolved under the media root
    name: str  # as the client named it: the upload's file name, or the JSON path as given


def load_encoders(encoders: Encoders) -> None:
    """Load every encoder now, not on the first request that needs it (the text encoder takes seconds)."""
    for modality in ("visual", "acoustic", "textual"):
        getattr(encoders, modality)


class Service:
    """The warm recommender with its decoding pool, device thread and encoder batches."""

    def __init__(self, recommender: Recommender, options: ServeOptions, checkpoint_path: Path,
                 metrics: ServeMetrics) -> None:
        self.options, self.metrics = options, metrics
        self.limits = DecodeLimits(seconds_per_file=options.file_timeout)
        recommender.load_store(explain=True)
        self.upload_dir = Path(tempfile.mkdtemp(prefix="phr-serve-"))  # mode 0700: this user only
        self.device = futures.ThreadPoolExecutor(1, thread_name_prefix="phr-device")
        history = LiveHistory(open_journal(options.journal or journal_beside(checkpoint_path)), recommender)
        self.reloader = reload.Reloader(reload.loaded(recommender, history, checkpoint_path), checkpoint_path,
                                        metrics)
        # First on the device thread: requests that arrive meanwhile queue behind it.
        self.encoders_loading = self.device.submit(self._warm_up)
        self.encoders_loading.add_done_callback(_log_encoder_failure)
        self.files = futures.ThreadPoolExecutor(4, thread_name_prefix="phr-files")  # hashing, thread decoding
        # spawn, not fork: this process holds torch threads a forked child must not inherit.
        self.pool = pebble.ProcessPool(
            max_workers=options.decode_workers, context=multiprocessing.get_context("spawn"),
            initializer=decode.limit_memory, initargs=(self.limits.memory_bytes,),
        ) if options.decode_workers else None
        # Each clip with the recommender of its request (a reload may come between two requests).
        self.waiting: list[tuple[Recommender, PreparedClip, asyncio.Future]] = []
        self.flush_timer: asyncio.TimerHandle | None = None
        self.reloading: set[asyncio.Task] = set()

    @property
    def recommender(self) -> Recommender:
        """The model serving now: a request reads it once, at its start, and keeps it."""
        return self.reloader.model.recommender

    @property
    def history(self) -> LiveHistory:
        """The serving model's live history (swapped with it; the journal is the same)."""
        return self.reloader.model.history

    @property
    def checkpoint_sha256(self) -> str:
        return self.reloader.model.sha256

    def reload_in_background(self) -> None:
        """SIGHUP's reload: the log says how it went."""
        task = asyncio.ensure_future(reload.answer(self.reloader, None))
        self.reloading.add(task)  # kept until it ends (the loop holds only a weak reference)
        task.add_done_callback(self.reloading.discard)

    def _warm_up(self) -> None:
        """Every encoder loaded, and the journal's posts since training replayed into the history."""
        load_encoders(self.recommender.encoders)
        replayed = self.history.catch_up()
        if replayed:
            log.info("replayed %d post(s) published since training from %s", replayed, self.history.journal.location)

    @property
    def readiness(self) -> ReadinessStatus:
        if not self.encoders_loading.done():
            return "loading"
        return "failed" if self.encoders_loading.exception() is not None else "ready"

    def close(self) -> None:
        if self.pool is not None:
            self.pool.stop()
            self.pool.join()
        self.device.shutdown(wait=True)
        self.files.shutdown(wait=True)
        self.history.close()
        shutil.rmtree(self.upload_dir, ignore_errors=True)

    async def _features(self, recommender: Recommender, request: ClipRequest[FieldsT],
                        stages: Stages) -> PreparedClip:
        """The request's clip looked up in the store, else decoded, then encoded (in the next batch)."""
        loop = asyncio.get_running_loop()
        tick = time.perf_counter()
        prepared = await loop.run_in_executor(self.files, recommender.look_up, request.clip, request.fields.caption)
        if prepared.needs_decoding:
            await self._decode(recommender, prepared)
        stages.decode = time.perf_counter() - tick
        tick = time.perf_counter()
        await self._encode(recommender, prepared)
        stages.encode = time.perf_counter() - tick
        prepared.clip = request.name  # the answer and its error name the clip as the client did
        return prepared

    def _rank(self, recommender: Recommender, prepared: PreparedClip, user: str, top: int) -> ClipRecommendation:
        """On the device thread: what other processes recorded first (if it is time to look), then the ranking."""
        self.history.catch_up_if_due()
        return recommender.rank(prepared, user, min(top, len(recommender.live.hashtags)), False, True)

    async def recommend(self, request: ClipRequest[RecommendFields], stages: Stages) -> dict[str, Any]:
        """`Recommendation`'s fields for the request's clip."""
        recommender = self.recommender  # this request's model, whatever a reload swaps in meanwhile
        prepared = await self._features(recommender, request, stages)
        tick = time.perf_counter()
        result = await asyncio.get_running_loop().run_in_executor(self.device, self._rank, recommender, prepared,
                                                                  request.fields.user, request.fields.top)
        # Waiting for the device thread (behind other batches' encoders) counts as encoding.
        stages.score, stages.explain = prepared.timings.score, prepared.timings.explain
        stages.encode += time.perf_counter() - tick - stages.score - stages.explain
        # A decoder's message may quote the file it read: never show the server's path.
        result.notices = [notice.replace(str(request.clip), request.name) for notice in result.notices]
        if result.error is not None:
            result.error = result.error.replace(str(request.clip), request.name)
        return {**result.to_dict(), "duration": prepared.duration}

    async def publish(self, request: ClipRequest[PostFields], stages: Stages) -> Posted:
        """Record a published post durably, then fold it (and whatever else the journal gained)
        into the history; raises RequestError when the clip gave nothing to learn from."""
        prepared = await self._features(self.recommender, request, stages)
        if not any(prepared.masks.values()):
            reason = prepared.notices[0] if prepared.notices else "no content"
            raise NothingToLearnError(f"{request.name}: {reason.replace(str(request.clip), request.name)}",
                                      prepared.status or Status.CORRUPT)
        fields, loop = request.fields, asyncio.get_running_loop()
        post = LivePost(
            id=fields.id or uuid.uuid4().hex, user=normalize_user(fields.user) or fields.user,
            hashtags=fields.hashtags, caption=fields.caption, time=fields.posted_at, key=prepared.key,
            clip=request.name,
            features={**prepared.features, "text_embedding": prepared.text_embedding}, masks=dict(prepared.masks),
            status=str(prepared.status))
        tick = time.perf_counter()
        sequence, new = await loop.run_in_executor(self.files, self.history.record, post)
        await loop.run_in_executor(self.device, self.history.catch_up)
        stages.record = time.perf_counter() - tick
        return Posted(id=post.id, sequence=sequence, new=new, user=post.user, hashtags=post.hashtags)

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


def _log_encoder_failure(loading: futures.Future) -> None:
    if loading.exception() is not None:
        log.error("the encoders failed to load; /health/ready answers 503: %s", loading.exception())


def create_app(recommender: Recommender, options: ServeOptions, checkpoint_path: Path,
               after_reload: Callable[[], None] | None = None) -> FastAPI:
    """The HTTP API over a loaded recommender (the service starts with the app's lifespan).
    `after_reload` runs after `POST /admin/reload` swapped the model (workers: tell the others)."""
    state: dict[str, Service] = {}
    metrics = ServeMetrics()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        state["service"] = Service(recommender, options, checkpoint_path, metrics)
        try:
            with lifecycle.on_hangup(state["service"].reload_in_background):
                yield
        finally:
            state.pop("service").close()
            metrics.close()

    # The documents (/docs, /redoc) load Swagger UI and ReDoc from the installed package, not a CDN.
    app = FastAPIOffline(title="phr", description="Personalised hashtag suggestions for micro-videos (GCN-PHR).",
                         lifespan=lifespan)
    app.exception_handler(HTTPException)(one_line_error)
    app.exception_handler(RequestValidationError)(invalid_request)
    app.exception_handler(RequestError)(refused)
    app.add_middleware(RequestMetrics, metrics=metrics)
    guarded = APIRouter(dependencies=[Depends(bearer_check(options.token))], responses=refusals(401)) \
        if options.token else APIRouter()

    @app.get("/health/live")
    def live() -> Liveness:
        """200 while the process answers (no token needed: a load balancer's probe)."""
        return Liveness()

    def ready(request: Request, response: Response) -> Readiness:
        """200 once every encoder is loaded, 503 before; the checkpoint served and its provenance.
        Paths (checkpoint, store) are shown to loopback clients only."""
        service = state["service"]
        status, recommender = service.readiness, service.recommender
        response.status_code = 200 if status == "ready" else 503
        checkpoint, provenance = recommender.checkpoint, recommender.checkpoint.provenance
        local = request.client is not None and is_loopback(request.client.host)
        return Readiness(
            status=status, checkpoint_sha256=service.checkpoint_sha256, device=str(recommender.device),
            checkpoint=str(checkpoint_path) if local else None,
            # The store read: found relative to the checkpoint first (`Checkpoint.find_store`), or --store.
            store=str(recommender.store_path) if local and recommender.store_path is not None else None,
            best_epoch=checkpoint.best_epoch, users=len(checkpoint.users), hashtags=len(checkpoint.hashtags),
            random_weights=recommender.random_weights, explanations=recommender.explain_problem or "available",
            provenance=Provenance(store=provenance.store if local else None, encoders=provenance.encoders,
                                  sampling=provenance.sampling, posts_fingerprint=provenance.posts_fingerprint),
        )

    not_ready: dict[int | str, dict[str, Any]] = {
        503: {"model": Readiness, "description": "The encoders are loading, or failed to load."}}
    guarded.get("/health/ready", responses=not_ready)(ready)
    guarded.get("/health", responses=not_ready, summary="Ready (an alias of /health/ready)")(ready)

    @guarded.get("/users/{user}", responses=refusals(422))
    async def user_hashtags(user: str) -> UserHashtags:
        """Whether the model knows the user, and their hashtags with counts (training and published since)."""
        def counts() -> UserHashtags:  # on the device thread, which folds posts in
            service.history.catch_up_if_due()
            recommender = service.recommender
            return UserHashtags.model_validate({
                "user": user, "known": recommender.known_user(user),
                "hashtags": [{"hashtag": h, "count": n} for h, n in recommender.user_hashtag_counts(user).items()]})

        service = state["service"]
        return await asyncio.get_running_loop().run_in_executor(service.device, counts)

    @guarded.post("/posts", status_code=201, response_model=Posted,
                  openapi_extra=clip_request_body(PostFields, POST_EXAMPLE),
                  responses={**refusals(400, 403, 404, 413, 415, 500), 422: {
                      "model": NothingToLearn | ErrorMessage, "description": "A clip that gave nothing to learn "
                      "from (with its status), or a field missing, repeated or out of its range."}})
    async def posts(request: Request, response: Response) -> Posted | JSONResponse:
        """A post the user just published, with the hashtags they chose (fields as /recommend's, plus
        `hashtags`, optional `time` and `id`): recorded durably, then in the user's history (every
        evidence term of /recommend and /users) from the next request on. A repeated `id` counts once."""
        stages, started = Stages(), time.perf_counter()
        posted = await on_clip(state["service"], options, request, PostFields,
                               lambda service, clip_request: published(service, clip_request, stages, request,
                                                                       started), started)
        if isinstance(posted, JSONResponse):
            return posted
        response.headers["Server-Timing"] = stages.header()
        metrics.post_record_seconds.observe(stages.record)
        metrics.posts.labels("new" if posted.new else "repeated").inc()
        log_request(request, 201, "recorded" if posted.new else "seen before", started, "",
                    f"post {posted.id}, sequence {posted.sequence}, decode {1000 * stages.decode:.0f} ms, "
                    f"encode {1000 * stages.encode:.0f} ms, record {1000 * stages.record:.0f} ms", stages)
        return posted

    clip_refused: dict[str, Any] = {
        "model": Recommendation | ErrorMessage, "description": "The clip gave nothing to rank from (a Recommendation "
        "with its status and error), or a field is missing, repeated or out of its range."}

    @guarded.post("/recommend", response_model=Recommendation,
                  openapi_extra=clip_request_body(RecommendFields, RECOMMEND_EXAMPLE),
                  responses={**refusals(400, 403, 404, 413, 415, 500), 422: clip_refused})
    async def recommend(request: Request, response: Response) -> Recommendation | JSONResponse:
        """Suggestions for one clip: a multipart upload (`clip`, `user`, `caption`, `top`) or a
        JSON body with `path` under --media-root. Answers one element of `phr recommend --json`."""
        stages, started = Stages(), time.perf_counter()
        answer = await on_clip(state["service"], options, request, RecommendFields,
                               lambda service, clip_request: service.recommend(clip_request, stages), started)
        if isinstance(answer, JSONResponse):
            return answer
        response.status_code = 422 if answer["error"] else 200
        response.headers["Server-Timing"] = stages.header()
        metrics.observe_stages(vars(stages))
        log_request(request, response.status_code, str(answer["status"]), started, answer["error"] or "",
                    f"clip {answer['duration']:.1f} s, decode {1000 * stages.decode:.0f} ms, "
                    f"encode {1000 * stages.encode:.0f} ms, score {1000 * stages.score:.0f} ms, "
                    f"explain {1000 * stages.explain:.0f} ms", stages)
        return Recommendation.model_validate(answer)

    add_operations(guarded, state, options, metrics, after_reload)
    app.include_router(guarded)
    return app


def add_operations(router: APIRouter, state: dict[str, Service], options: ServeOptions, metrics: ServeMetrics,
                   after_reload: Callable[[], None] | None) -> None:
    """/metrics and /admin/reload."""

    @router.get("/metrics", response_class=Response)
    def prometheus_metrics() -> Response:
        """Prometheus metrics in the text format (requests, stage latencies, queue depth, model version)."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @router.post("/admin/reload", responses={**refusals(500), 403: {
        "model": ErrorMessage, "description": "No token set (--token): reload with SIGHUP."}, 409: {
        "model": ErrorMessage, "description": "The checkpoint file cannot replace the serving one."}})
    async def admin_reload() -> JSONResponse:
        """Load the checkpoint file again and swap it in, as SIGHUP does; needs --token. 200 with the
        new SHA-256; 409 with the reason when the file cannot replace the serving checkpoint, 500
        when loading failed otherwise: either way the previous checkpoint serves on."""
        if options.token is None:
            return JSONResponse({"error": "reloading over HTTP needs a token (--token); send SIGHUP instead"}, 403)
        status, body = await reload.answer(state["service"].reloader, after_reload)
        return JSONResponse(body, status)


async def on_clip(service: Service, options: ServeOptions, request: Request, fields: type[FieldsT],
                  call: Callable[[Service, ClipRequest[FieldsT]], Awaitable[Answer]],
                  started: float) -> Answer | JSONResponse:
    """`call` on the request's clip request (an upload is deleted once it returns); a PhrError is
    answered 500, and logged."""
    async with read_clip_request(request, service.upload_dir, options, fields) as clip_request:
        try:
            return await call(service, clip_request)
        except PhrError as error:
            log_request(request, 500, "failed", started, str(error))
            return JSONResponse({"error": str(error)}, 500)


async def published(service: Service, clip_request: ClipRequest[PostFields], stages: Stages, request: Request,
                    started: float) -> Posted | JSONResponse:
    """The post recorded, or a 422 (logged) naming the clip's status when it gave nothing to learn from."""
    try:
        return await service.publish(clip_request, stages)
    except NothingToLearnError as refusal:
        log_request(request, 422, str(refusal.status), started, str(refusal))
        return JSONResponse(NothingToLearn(error=str(refusal), status=refusal.status).model_dump(), 422)


def bearer_check(token: str | None) -> Callable[..., None]:
    """The dependency of every route but liveness when a token is set: the request's bearer token
    must be it (the scheme's name in any case, as RFC 9110 has it)."""
    expected = (token or "").encode()

    def authorised(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        # Starlette decodes header bytes as Latin-1: encoding back gives the bytes the client sent.
        given = credentials.credentials.encode("latin-1") if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return authorised


async def one_line_error(request: Request, error: HTTPException) -> JSONResponse:
    log_request(request, error.status_code, "refused", None, str(error.detail))
    return JSONResponse({"error": str(error.detail)}, error.status_code, headers=error.headers)


async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    first = error.errors()[0] if error.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = f"{where}: {first.get('msg', 'invalid request')}"
    log_request(request, 422, "refused", None, message)
    return JSONResponse({"error": message}, 422)


async def refused(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestError)
    log_request(request, error.status, "refused", None, str(error))
    return JSONResponse({"error": str(error)}, error.status)


def log_request(request: Request, status: int, outcome: str, started: float | None, reason: str = "",
                stages: str = "", timings: Stages | None = None) -> None:
    """One line per request: its answer, who asked (the user as given, the client's address) and why
    a refusal (user-given text is quoted, so that it cannot forge a line). The same as fields of
    the record, for JSON log lines (--log-format json)."""
    client = request.client.host if request.client is not None else "-"
    user = getattr(request.state, "user", None)
    total = None if started is None else round(1000 * (time.perf_counter() - started))
    fields: dict[str, Any] = {"status": status, "outcome": outcome, "method": request.method,
                              "path": request.url.path, "user": user, "client": client, "reason": reason or None,
                              "total_ms": total}
    if timings is not None:
        fields.update({f"{stage}_ms": round(1000 * seconds) for stage, seconds in vars(timings).items()})
    took = f", total {total} ms" if total is not None else ""
    log.info("%d %s %s %s user %s client %s%s%s%s", status, outcome, request.method, request.url.path,
             "-" if user is None else repr(user), client, f": {reason!r}" if reason else "",
             f", {stages}" if stages else "", took, extra=fields)


@asynccontextmanager
async def read_clip_request(request: Request, upload_dir: Path, options: ServeOptions,
                            fields: type[FieldsT]) -> AsyncIterator[ClipRequest[FieldsT]]:
    """A clip request (multipart: the `clip` file and `fields`; JSON: `fields` and a `path` under the
    media root), checked against `fields`; an upload is deleted when the block ends. Raises
    RequestError for a request to refuse."""
    content_type, _ = parse_options_header(request.headers.get("content-type"))
    if content_type == b"multipart/form-data":
        known = set(fields.model_fields)
        form, name, uploaded = await read_upload(request, upload_dir, options.max_upload_bytes, known)
        try:
            yield ClipRequest(checked(request, fields, fields.form_values(form)), uploaded, name)
        finally:
            uploaded.unlink(missing_ok=True)
    elif content_type == b"application/json":
        # Strict: JSON has types, so `"top": "5"` is refused as the schema says (a form's are all text).
        given = checked(request, json_body(fields), await read_json(request), strict=True)
        path = given.model_dump(include={"path"})["path"]
        yield ClipRequest(given, inside_media_root(options.media_root, path), path)
    else:
        raise RequestError(415, "send multipart/form-data (clip, user, caption, top) or JSON with path")


def checked(request: Request, model: type[FieldsT], values: dict[str, Any], strict: bool = False) -> FieldsT:
    """`values` as `model`, or a 422 naming the first field at fault; the user is kept for the log line."""
    if isinstance(values.get("user"), str):
        request.state.user = values["user"]
    try:
        return model.model_validate(values, strict=strict)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise RequestError(422, f"{where}: {first['msg']}") from None


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


def inside_media_root(media_root: Path | None, given: str) -> Path:
    """`given` resolved (links followed, `..` removed) if it names a file under the media root."""
    if media_root is None:
        raise RequestError(403, "paths are not served: start the server with --media-root")
    root = media_root.resolve()
    try:
        resolved = (root / given).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a link loop, or a NUL in the name
        raise RequestError(404, f"{given}: no such file under the media root") from None
    if not resolved.is_relative_to(root):
        raise RequestError(403, f"{given}: outside the media root")
    if not resolved.is_file():
        raise RequestError(404, f"{given}: not a file")
    return resolved


async def read_upload(request: Request, folder: Path, limit: int, known: set[str]) -> tuple[dict[str, str], str, Path]:
    """Stream a multipart body: the `clip` part into a new private file in `folder` (at most
    `limit` bytes, counted as it arrives), the other fields into memory. Returns the fields, the
    clip's file name as the client sent it, and the file."""
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
            collected = await _parse_parts(request, boundary, file, limit, known)
        if collected.clip_name is None:
            raise RequestError(422, "clip: Field required (the uploaded file)")
        return collected.fields, collected.clip_name, path
    except BaseException:
        path.unlink(missing_ok=True)
        raise


class _MultipartFields:
    """The callbacks of a MultipartParser: the `clip` part is written to `file` (at most
    `limit` bytes), the other parts collected into `fields` (at most FIELD_LIMIT bytes each).
    A field of the request (`known`, and the clip) named twice is refused: which of two clips (or
    users) was meant is the client's to say; other parts are ignored, as the fields model does."""

    def __init__(self, file: BinaryIO, limit: int, known: set[str]) -> None:
        self.file, self.limit, self.known = file, limit, known | {"clip"}
        self.fields: dict[str, str] = {}
        self.clip_name: str | None = None
        self.seen: set[str] = set()
        self.current: dict[str, Any] = {}
        self.header: list[bytes] = [b"", b""]

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header[0] += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.header[1] += data[start:end]

    def header_end(self) -> None:
        if self.header[0].lower() == b"content-disposition":
            _, params = parse_options_header(self.header[1])
            name = params.get(b"name", b"").decode(errors="replace")
            if name in self.seen and name in self.known:
                raise RequestError(422, f"{name}: given more than once (one clip and one user per request)")
            if name:
                self.seen.add(name)
            self.current["name"] = name
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
            self.clip_name = self.current.get("filename") or "upload"
        elif self.current.get("name"):
            self.fields[self.current["name"]] = self.current["value"].decode(errors="replace")


async def _parse_parts(request: Request, boundary: bytes, file: BinaryIO, limit: int,
                       known: set[str]) -> _MultipartFields:
    collected = _MultipartFields(file, limit, known)
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
    return collected


def run(recommender: Recommender, options: ServeOptions, checkpoint_path: Path) -> None:
    """Serve in this process until SIGTERM or SIGINT, then drain (serving/lifecycle.py; the
    service closes on the way out). `--workers` above 1 runs `lifecycle.serve_workers` instead."""
    lifecycle.serve_one(create_app(recommender, options, checkpoint_path), options)
