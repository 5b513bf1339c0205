"""`phr inspect PATH`: what a file is, and what is in it.

A feature store (files with their status and reason, users, hashtags), a checkpoint
(configuration, split, best epoch, provenance), a manifest (rows, users, hashtags,
problems) or a `phr tune` study (`.tune.db` or its `.tune.json`: trials, the best, what was
trained); anything else is named for what it is, never called a damaged store.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from phr_cli.choices import plain_values
from phr_cli.data.folders import UNRECORDED
from phr_cli.data.posts import MANIFEST_NAMES, ManifestError, read_manifest
from phr_cli.data.statuses import FAILED_STATUSES, Status
from phr_cli.data.store import StoreContents, load_store, summarize
from phr_cli.errors import PhrError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"  # torch.save's format
SQLITE_SIGNATURE = b"SQLite format 3\x00"  # `phr tune`'s study


class InspectError(PhrError):
    """A path `phr inspect` cannot summarise; the message says what it is."""


def kind_of(path: Path) -> str:
    """"store", "checkpoint", "manifest" or "study", from the file's first bytes and name."""
    path = Path(path)
    if path.is_dir():
        raise InspectError(f"{path} is a folder; `phr extract {path}` makes a feature store of its posts, "
                           "which `phr inspect --store STORE` then shows")
    if not path.exists() and not Path(str(path) + ".parts").is_dir():
        raise InspectError(f"{path}: no such file")
    head = HDF5_SIGNATURE  # only segments of an interrupted first extract: a store
    if path.is_file():
        with open(path, "rb") as handle:
            head = handle.read(len(SQLITE_SIGNATURE))
    if head.startswith(HDF5_SIGNATURE):
        return "store"
    if head.startswith(ZIP_SIGNATURE):
        return "checkpoint"
    if head.startswith(SQLITE_SIGNATURE) or path.name.endswith(".tune.json"):
        return "study"
    if path.name in MANIFEST_NAMES or path.suffix in (".csv", ".jsonl"):
        return "manifest"
    raise InspectError(f"{path} is not a phr feature store, checkpoint or posts manifest "
                       "(posts.csv / posts.jsonl), nor a tune study (.tune.db / .tune.json)")


def _top(counts: Counter, limit: int) -> list[list[Any]]:
    return [[name, count] for name, count in counts.most_common(limit)]


def store_files(contents: StoreContents) -> list[dict[str, str]]:
    """Every file a store knows, a row per folder and path (so a video found at two paths is
    listed at both), with its status and reason; videos no post names (an interrupted first
    extract, a folder's posts removed) have no folder."""
    videos = contents.videos
    reason_of = dict(zip(videos.key, videos.reason))
    rows: dict[tuple[str, str], dict[str, str]] = {}
    named: set[str] = set()
    posts = contents.posts
    if posts is not None:
        assert posts.folder is not None  # PostRows.__post_init__ fills it
        for folder, path, key, status in zip(posts.folder, posts.path, posts.video_key, posts.status):
            if path:
                named.add(key)
                reason = reason_of.get(key) or _UNSTORED_REASONS.get(status, "")
                rows.setdefault((folder, path), {"folder": folder, "file": path, "status": status, "reason": reason})
    for key, path, status, reason in zip(videos.key, videos.path, videos.status, videos.reason):
        if key not in named:
            rows.setdefault(("", path), {"folder": "", "file": path, "status": status, "reason": reason})
    return [rows[place] for place in sorted(rows)]


# Why a post's file has no stored video: found while hashing, never decoded.
_UNSTORED_REASONS: dict[str, str] = {Status.MISSING: "file not found",
                                     Status.UNREADABLE: "cannot be read as a regular file"}


