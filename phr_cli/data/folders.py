"""The folders a store's posts came from (`phr store`): listing them, re-rooting one whose
videos moved, dropping one.

A post records the resolved folder it was extracted from; its file is relative to that
folder and its id leaves the folder out (`PostRows.post_ids`), so re-rooting changes
nothing but the folder: checkpoints find their posts as before. Edits take the store's
lock and rewrite it atomically, as `phr extract` does; the caption projection is kept
(the next extract refits it on every post).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from phr_cli.data.store import PostRows, StoreError, StoreWriter, load_store

UNRECORDED = "(not recorded)"  # how a post of a store that did not record folders is listed


class FolderNotInStoreError(StoreError):
    """A folder the store has no posts from; the message lists those it has."""


@dataclass
class FolderPosts:
    folder: str  # resolved, as extracted; '' when the store did not record it
    posts: int
    statuses: dict[str, int]  # post status -> posts
    exists: bool  # whether the folder is there now (False: moved, renamed or gone)


@dataclass
class FolderEdit:
    posts: int  # posts re-rooted or dropped
    videos: int = 0  # videos dropped with them (no other post uses them)
    files_not_found: int = 0  # after a rename: the posts' files that are not under the new folder


def folder_name(folder: Path | str) -> str:
    """A folder as the store records it: absolute, resolved (it need not exist any more)."""
    return str(Path(folder).expanduser().resolve())


def list_folders(store: Path) -> list[FolderPosts]:
    """Each folder with its number of posts and their statuses, in the store's order."""
    posts = load_store(store).posts
    if posts is None:
        return []
    assert posts.folder is not None  # PostRows.__post_init__ fills it
    statuses: dict[str, Counter[str]] = {}
    for folder, status in zip(posts.folder, posts.status):
        statuses.setdefault(folder, Counter())[status] += 1
    return [FolderPosts(folder, sum(counts.values()), dict(sorted(counts.items())),
                        bool(folder) and Path(folder).is_dir())
            for folder, counts in statuses.items()]


def rename_folder(store: Path, old: Path | str, new: Path | str) -> FolderEdit:
    """Re-root `old`'s posts at `new` (an existing folder, where the videos now are)."""
    target = folder_name(new)
    if not Path(target).is_dir():
        raise StoreError(f"{new}: not a folder; move the videos there first, then rename")
    with StoreWriter.reopen(Path(store)) as writer:
        posts = _stored_posts(writer)
        source = _recorded(posts, old, store)
        assert posts.folder is not None
        if source == target:
            raise StoreError(f"{new}: the posts of {old} are recorded there already; nothing to rename")
        if target in posts.folder:
            raise StoreError(f"{store} already has posts from {target}; `phr store drop` one of the two "
                             "folders first")
        mine = [row for row, folder in enumerate(posts.folder) if folder == source]
        posts.folder = [target if folder == source else folder for folder in posts.folder]
        writer.finalize(posts, writer.stored_projection())
    missing = sum(1 for row in mine if posts.path[row] and not (Path(target) / posts.path[row]).is_file())
    return FolderEdit(posts=len(mine), files_not_found=missing)


def drop_folder(store: Path, folder: Path | str) -> FolderEdit:
    """Remove `folder`'s posts, and the videos no other post uses."""
    with StoreWriter.reopen(Path(store)) as writer:
        posts = _stored_posts(writer)
        source = _recorded(posts, folder, store)
        assert posts.folder is not None
        kept = posts.rows([row for row, each in enumerate(posts.folder) if each != source])
        dropped = set(posts.video_key) - set(kept.video_key) - {""}
        stored = set(writer.statuses())
        writer.finalize(kept, writer.stored_projection(), stored - dropped)
    return FolderEdit(posts=len(posts) - len(kept), videos=len(dropped & stored))


def _stored_posts(writer: StoreWriter) -> PostRows:
    posts = writer.stored_posts()
    if posts is None:
        raise StoreError(f"{writer.path}: the store has no posts table yet; finish `phr extract` (rerun it) first")
    return posts


def _recorded(posts: PostRows, folder: Path | str, store: Path) -> str:
    """The folder as `posts` record it: `folder` resolved, or as written (a folder recorded
    under a path that now resolves elsewhere; '(not recorded)')."""
    assert posts.folder is not None
    recorded = set(posts.folder)
    for name in (folder_name(folder), str(folder)):
        if name in recorded:
            return name
    if str(folder) == UNRECORDED and "" in recorded:
        return ""
    known = ", ".join(each or UNRECORDED for each in dict.fromkeys(posts.folder)) or "none"
    raise FolderNotInStoreError(f"{store} has no posts from {folder_name(folder)}; its folders: {known} "
                                "(`phr store folders`)")
