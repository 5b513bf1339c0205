"""The dataset as train, tune and evaluate use it: posts → split → training graph → cases.

`SplitPosts` holds posts and their split, and builds what follows from them once, when
first asked: the graph of the training posts (`graph.build_graph`) and the validation and
test cases scored against it (`cases.build_cases`). `Dataset` is one store's: its
trainable posts. `Dataset.from_store` makes a new split (train, tune);
`Dataset.for_checkpoint` takes the split a checkpoint was trained on and refuses a store
whose encoders changed since, or that lost some of its posts; in a store that grew it finds
the checkpoint's posts by their ids and says so in `notices` (evaluate).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from phr_cli.data.cases import TestCases, build_cases
from phr_cli.data.graph import Graph, PostData, Split, build_graph, posts_from_store, split_posts
from phr_cli.data.provenance import Provenance, posts_fingerprint, select_trained_posts
from phr_cli.data.store import StoreContents, load_store
from phr_cli.errors import DataError, EncoderMismatchError

MIN_POSTS = 10  # fewer cannot fill an 8:1:1 split


@dataclass
class SplitPosts:
    """Posts, their split, and (built once, when first read) the training graph and the cases."""

    posts: PostData
    split: Split

    @cached_property
    def graph(self) -> Graph:
        """The graph of the training posts: the users, hashtags and items a model knows."""
        return build_graph(self.posts.subset(self.split.train))

    @cached_property
    def validation(self) -> TestCases:
        return build_cases(self.posts, self.split.validation, self.graph)

    @cached_property
    def test(self) -> TestCases:
        return build_cases(self.posts, self.split.test, self.graph)


@dataclass
class Dataset(SplitPosts):
    """One store's trainable posts (a user, a hashtag, readable content) and their split."""

    store_path: Path
    contents: StoreContents
    names: list[str]  # each post as a message names it (its manifest line, else its path)
    skipped: dict[str, int]  # posts left out, by reason
    store_rows: np.ndarray | None = None  # the /posts row of each post (None: not known)
    notices: list[str] = field(default_factory=list)  # what the caller should be told (a grown store)

    @classmethod
    def from_store(cls, store_path: Path, split_by: str = "post", seed: int = 0) -> Dataset:
        """The store's trainable posts split 8:1:1 by `split_by` with `seed` (`graph.split_posts`)."""
        contents = load_store(store_path)
        selected = posts_from_store(contents)
        if len(selected.posts) < MIN_POSTS:
            left_out = ", ".join(f"{count} {why}" for why, count in selected.skipped.items() if count) or "none"
            raise DataError(f"{store_path}: only {len(selected.posts)} trainable posts (with a user and a "
                            f"hashtag; at least {MIN_POSTS} needed); left out: {left_out}")
        split = split_posts(selected.posts, seed=seed, by=split_by, names=selected.names)
        return cls(selected.posts, split, Path(store_path), contents, selected.names, selected.skipped,
                   selected.store_rows)

    @classmethod
    def for_checkpoint(cls, store_path: Path, split: Split, provenance: Provenance, checkpoint_path: Path) -> Dataset:
        """The posts the checkpoint was trained on, with its split: the store's posts, or, in a
        store that grew since, those of its posts the checkpoint recorded (`notices` says so;
        `provenance.select_trained_posts`)."""
        contents = load_store(store_path)
        if contents.attributes.get("encoders") != provenance.encoders:
            raise EncoderMismatchError(f"{store_path} was built with other encoders than the store "
                                       f"{checkpoint_path} was trained on ({provenance.store}); "
                                       "evaluate on that store, or retrain on this one")
        selected, notice = select_trained_posts(contents, provenance, checkpoint_path)
        return cls(selected.posts, split, Path(store_path), contents, selected.names, selected.skipped,
                   selected.store_rows, [notice] if notice else [])

    @property
    def split_sizes(self) -> tuple[int, int, int]:
        return len(self.split.train), len(self.split.validation), len(self.split.test)

    def provenance(self) -> Provenance:
        """What a checkpoint trained on this dataset records, so that `recommend` encodes a new
        clip exactly as the store's videos were and `evaluate` finds the same posts again."""
        projection = self.contents.projection
        if projection is None:
            raise DataError(f"{self.store_path}: the store has no text projection yet; "
                            "finish `phr extract` (rerun it) first")
        return Provenance(
            # Absolute, beside the path relative to the checkpoint's folder that `Checkpoint.save` records.
            store=os.path.abspath(self.store_path),
            encoders=self.contents.attributes["encoders"],
            sampling=self.contents.attributes["sampling"],
            text_projection_mean=torch.as_tensor(projection.mean),
            text_projection_components=torch.as_tensor(projection.components),
            posts_fingerprint=posts_fingerprint(self.posts),
            user_hashtags=_user_hashtags(self.posts.subset(self.split.train)),
            post_ids=None if self.store_rows is None or self.contents.posts is None
            else torch.as_tensor(self.contents.posts.post_ids()[self.store_rows]),
        )


def _user_hashtags(posts: PostData) -> dict[str, list[str]]:
    """Each user's hashtags in training, for `recommend`'s "used before" column."""
    used: dict[str, set[str]] = {}
    for user, tags in zip(posts.users, posts.hashtags):
        used.setdefault(user, set()).update(tags)
    return {user: sorted(tags) for user, tags in used.items()}
