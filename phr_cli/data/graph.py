"""Posts -> split -> the user-hashtag-video graph of GCN-PHR (training posts only).

A graph "video" node is an item: one distinct piece of content (a video's content hash,
or a text-only post's caption). The same item posted by several users is one node with
several uploaders, which is how public tagging datasets (user, item, tags) map in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from phr_cli.data.statuses import UNUSABLE_STATUSES
from phr_cli.data.store import ACOUSTIC_DIM, VISUAL_DIM, StoreContents, StoreError
from phr_cli.errors import ConfigError, DataError

MODALITIES = ("visual", "acoustic", "textual")


@dataclass
class PostData:
    """Posts with their features, as the store hands them to training (one row a post)."""

    users: list[str]
    items: list[str]  # content key of the post's video, or of its caption when text-only
    hashtags: list[list[str]]  # normalised, without '#'
    features: dict[str, np.ndarray]  # modality -> (P, width) float32
    masks: dict[str, np.ndarray]  # modality -> (P,) bool: the modality exists for the post
    times: np.ndarray | None = None  # (P,) Unix seconds, NaN when unknown; None: none known
    captions: list[str] | None = None  # as written, hashtags included; None: not known

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, rows: np.ndarray) -> PostData:
        return PostData(
            users=[self.users[r] for r in rows],
            items=[self.items[r] for r in rows],
            hashtags=[self.hashtags[r] for r in rows],
            features={m: f[rows] for m, f in self.features.items()},
            masks={m: k[rows] for m, k in self.masks.items()},
            times=None if self.times is None else self.times[rows],
            captions=None if self.captions is None else [self.captions[r] for r in rows],
        )


@dataclass
class Split:
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    seed: int
    by: str = "post"  # "post": posts at random; "item": whole items held out; "time": the latest posts held out


SPLITS = ("post", "item", "time")


def split_posts(
    posts: PostData, seed: int = 0, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    by: str = "post", names: list[str] | None = None,
) -> Split:
    """8:1:1 split of posts at random, of items (every post of a held-out item goes together),
    or by time (the oldest posts train, the latest test; equal times in a seeded random order).

    `names` says how an error names each post (e.g. its manifest line; default "post N").
    """
    rng = np.random.default_rng(seed)
    if by in ("post", "time"):
        units = np.arange(len(posts))
        unit_of_post = units
    elif by == "item":
        items, unit_of_post = np.unique(np.asarray(posts.items, dtype=object), return_inverse=True)
        units = np.arange(len(items))
    else:
        raise ConfigError(f"unknown split unit {by!r}: use one of {', '.join(SPLITS)}")
    if by == "time":
        times = _known_times(posts, names)
        order = np.lexsort((rng.permutation(len(units)), times))  # by time, then the seeded tie-break
    else:
        order = rng.permutation(units)
    n_train = round(ratios[0] * len(order))
    n_val = round(ratios[1] * len(order))
    part_of_unit = np.empty(len(units), dtype=np.int8)
    part_of_unit[order[:n_train]] = 0
    part_of_unit[order[n_train : n_train + n_val]] = 1
    part_of_unit[order[n_train + n_val :]] = 2
    part = part_of_unit[unit_of_post]
    train, validation, test = (np.flatnonzero(part == p) for p in range(3))
    return Split(train, validation, test, seed=seed, by=by)


def _known_times(posts: PostData, names: list[str] | None) -> np.ndarray:
    times = np.full(len(posts), np.nan) if posts.times is None else np.asarray(posts.times, np.float64)
    missing = np.flatnonzero(np.isnan(times))
    if len(missing):
        named = [names[r] if names is not None else f"post {r + 1}" for r in missing[:3]]
        if len(missing) == 1:
            raise DataError(f"{named[0]}: no time; the time split needs one for every post")
        more = f" and {len(missing) - len(named)} more" if len(missing) > len(named) else ""
        raise DataError(f"{len(missing)} posts have no time ({', '.join(named)}{more}); "
                        "the time split needs one for every post")
    return times


@dataclass
class Graph:
    """Vocabularies and edge lists built from training posts.

    `triples` holds each distinct (user, hashtag, item) of training: user i tagged item k
    with hashtag j. The other edge lists are its distinct projections.
    """

    users: list[str]
    hashtags: list[str]
    items: list[str]
    item_features: dict[str, np.ndarray]  # modality -> (n_items, width)
    item_masks: dict[str, np.ndarray]  # modality -> (n_items,)
    triples: np.ndarray  # (T, 3) int64 columns user, hashtag, item
    # (T,) Unix seconds of each triple's latest post (NaN: unknown); None when no post has a time.
    triple_times: np.ndarray | None = None
    user_index: dict[str, int] = field(init=False)
    hashtag_index: dict[str, int] = field(init=False)
    item_index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.user_index = {u: i for i, u in enumerate(self.users)}
        self.hashtag_index = {h: i for i, h in enumerate(self.hashtags)}
        self.item_index = {v: i for i, v in enumerate(self.items)}

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_hashtags(self) -> int:
        return len(self.hashtags)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def item_ids(self, posts: PostData) -> np.ndarray:
        """The graph index of each post's item, -1 for an item not in training (new content)."""
        return np.asarray([self.item_index.get(item, -1) for item in posts.items], dtype=np.int64)

    def edges(self, columns: tuple[int, int]) -> np.ndarray:
        """Distinct pairs of two triple columns, e.g. (0, 2) user-item, (0, 1) user-hashtag."""
        return np.unique(self.triples[:, list(columns)], axis=0)


