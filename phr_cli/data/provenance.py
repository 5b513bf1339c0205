"""Where a trained model's data came from, and finding those posts again in a store."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from phr_cli.data.graph import PostData, StorePosts, posts_from_store
from phr_cli.data.store import StoreContents, TextProjection
from phr_cli.errors import CheckpointError


@dataclass
class Provenance:
    """Where a checkpoint's data came from: what `recommend` needs to encode a new clip as
    the store's videos were, and `evaluate` to refuse a store that changed. Empty for a
    model trained on posts that came from no store (the content-only baseline, tests).

    Saved as the checkpoint's "metadata" entry, a plain dict of the same names (with
    text_projection as {"mean", "components"}).
    """

    store: str = ""  # the feature store trained on
    encoders: dict[str, Any] = field(default_factory=dict)  # the store's encoder fingerprint
    sampling: dict[str, Any] = field(default_factory=dict)  # the store's FrameSampling.to_dict()
    text_projection_mean: Tensor | None = None  # the store's caption PCA
    text_projection_components: Tensor | None = None
    posts_fingerprint: str = ""  # `posts_fingerprint` of the posts the split indexes
    user_hashtags: dict[str, list[str]] = field(default_factory=dict)  # each user's training hashtags
    post_ids: Tensor | None = None  # the store's `PostRows.post_ids` of the posts, in the split's order

    def to_dict(self) -> dict[str, Any]:
        """The on-disk form: plain values and tensors only (the safe unpickler's)."""
        saved: dict[str, Any] = {
            "store": self.store, "encoders": self.encoders, "sampling": self.sampling,
            "posts_fingerprint": self.posts_fingerprint, "user_hashtags": self.user_hashtags,
        }
        if self.post_ids is not None:
            saved["post_ids"] = self.post_ids
        if self.text_projection_mean is not None:
            saved["text_projection"] = {"mean": self.text_projection_mean,
                                        "components": self.text_projection_components}
        check_serialisable(saved)
        return saved

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Provenance:
        projection = saved.get("text_projection") or {}
        return cls(
            store=saved.get("store", ""),
            encoders=saved.get("encoders", {}),
            sampling=saved.get("sampling", {}),
            text_projection_mean=projection.get("mean"),
            text_projection_components=projection.get("components"),
            posts_fingerprint=saved.get("posts_fingerprint", ""),
            user_hashtags=saved.get("user_hashtags", {}),
            post_ids=saved.get("post_ids"),
        )

    def text_projection(self) -> TextProjection:
        """The store's caption projection (without its explained variance, not saved)."""
        if self.text_projection_mean is None or self.text_projection_components is None:
            raise CheckpointError("this checkpoint records no text projection: it was not trained "
                                  "on a feature store; retrain with `phr train`")
        return TextProjection(self.text_projection_mean.numpy(), self.text_projection_components.numpy(),
                              np.zeros(0, np.float32))


def check_serialisable(value: Any, where: str = "metadata") -> None:
    """Checkpoints load with torch's safe (weights-only) unpickler: plain values and tensors only."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_serialisable(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_serialisable(item, f"{where}[{index}]")
    elif not isinstance(value, (str, int, float, bool, type(None), Tensor)):
        raise TypeError(f"{where} is a {type(value).__name__}: checkpoints hold plain values and tensors only")


def posts_fingerprint(posts: PostData) -> str:
    """Identifies the exact posts a split indexes, so evaluate can refuse a changed store."""
    digest = hashlib.sha256()
    for user, item, tags in zip(posts.users, posts.items, posts.hashtags):
        digest.update(f"{user}\t{item}\t{' '.join(tags)}\n".encode())
    return digest.hexdigest()


def select_trained_posts(contents: StoreContents, provenance: Provenance,
                         checkpoint_path: Path | str = "the checkpoint") -> tuple[StorePosts, str]:
    """The posts a checkpoint of this provenance was trained on, in its split's order, from a store that may
    have grown since (with their store rows and names); and a notice when the store holds
    other posts too ('' when not).

    The checkpoint's own text projection gives their textual features: adding posts
    refits the store's.
    """
    selected = posts_from_store(contents)
    if posts_fingerprint(selected.posts) == provenance.posts_fingerprint:
        return selected, ""
    if provenance.post_ids is None:  # a checkpoint from before post ids were recorded
        raise CheckpointError(f"{contents.path}: its posts changed since {checkpoint_path} was trained "
                              "(the split would not match); retrain with `phr train`")
    assert contents.posts is not None  # posts_from_store checked it
    wanted = provenance.post_ids.tolist()
    stored_ids = contents.posts.post_ids()[selected.store_rows]
    if not set(wanted) <= set(stored_ids.tolist()):
        # A checkpoint from before ids left out where the folder lives recorded the older ids.
        older = contents.posts.post_ids(with_folder=True)[selected.store_rows]
        if set(wanted) <= set(older.tolist()):
            stored_ids = older
    position: dict[int, int] = {}
    for index, post_id in enumerate(stored_ids.tolist()):
        position.setdefault(post_id, index)
    missing = sum(post_id not in position for post_id in wanted)
    if missing:
        raise CheckpointError(f"{contents.path}: its posts changed since {checkpoint_path} was trained: "
                              f"{missing} of the {len(wanted)} posts the checkpoint was trained on are no "
                              "longer in the store (removed, or edited and extracted again); retrain with "
                              "`phr train`")
    rows = np.array([position[post_id] for post_id in wanted], dtype=np.int64)
    posts = selected.posts.subset(rows)
    if posts_fingerprint(posts) != provenance.posts_fingerprint:
        raise CheckpointError(f"{contents.path}: its posts changed since {checkpoint_path} was trained: "
                              "the posts found by their ids differ from those the checkpoint was trained "
                              "on; retrain with `phr train`")
    store_rows = selected.store_rows[rows]
    trained = provenance.text_projection()
    if contents.projection is None or not (np.array_equal(trained.mean, contents.projection.mean) and
                                           np.array_equal(trained.components, contents.projection.components)):
        posts.features["textual"] = (trained.apply(contents.posts.text_embedding[store_rows])
                                     * posts.masks["textual"][:, None]).astype(np.float32)
    extra = len(selected.posts) - len(posts)
    chosen = StorePosts(posts, store_rows, [selected.names[r] for r in rows], selected.skipped)
    return chosen, (f"{contents.path} holds {extra} trainable post(s) added since the checkpoint was "
                    f"trained; evaluating on the {len(posts)} it was trained on (retrain to use them all)")
