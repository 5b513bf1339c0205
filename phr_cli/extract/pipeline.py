"""`phr extract`: a folder of posts -> the HDF5 feature store.

Videos are hashed; the new ones, and those whose stored status is a failure (retried),
are decoded and encoded by worker processes feeding this one's encoders (`extract.local`)
or, with `ExtractOptions.ray`, on a Ray cluster (`extract.ray`); either way this module
commits finished videos to the store in crash-safe segments. Captions are embedded at the
end, when the PCA can be fitted on all of them. Hashing, resume, retries, statuses,
segments and captions are the same code for both. The encoders are loaded only when
something is to be encoded (or the store is new and records them).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from phr_cli.data.posts import MANIFEST_NAMES, Post, PostSet, caption_without_hashtags, read_posts
from phr_cli.data.statuses import FAILED_STATUSES, Status
from phr_cli.data.store import TEXT_EMBEDDING_DIM, TEXTUAL_DIM, PostRows, StoreLock, StoreWriter, merge_posts
from phr_cli.encoders.pipeline import EncodedVideo, Encoders, content_key
from phr_cli.extract.local import encode_locally
from phr_cli.extract.options import (
    ExtractOptions,
    ExtractReport,
    NothingToExtractError,
    PhaseCallback,
    ProgressCallback,
    VideoOutcome,
)

if TYPE_CHECKING:
    import torch


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
    on_phase: PhaseCallback | None = None,
) -> ExtractReport:
    """Extract every new video under root into the store, keeping other folders' posts
    (all of them replaced with `options.replace`); see the module docstring.

    `on_phase(name, total)` announces each step ("loading encoders", "extracting" with the
    number of videos to encode, ...) so that the long ones before the first video show."""
    options = options or ExtractOptions()
    started = time.perf_counter()
    root = Path(root)
    post_set = read_posts(root)
    if not post_set.posts:  # before the lock: the store is not touched
        found = "its manifest lists no posts" if any((root / n).is_file() for n in MANIFEST_NAMES) \
            else "no video files and no posts.csv / posts.jsonl"
        raise NothingToExtractError(f"{root}: {found}; nothing to add to {store_path}, which is unchanged")
    from phr_cli.devices import check_device_name, resolve_device

    # With Ray the encoder actors pick their own device; this process only embeds captions.
    check_device_name(options.device)
    device = resolve_device("auto" if options.ray else options.device)
    with StoreLock(Path(store_path)) as lock:  # before loading the encoders: a second run refuses at once
        return _extract_locked(post_set, store_path, options, device, lock, started, on_progress,
                               on_phase or (lambda name, total: None))


def _extract_locked(post_set: PostSet, store_path: Path, options: ExtractOptions, device: torch.device,
                    lock: StoreLock, started: float, on_progress: ProgressCallback | None,
                    on_phase: PhaseCallback) -> ExtractReport:
    report = ExtractReport(store=Path(store_path), posts=len(post_set.posts), notices=post_set.notices)
    with StoreWriter(store_path, None, options.sampling.to_dict(), options.feature_dtype, lock) as writer:
        # A new store records the encoders: load them first, so that missing weights fail early.
        encoders = None if writer.has_encoders else _load_encoders(device, options, writer, report, on_phase)
        on_phase("hashing videos", None)
        keys, problems = _hash_videos(post_set)
        report.videos = len(keys) + len(problems)
        for outcome in problems.values():
            report.statuses[outcome.status] += 1
            report.failures.append(outcome)
        todo, retried, report.reused = _plan(keys, writer.statuses(), options.replace)
        report.retried = len(retried)
        embeddings, new_texts = _stored_embeddings(post_set, writer)
        if encoders is None and (todo or new_texts):  # a rerun with nothing new loads nothing
            encoders = _load_encoders(device, options, writer, report, on_phase)
        if todo:
            assert encoders is not None
            _encode_into(writer, todo, retried, encoders, post_set, options, report, on_progress, on_phase)
        if not report.stopped_early:
            on_phase("embedding captions", None)
            tick = time.perf_counter()
            if new_texts:
                assert encoders is not None
                embeddings.update(zip(new_texts, encoders.textual.embed(new_texts)))
            posts, projection, report.post_changes = _post_rows(post_set, keys, problems, writer, embeddings,
                                                                options.replace)
            report.text_seconds = time.perf_counter() - tick
            on_phase("writing the store", None)
            tick = time.perf_counter()
            writer.finalize(posts, projection, set(posts.video_key) if options.replace else None)
            report.write_seconds += time.perf_counter() - tick
    report.seconds = time.perf_counter() - started
    return report


def _load_encoders(device: torch.device, options: ExtractOptions, writer: StoreWriter, report: ExtractReport,
                   on_phase: PhaseCallback) -> Encoders:
    tick = time.perf_counter()
    on_phase("loading encoders", None)
    encoders = Encoders(device, options.weights_dir, options.random_weights, options.precision)
    # Loads every encoder (missing weights fail here); a store built with other encoders refuses.
    writer.use_encoders(encoders.fingerprint())
    report.encoders_loaded = True
    report.load_seconds = time.perf_counter() - tick
    return encoders


def _plan(keys: dict[Path, str], stored: dict[str, str], replace: bool) -> tuple[dict[str, Path], set[str], int]:
    """The videos to extract (key -> the path that names it), which of them failed before
    (retried), and how many stored videos are reused: all but the failed ones, none with `replace`."""
    todo: dict[str, Path] = {}
    retried: set[str] = set()
    reused: set[str] = set()
    for path, key in keys.items():
        status = stored.get(key)
        if status is not None and status not in FAILED_STATUSES and not replace:
            reused.add(key)
            continue
        todo.setdefault(key, path)  # the first path of duplicate files names the video
        if status in FAILED_STATUSES:
            retried.add(key)
    return todo, retried, len(reused)


def _encode_into(writer: StoreWriter, todo: dict[str, Path], retried: set[str], encoders: Encoders,
                 post_set: PostSet, options: ExtractOptions, report: ExtractReport,
                 on_progress: ProgressCallback | None, on_phase: PhaseCallback) -> None:
    """Decode and encode `todo`, committing the videos to the store in segments as they come."""
    on_phase("extracting", len(todo))
    relpath_of = {post.video: post.relpath for post in post_set.posts if post.video}
    batches: Generator[list[EncodedVideo], None, None]
    if options.ray:
        from phr_cli.extract.ray import encode_on_ray  # Ray is an optional extra

        batches = encode_on_ray(todo, options, writer.attributes["encoders"], report)
    else:
        batches = encode_locally(todo, encoders, options, report)
    since_commit = 0
    with closing(batches):  # stops decoders (or the Ray pipeline) when --strict breaks off
        for batch in batches:
            keep_going = True
            for video in batch:
                path = todo[video.key]
                writer.add(path=relpath_of[path], **vars(video))
                outcome = VideoOutcome(path, video.status, video.reason)
                report.count(outcome, retried=video.key in retried)
                keep_going = keep_going and not (options.strict and video.status in FAILED_STATUSES)
                if on_progress:
                    on_progress(outcome, report, len(todo))
            since_commit += len(batch)
            if since_commit >= options.commit_every or not keep_going:
                tick = time.perf_counter()
                writer.commit(wait=False)  # written on the writer's thread while encoding goes on
                report.write_seconds += time.perf_counter() - tick
                since_commit = 0
            if not keep_going:
                report.stopped_early = True
                break


def _stored_embeddings(post_set: PostSet, writer: StoreWriter) -> tuple[dict[str, np.ndarray], list[str]]:
    """Caption text (hashtags removed) -> its embedding, from the store; and the folder's texts
    not there yet, to embed."""
    cached: dict[str, np.ndarray] = {}
    for caption, embedding in writer.stored_text_embeddings().items():
        cached.setdefault(Post(None, None, caption, [], "").text, embedding)
    return cached, sorted({post.text for post in post_set.posts if post.text and post.text not in cached})


def _post_rows(post_set: PostSet, keys: dict[Path, str], problems: dict[Path, VideoOutcome],
               writer: StoreWriter, embeddings: dict[str, np.ndarray], replace: bool):
    """The /posts table: the stored one with this folder's posts in place of its earlier
    ones, every text (in `embeddings`) projected by a projection fitted on all of them."""
    from phr_cli.encoders.text import fit_projection

    status_of = writer.statuses()
    texts = [post.text for post in post_set.posts]
    width = TEXT_EMBEDDING_DIM
    embedding = np.stack([embeddings[t] if t else np.zeros(width, np.float32) for t in texts]) \
        if texts else np.zeros((0, width), np.float32)

    def status(post: Post) -> Status:
        if post.video is None:
            return Status.TEXT_ONLY
        if post.video in problems:
            return problems[post.video].status
        return Status(status_of[keys[post.video]])

    folder = post_set.root.resolve()
    new = PostRows(
        video_key=[keys.get(p.video, "") if p.video else "" for p in post_set.posts],
        path=[p.relpath or "" for p in post_set.posts],
        user=[p.user or "" for p in post_set.posts],
        caption=[p.caption for p in post_set.posts],
        hashtags=[p.hashtags for p in post_set.posts],
        status=[status(p) for p in post_set.posts],
        text_embedding=embedding,
        textual=np.zeros((len(texts), TEXTUAL_DIM), np.float32),  # projected below, with every folder's
        textual_mask=np.array([bool(t) for t in texts], dtype=bool),
        time=np.array([np.nan if p.time is None else p.time for p in post_set.posts], dtype=np.float64),
        source=[p.source for p in post_set.posts],
        folder=[str(folder)] * len(post_set.posts),
    )
    stored = None if replace else writer.stored_posts()
    # A store written before folders were recorded came from one folder: this one, when
    # the files it names are here.
    adopt = stored is not None and any(
        not f and p and (folder / p).is_file() for f, p in zip(stored.folder or [], stored.path))
    posts, changes = merge_posts(stored, new, str(folder), adopt_unrecorded=adopt)

    all_texts = [caption_without_hashtags(caption) for caption in posts.caption]
    first_row = {t: row for row, t in reversed(list(enumerate(all_texts))) if t}
    projection = fit_projection(np.stack([posts.text_embedding[first_row[t]] for t in sorted(first_row)])
                                if first_row else np.zeros((0, width), np.float32))
    has_text = np.array([bool(t) for t in all_texts], dtype=bool)
    posts.textual = (projection.apply(posts.text_embedding) * has_text[:, None]).astype(np.float32)
    posts.textual_mask = has_text
    return posts, projection, changes