def build_graph(train: PostData) -> Graph:
    """Vocabularies in first-seen order and the distinct training triples."""
    users = list(dict.fromkeys(train.users))
    hashtags = list(dict.fromkeys(h for tags in train.hashtags for h in tags))
    items = list(dict.fromkeys(train.items))
    user_index = {u: i for i, u in enumerate(users)}
    hashtag_index = {h: i for i, h in enumerate(hashtags)}
    item_index = {v: i for i, v in enumerate(items)}

    first_row = np.zeros(len(items), dtype=np.int64)
    seen: set[str] = set()
    triples = []
    for row, (user, item, tags) in enumerate(zip(train.users, train.items, train.hashtags)):
        if item not in seen:
            seen.add(item)
            first_row[item_index[item]] = row
        for tag in tags:
            triples.append((user_index[user], hashtag_index[tag], item_index[item]))
    triple_array, triple_of = np.unique(np.asarray(triples, dtype=np.int64).reshape(-1, 3), axis=0,
                                        return_inverse=True)
    triple_times = None
    if train.times is not None and len(triple_array):
        post_times = np.repeat(np.asarray(train.times, dtype=np.float64), [len(tags) for tags in train.hashtags])
        triple_times = np.full(len(triple_array), np.nan)
        np.fmax.at(triple_times, triple_of.reshape(-1), post_times)
    return Graph(
        users=users,
        hashtags=hashtags,
        items=items,
        item_features={m: f[first_row] for m, f in train.features.items()},
        item_masks={m: k[first_row] for m, k in train.masks.items()},
        triples=triple_array,
        triple_times=triple_times,
    )


@dataclass
class StorePosts:
    posts: PostData
    store_rows: np.ndarray  # the /posts row of each post
    names: list[str]  # each post as a message names it: its manifest line, else its path
    skipped: dict[str, int]  # why posts were left out, and how many


def posts_from_store(contents: StoreContents) -> StorePosts:
    """The store's trainable posts (a user, at least one hashtag, readable content)."""
    table = contents.posts
    if table is None:
        raise StoreError(f"{contents.path}: the store has no posts table yet; "
                         "finish `phr extract` (rerun it) first")
    assert table.time is not None and table.source is not None  # PostRows.__post_init__ fills both
    videos = contents.videos
    row_of_key = {key: row for row, key in enumerate(videos.key)}
    skipped = {"no user": 0, "no hashtag": 0, "unusable video": 0}
    rows = []
    for row, (user, tags, status) in enumerate(zip(table.user, table.hashtags, table.status)):
        if not user:
            skipped["no user"] += 1
        elif not tags:
            skipped["no hashtag"] += 1
        elif status in UNUSABLE_STATUSES:  # the video gave no features at all
            skipped["unusable video"] += 1
        else:
            rows.append(row)
    picked = np.asarray(rows, dtype=np.int64)
    video_rows = np.array([row_of_key.get(table.video_key[r], -1) for r in rows], dtype=np.int64)
    has_video = video_rows >= 0
    features, masks = {}, {}
    for modality, width in (("visual", VISUAL_DIM), ("acoustic", ACOUSTIC_DIM)):
        features[modality] = np.zeros((len(rows), width), np.float32)
        masks[modality] = np.zeros(len(rows), bool)
        if has_video.any():
            features[modality][has_video] = np.stack(getattr(videos, modality))[video_rows[has_video]]
            masks[modality][has_video] = np.asarray(getattr(videos, f"{modality}_mask"))[video_rows[has_video]]
    features["textual"] = table.textual[picked].astype(np.float32)
    masks["textual"] = table.textual_mask[picked].astype(bool)

    def item(row: int) -> str:
        return table.video_key[row] or text_item_key(table.caption[row])

    posts = PostData(
        users=[table.user[r] for r in rows],
        items=[item(r) for r in rows],
        hashtags=[list(table.hashtags[r]) for r in rows],
        features=features,
        masks=masks,
        times=table.time[picked],
        captions=[table.caption[r] for r in rows],
    )
    names = [_post_name(table.source[r], table.path[r], r) for r in rows]
    return StorePosts(posts, picked, names, skipped)


def text_item_key(caption: str) -> str:
    """A text-only post's item: its caption, so that the same text by two users is one item."""
    return "text:" + hashlib.sha1(caption.encode()).hexdigest()


def _post_name(source: str, path: str, row: int) -> str:
    if ":" in source:  # a manifest line, "posts.jsonl:12"
        return source
    return path or f"post {row + 1} of the store"
