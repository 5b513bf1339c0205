"""`phr extract`: a folder of posts -> the HDF5 feature store.

Worker processes decode videos ahead of the encoders; the main process batches frames
and audio examples from many videos through ResNet50 and VGGish, and commits finished
videos to the store in crash-safe segments. Captions are embedded at the end, when the
PCA can be fitted on all of them.

With `ExtractOptions.ray`, decoding and encoding run on a Ray cluster instead
(`phr_cli.ray_extract`); everything else here (hashing, resume, statuses, segments,
captions) is the same code for both.
"""

from __future__ import annotations

import concurrent.futures as futures
import hashlib
import multiprocessing
import os
import signal
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pebble

from phr_cli import decode
from phr_cli.decode import DecodedClip, DecodeLimits, FrameSampling
from phr_cli.posts import Post, PostSet, read_posts
from phr_cli.statuses import FAILED_STATUSES, Status
from phr_cli.store import ACOUSTIC_DIM, VISUAL_DIM, PostRows, StoreLock, StoreWriter



@dataclass
class ExtractOptions:
    device: str = "auto"
    workers: int | None = None  # decoding processes; None: one per core, 0: in-process
    batch_size: int = 64  # frames per ResNet50 batch
    weights_dir: Path | None = None
    random_weights: bool = False
    sampling: FrameSampling = field(default_factory=FrameSampling)
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    feature_dtype: str = "float32"
    precision: str = "fp32"  # autocast of ResNet50 and VGGish: fp32, bf16 or fp16
    commit_every: int = 32  # videos per crash-safe segment
    strict: bool = False  # stop at the first failed file
    ray: bool = False  # decode and encode on a Ray cluster (see phr_cli.ray_extract)
    ray_address: str | None = None  # cluster to join; None: $RAY_ADDRESS, else a local one
    ray_encoders: int | None = None  # encoder actors; None: one per cluster GPU, else one


@dataclass
class VideoOutcome:
    path: Path
    status: Status
    reason: str


@dataclass
class EncodedVideo:
    """One video's row of /videos, as the encoders leave it; the store adds its path."""

    key: str
    duration: float
    status: Status
    reason: str
    n_frames: int
    n_audio_examples: int
    visual: np.ndarray  # (2048,) float32, zeros when masked
    acoustic: np.ndarray  # (128,) float32, zeros when masked
    visual_mask: bool
    acoustic_mask: bool


@dataclass
class ExtractReport:
    store: Path
    posts: int = 0
    videos: int = 0  # distinct video files found
    extracted: int = 0  # decoded and encoded in this run
    reused: int = 0  # already in the store (same content hash)
    statuses: Counter = field(default_factory=Counter)
    failures: list[VideoOutcome] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # the manifest's, line-numbered
    seconds: float = 0.0
    load_seconds: float = 0.0  # loading the encoders, included in seconds
    decode_wait_seconds: float = 0.0  # main process waiting for decoders (with Ray: the cluster)
    encode_seconds: float = 0.0
    write_seconds: float = 0.0  # waiting for the segment writer (which runs beside encoding), and the final merge
    text_seconds: float = 0.0
    stopped_early: bool = False

    @property
    def videos_per_second(self) -> float:
        """Throughput once the encoders are loaded."""
        busy = self.seconds - self.load_seconds
        return self.extracted / busy if busy > 0 else 0.0


ProgressCallback = Callable[[VideoOutcome, ExtractReport, int], None]