def inspect_store(path: Path, limit: int = 20, failures_only: bool = False) -> dict[str, Any]:
    """`summarize` plus the files (folder, status, reason), and the most frequent users and
    hashtags; with `failures_only`, the failed files and not the users and hashtags."""
    summary = summarize(path)
    contents = load_store(path)
    files = store_files(contents)
    listed = [f for f in files if not failures_only or f["status"] in FAILED_STATUSES]
    summary.update(kind="store", failures_only=failures_only, files=listed[:limit], files_listed=len(listed),
                   failed_files=sum(f["status"] in FAILED_STATUSES for f in files))
    posts = contents.posts
    if posts is not None:
        summary.update(folders=sorted(Counter(s or UNRECORDED for s in posts.folder or []).items()))
        if not failures_only:
            summary.update(top_users=_top(Counter(u for u in posts.user if u), limit),
                           top_hashtags=_top(Counter(h for tags in posts.hashtags for h in tags), limit))
    return summary


def inspect_checkpoint(path: Path) -> dict[str, Any]:
    from phr_cli.training.checkpoint import load_checkpoint  # torch: only for checkpoints

    checkpoint = load_checkpoint(path)
    provenance, store = checkpoint.provenance, checkpoint.find_store()
    return {
        "kind": "checkpoint",
        "checkpoint": str(path),
        "model_config": plain_values(checkpoint.model_config),
        "train_config": plain_values(checkpoint.train_config),
        "split": {"by": checkpoint.split.by, "seed": checkpoint.split.seed, "train": len(checkpoint.split.train),
                  "validation": len(checkpoint.split.validation), "test": len(checkpoint.split.test)},
        "users": len(checkpoint.users),
        "hashtags": len(checkpoint.hashtags),
        "items": len(checkpoint.items),
        "best_epoch": checkpoint.best_epoch,
        "best_metric": checkpoint.best_metric,
        "epochs_run": len(checkpoint.history),
        "completed": checkpoint.completed,
        "stopped_early": checkpoint.stopped_early,
        "stages": checkpoint.stages,  # what each step after the epochs did (empty: none ran)
        "warm_start": None if checkpoint.warm_start is None else plain_values(checkpoint.warm_start),
        # What `phr train --refresh` folded in since training (the posts' ids left out: they are many).
        "refreshed": {k: v for k, v in checkpoint.refreshed.items() if k != "post_ids"} or None,
        "provenance": {
            "store": provenance.store,
            "store_relative": checkpoint.store_relative,
            "store_found": None if store is None else str(store),  # relative to the checkpoint first
            "encoders": {m: f"{e['spec']['name']} ({e['spec']['version']}); weights {e['weights']}"
                         for m, e in provenance.encoders.items()},
            "posts_recorded": None if provenance.post_ids is None else len(provenance.post_ids),
        },
    }


def inspect_manifest(path: Path, limit: int = 20) -> dict[str, Any]:
    """Rows, users and hashtags of a manifest, and its problems (a line that cannot be
    read, a video that is not there)."""
    summary: dict[str, Any] = {"kind": "manifest", "manifest": str(path)}
    try:
        posts = read_manifest(Path(path), Path(path).parent)
    except ManifestError as error:
        return {**summary, "posts": 0, "problems": [str(error)]}
    problems = [f"{post.source}: {post.relpath}: file not found" for post in posts
                if post.video is not None and not post.video.exists()]
    problems += [f"{post.source}: no user (the post can serve recommend, not train)" for post in posts if not post.user]
    problems += [f"{post.source}: no hashtag" for post in posts if not post.hashtags]
    users = Counter(p.user for p in posts if p.user)
    hashtags = Counter(h for p in posts for h in p.hashtags)
    return {**summary, "posts": len(posts), "text_only_posts": sum(p.video is None for p in posts),
            "users": len(users), "hashtags": len(hashtags), "top_users": _top(users, limit),
            "top_hashtags": _top(hashtags, limit), "problems": problems[:limit], "problem_count": len(problems)}


def inspect_path(path: Path, limit: int = 20, failures_only: bool = False) -> dict[str, Any]:
    kind = kind_of(path)
    if kind == "store":
        return inspect_store(path, limit, failures_only)
    if kind == "checkpoint":
        return inspect_checkpoint(path)
    if kind == "study":
        from phr_cli.training.tune import read_study  # Optuna and torch: only for studies

        return read_study(path)
    return inspect_manifest(path, limit)