def content_key(path: Path) -> str:
    """SHA-256 of the file's bytes: renamed or duplicated files share one key."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class Encoders:
    """The three encoders, each loaded on first use (and then kept)."""

    def __init__(self, device: str, weights_dir: Path | None, random_weights: bool,
                 precision: str = "fp32") -> None:
        self.device, self.weights_dir, self.random_weights = device, weights_dir, random_weights
        self.precision = precision  # autocast of ResNet50 and VGGish; MiniLM stays fp32

    @cached_property
    def visual(self):
        from phr_cli.encoders.visual import VisualEncoder

        return VisualEncoder(self.device, self.weights_dir, self.random_weights,
                             precision=self.precision)

    @cached_property
    def acoustic(self):
        from phr_cli.encoders.audio import AudioEncoder

        return AudioEncoder(self.device, self.weights_dir, self.random_weights,
                            precision=self.precision)

    @cached_property
    def textual(self):
        from phr_cli.encoders.text import TextEncoder

        return TextEncoder(self.device)

    def fingerprint(self, modalities: Iterable[str] = ("visual", "acoustic", "textual")) -> dict:
        """What the store and checkpoints record: each encoder's spec, weight hash and, for
        the autocast ones, precision."""
        recorded = {}
        for modality in modalities:
            encoder = getattr(self, modality)
            recorded[modality] = {"spec": encoder.spec.to_dict(), "weights": encoder.weights_id}
            if modality != "textual":
                recorded[modality]["precision"] = self.precision
        return recorded

    def encode_clips(self, clips: list[DecodedClip], batch_size: int) -> list[dict]:
        """Per clip: mean visual and acoustic features (None where the modality is missing)."""
        import torch

        results = [{"visual": None, "acoustic": None, "n_frames": 0, "n_audio_examples": 0}
                   for _ in clips]
        with_frames = [i for i, c in enumerate(clips) if c.frames is not None and len(c.frames)]
        if with_frames:
            frames = np.concatenate([clips[i].frames for i in with_frames])
            features = self.visual.embed_frames(frames, batch_size)
            counts = [len(clips[i].frames) for i in with_frames]
            for i, chunk in zip(with_frames, torch.split(features, counts)):
                results[i]["visual"] = chunk.mean(0).numpy()
                results[i]["n_frames"] = len(chunk)
        examples = {i: self.acoustic.log_mel(c.audio) for i, c in enumerate(clips) if c.audio is not None}
        examples = {i: e for i, e in examples.items() if len(e)}
        if examples:
            embedded = self.acoustic.embed_examples(torch.cat(list(examples.values())), batch_size)
            counts = [len(e) for e in examples.values()]
            for i, chunk in zip(examples, torch.split(embedded, counts)):
                results[i]["acoustic"] = chunk.mean(0).numpy()
                results[i]["n_audio_examples"] = len(chunk)
        return results

    def encode_videos(self, decoded: list[tuple[str, DecodedClip]], batch_size: int,
                      ) -> list[EncodedVideo]:
        """Store rows for (key, clip) pairs: features, zeros and masks where a modality is missing."""
        encoded = self.encode_clips([clip for _, clip in decoded], batch_size)
        return [
            EncodedVideo(
                key=key, duration=clip.duration, status=clip.status, reason=clip.reason,
                n_frames=features["n_frames"], n_audio_examples=features["n_audio_examples"],
                visual=_or_zeros(features["visual"], VISUAL_DIM),
                acoustic=_or_zeros(features["acoustic"], ACOUSTIC_DIM),
                visual_mask=features["visual"] is not None,
                acoustic_mask=features["acoustic"] is not None,
            )
            for (key, clip), features in zip(decoded, encoded)
        ]


def decode_in_pool(paths: dict[str, Path], workers: int, sampling: FrameSampling,
                   limits: DecodeLimits | None = None) -> Iterator[tuple[str, Path, DecodedClip]]:
    """Decode clips in worker processes, a bounded number ahead, yielding as they finish.

    Each file gets `limits.seconds_per_file` of a worker's time; a worker past it, or one
    that dies (an FFmpeg crash, the kernel's OOM killer), is replaced by pebble and only
    that file gets a status. With `workers=0` clips decode in this process, unguarded.
    """
    limits = limits or DecodeLimits()
    items = iter(paths.items())
    if workers == 0:
        for key, path in items:
            yield key, path, decode.decode_guarded(path, sampling, limits)
        return
    # spawn, not fork: the parent holds torch threads that a forked child must not inherit.
    pool = pebble.ProcessPool(max_workers=workers, context=multiprocessing.get_context("spawn"),
                              initializer=decode.limit_memory, initargs=(limits.memory_bytes,))
    running: dict[futures.Future, tuple[str, Path]] = {}

    def submit_next() -> None:
        for key, path in items:
            future = pool.schedule(decode.decode_guarded, args=(path, sampling, limits),
                                   timeout=limits.seconds_per_file)
            running[future] = (key, path)
            return

    try:
        for _ in range(2 * workers):
            submit_next()
        while running:
            done, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in done:
                key, path = running.pop(future)
                submit_next()
                yield key, path, _pool_result(future, limits)
    finally:
        pool.stop()
        pool.join()


def _pool_result(future: futures.Future, limits: DecodeLimits) -> DecodedClip:
    """The decoded clip, or a status saying why the worker gave none."""
    try:
        return future.result()
    except TimeoutError:
        return DecodedClip(None, None, 0.0, Status.TIMED_OUT,
                           f"decoding took longer than {limits.seconds_per_file:g} s "
                           "(--file-timeout); the decoder was stopped")
    except pebble.ProcessExpired as error:
        cause = (f"signal {signal.Signals(-error.exitcode).name}" if error.exitcode < 0
                 else f"exit code {error.exitcode}")
        return DecodedClip(None, None, 0.0, Status.CRASHED,
                           f"the decoding process died ({cause}); killed for memory or an FFmpeg crash")
    except Exception as error:  # noqa: BLE001 - one bad file must not stop the run
        return DecodedClip(None, None, 0.0, Status.CORRUPT, f"decoder error: {error}")


def _hash_videos(post_set: PostSet) -> tuple[dict[Path, str], dict[Path, VideoOutcome]]:
    keys: dict[Path, str] = {}
    problems: dict[Path, VideoOutcome] = {}
    for video in post_set.videos():
        try:
            if video.exists() and not video.is_file():  # a folder, a FIFO that would block, a device
                problems[video] = VideoOutcome(video, Status.UNREADABLE, "not a regular file")
                continue
            keys[video] = content_key(video)
        except FileNotFoundError:
            problems[video] = VideoOutcome(video, Status.MISSING, "file not found")
        except OSError as error:
            problems[video] = VideoOutcome(video, Status.UNREADABLE, f"cannot read: {error.strerror}")
    return keys, problems


def extract(
    root: Path,
    store_path: Path,
    options: ExtractOptions | None = None,
    on_progress: ProgressCallback | None = None,
) -> ExtractReport:
    """Extract every new video under root into the store; see the module docstring."""
    options = options or ExtractOptions()
    started = time.perf_counter()
    root = Path(root)
    post_set = read_posts(root)
    from phr_cli.devices import resolve_device

    # With Ray the encoder actors pick their own device; this process only embeds captions.
    device = str(resolve_device("auto" if options.ray else options.device))
    with StoreLock(Path(store_path)) as lock:  # before loading the encoders: a second run refuses at once
        return _extract_locked(post_set, store_path, options, device, lock, started, on_progress)


def _extract_locked(post_set: PostSet, store_path: Path, options: ExtractOptions, device: str,
                    lock: StoreLock, started: float, on_progress: ProgressCallback | None) -> ExtractReport:
    tick = time.perf_counter()
    encoders = Encoders(device, options.weights_dir, options.random_weights, options.precision)
    fingerprint = encoders.fingerprint()  # loads every encoder: missing weights fail here, early
    report = ExtractReport(store=Path(store_path), posts=len(post_set.posts),
                           notices=post_set.notices, load_seconds=time.perf_counter() - tick)
    keys, problems = _hash_videos(post_set)
    report.videos = len(keys) + len(problems)
    for outcome in problems.values():
        report.statuses[outcome.status] += 1
        report.failures.append(outcome)

    with StoreWriter(store_path, fingerprint, options.sampling.to_dict(),
                     options.feature_dtype, lock) as writer:
        known = writer.known_keys()
        todo: dict[str, Path] = {}
        for path, key in keys.items():
            if key not in known:
                todo.setdefault(key, path)  # the first path of duplicate files names the video
        report.reused = len({key for key in keys.values() if key in known})
        total = len(todo)
        relpath_of = {post.video: post.relpath for post in post_set.posts if post.video}
        batches: Iterator[list[EncodedVideo]]
        if options.ray:
            from phr_cli.ray_extract import encode_on_ray

            batches = encode_on_ray(todo, options, fingerprint, report)
        else:
            batches = _encode_here(todo, encoders, options, report)
        since_commit = 0
        with closing(batches):  # stops decoders (or the Ray pipeline) when --strict breaks off
            for batch in batches:
                keep_going = True
                for video in batch:
                    path = todo[video.key]
                    writer.add(path=relpath_of[path], **vars(video))
                    outcome = VideoOutcome(path, video.status, video.reason)
                    report.extracted += 1
                    report.statuses[video.status] += 1
                    if video.status in FAILED_STATUSES:
                        report.failures.append(outcome)
                        keep_going = keep_going and not options.strict
                    if on_progress:
                        on_progress(outcome, report, total)
                since_commit += len(batch)
                if since_commit >= options.commit_every or not keep_going:
                    tick = time.perf_counter()
                    writer.commit(wait=False)  # written on the writer's thread while encoding goes on
                    report.write_seconds += time.perf_counter() - tick
                    since_commit = 0
                if not keep_going:
                    report.stopped_early = True
                    break
        if not report.stopped_early:
            tick = time.perf_counter()
            posts, projection = _post_rows(post_set, keys, problems, writer, encoders)
            report.text_seconds = time.perf_counter() - tick
            tick = time.perf_counter()
            writer.finalize(posts, projection)
            report.write_seconds += time.perf_counter() - tick
    report.seconds = time.perf_counter() - started
    return report


def _encode_here(todo: dict[str, Path], encoders: Encoders, options: ExtractOptions,
                 report: ExtractReport) -> Iterator[list[EncodedVideo]]:
    """Decode in worker processes, encode in this one, about batch_size frames at a time."""
    workers = (os.cpu_count() or 1) if options.workers is None else options.workers
    batch: list[tuple[str, DecodedClip]] = []
    pending_frames = 0

    def encode() -> list[EncodedVideo]:
        tick = time.perf_counter()
        encoded = encoders.encode_videos(batch, options.batch_size)
        report.encode_seconds += time.perf_counter() - tick
        return encoded

    wait_started = time.perf_counter()
    for key, _, clip in decode_in_pool(todo, workers, options.sampling, options.limits):
        report.decode_wait_seconds += time.perf_counter() - wait_started
        batch.append((key, clip))
        pending_frames += 0 if clip.frames is None else len(clip.frames)
        if pending_frames >= options.batch_size:
            yield encode()
            batch, pending_frames = [], 0
        wait_started = time.perf_counter()
    if batch:
        yield encode()


def _or_zeros(features: np.ndarray | None, width: int) -> np.ndarray:
    return np.zeros(width, np.float32) if features is None else features.astype(np.float32)


def _post_rows(post_set: PostSet, keys: dict[Path, str], problems: dict[Path, VideoOutcome],
               writer: StoreWriter, encoders: Encoders):
    """The /posts table: one row a post, with its text embedded and projected."""
    from phr_cli.encoders.text import fit_projection

    status_of = writer.statuses()
    cached: dict[str, np.ndarray] = {}
    for caption, embedding in writer.stored_text_embeddings().items():
        cached.setdefault(Post(None, None, caption, [], "").text, embedding)
    texts = [post.text for post in post_set.posts]
    new_texts = sorted({t for t in texts if t and t not in cached})
    cached.update(zip(new_texts, encoders.textual.embed(new_texts)))

    width = encoders.textual.spec.output_dim
    embedding = np.stack([cached[t] if t else np.zeros(width, np.float32) for t in texts]) \
        if texts else np.zeros((0, width), np.float32)
    has_text = np.array([bool(t) for t in texts], dtype=bool)
    distinct = sorted({t for t in texts if t})
    projection = fit_projection(np.stack([cached[t] for t in distinct]) if distinct
                                else np.zeros((0, width), np.float32))
    textual = projection.apply(embedding) * has_text[:, None]

    def status(post: Post) -> Status:
        if post.video is None:
            return Status.TEXT_ONLY
        if post.video in problems:
            return problems[post.video].status
        return status_of[keys[post.video]]

    posts = PostRows(
        video_key=[keys.get(p.video, "") if p.video else "" for p in post_set.posts],
        path=[p.relpath or "" for p in post_set.posts],
        user=[p.user or "" for p in post_set.posts],
        caption=[p.caption for p in post_set.posts],
        hashtags=[p.hashtags for p in post_set.posts],
        status=[status(p) for p in post_set.posts],
        text_embedding=embedding,
        textual=textual.astype(np.float32),
        textual_mask=has_text,
    )
    return posts, projection
