"""The checkpoint `phr train` writes and `phr recommend` / `phr evaluate` read.

One file (torch's safe, weights-only pickle): the configurations, the split, the
vocabulary, the best epoch's weights and representations, the history, the provenance of
the data (`Provenance`) and, while training runs, the state to resume from. Written
atomically (`files.atomic_file`), so a crash or a full disk leaves the previous one.
Reading a checkpoint needs nothing of the training loop.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from phr_cli.config import TrainConfig
from phr_cli.errors import PhrError
from phr_cli.factors import FittedFactors
from phr_cli.files import atomic_file, interrupt_after
from phr_cli.graph import PostData, Split, StorePosts, posts_from_store
from phr_cli.model import GCNPHR, ModelConfig
from phr_cli.posts import normalize_user
from phr_cli.rerank import Reranker
from phr_cli.store import StoreContents, TextProjection

# /2: the default model's evidence terms and item IDs (state dict entries and config fields);
# /3: the evidence's timed uses; /4: its "similar own posts" tables and config field; /5: PITF's
# factors as a score part (`factors.TagFactors`) and config field; /6: the re-ranker
# (`rerank.Reranker`) and config field.
CHECKPOINT_FORMAT = "phr-gcn-checkpoint/6"


class CheckpointError(PhrError):
    """A checkpoint that cannot be read, or written, or used with this store."""


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


@dataclass
class Checkpoint:
    model_config: ModelConfig
    train_config: TrainConfig
    split: Split
    users: list[str]
    hashtags: list[str]
    items: list[str]
    modality_widths: dict[str, int]
    state_dict: dict[str, Tensor]  # best epoch's weights, the feature normalisation included
    user_representations: Tensor  # propagate() at the best epoch
    hashtag_representations: Tensor
    best_epoch: int
    best_metric: float
    history: list[dict[str, float]]
    completed: bool
    stopped_early: bool
    provenance: Provenance
    pitf_epoch: int | None = None  # the epoch of the PITF fit behind the model's factors (None: none)
    reranker: Reranker | None = None  # the second stage fitted on validation (None: none, or not kept)

    def model(self, device: torch.device = torch.device("cpu")) -> GCNPHR:
        """The best epoch's model in eval mode, serving the saved representations (no graph needed)."""
        model = GCNPHR(self.model_config, len(self.users), len(self.hashtags), self.modality_widths, len(self.items))
        model.load_state_dict(self.state_dict)
        model.to(device).eval()
        model.save_representations(self.user_representations, self.hashtag_representations)
        return model

    def factor_scorer(self, device: torch.device = torch.device("cpu")) -> FactorScorer:
        """The model's PITF factors alone as an `evaluate.Scorer`: the PITF fit behind them."""
        model = self.model(device)
        return FactorScorer(model, *model.propagate(), item_index={item: i for i, item in enumerate(self.items)})

    def fitted_factors(self) -> FittedFactors | None:
        """The PITF fit behind the model's factors part (None: the model has none)."""
        if self.pitf_epoch is None:
            return None
        prefix = "factors."
        return FittedFactors({k[len(prefix):]: v for k, v in self.state_dict.items() if k.startswith(prefix)},
                             self.pitf_epoch)

    def scorer(self, device: torch.device = torch.device("cpu")) -> ModelScorer:
        """The best epoch's model, re-ranker included, as an `evaluate.Scorer`."""
        model = self.model(device)
        return ModelScorer(model, *model.propagate(), item_index={item: i for i, item in enumerate(self.items)},
                           reranker=self.reranker)

    def user_position(self, user: str) -> int:
        """The user's row in the representations, -1 for a user without training posts."""
        user = normalize_user(user) or ""
        return self.users.index(user) if user in self.users else -1


def read_checkpoint_file(path: Path) -> Any:
    """The unpickled contents of a checkpoint file (weights only), whatever they hold."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint; run `phr train --checkpoint {path}` first") from None
    # Another file, or a torn one: unpickling garbage raises any of these (a text file, KeyError).
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, KeyError, IndexError, ValueError,
            TypeError, AttributeError, struct.error) as error:
        raise CheckpointError(f"{path} is not a readable phr checkpoint ({type(error).__name__}); "
                              "train one with `phr train`") from None


def load_checkpoint(path: Path) -> Checkpoint:
    raw = read_checkpoint_file(path)
    written_as = raw.get("format") if isinstance(raw, dict) else None
    if isinstance(written_as, str) and written_as.startswith(CHECKPOINT_FORMAT.split("/")[0] + "/") \
            and written_as != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a {written_as} checkpoint; this phr reads {CHECKPOINT_FORMAT}: "
                              "upgrade phr, or retrain with this one")
    if written_as != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a phr checkpoint ({CHECKPOINT_FORMAT})")
    split = raw["split"]
    return Checkpoint(
        model_config=ModelConfig(**raw["model_config"]),
        train_config=TrainConfig(**raw["train_config"]),
        split=Split(
            train=split["train"].numpy(),
            validation=split["validation"].numpy(),
            test=split["test"].numpy(),
            seed=split["seed"],
            by=split["by"],
        ),
        users=raw["vocabulary"]["users"],
        hashtags=raw["vocabulary"]["hashtags"],
        items=raw["vocabulary"]["items"],
        modality_widths=raw["modality_widths"],
        state_dict=raw["state_dict"],
        user_representations=raw["user_representations"],
        hashtag_representations=raw["hashtag_representations"],
        best_epoch=raw["best_epoch"],
        best_metric=raw["best_metric"],
        history=raw["history"],
        completed=raw["completed"],
        stopped_early=raw["stopped_early"],
        provenance=Provenance.from_dict(raw["metadata"]),
        pitf_epoch=raw.get("pitf_epoch"),
        reranker=None if raw.get("reranker") is None else Reranker.from_dict(raw["reranker"]),
    )


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write a checkpoint's payload (as `train` builds it) atomically; a Ctrl-C during the
    write lands once the new checkpoint is in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with interrupt_after(), atomic_file(path) as temporary:
            with open(temporary, "wb") as handle:
                torch.save(payload, handle)
    except (OSError, RuntimeError) as error:  # torch reports a failed write as RuntimeError
        cause = getattr(error, "strerror", None) or " ".join(str(error).split())
        raise CheckpointError(f"{path}: cannot write the checkpoint ({cause}); the previous one is "
                              "intact: free space and rerun `phr train` to resume") from None


def split_to_dict(split: Split) -> dict[str, Any]:
    """A split as the checkpoint saves it (the inverse of what load_checkpoint reads)."""
    return {
        "train": torch.as_tensor(np.asarray(split.train, dtype=np.int64)),
        "validation": torch.as_tensor(np.asarray(split.validation, dtype=np.int64)),
        "test": torch.as_tensor(np.asarray(split.test, dtype=np.int64)),
        "seed": int(split.seed),
        "by": split.by,
    }


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


def select_trained_posts(contents: StoreContents, checkpoint: Checkpoint,
                         checkpoint_path: Path | str = "the checkpoint") -> tuple[StorePosts, str]:
    """The posts the checkpoint was trained on, in its split's order, from a store that may
    have grown since (with their store rows and names); and a notice when the store holds
    other posts too ('' when not).

    The checkpoint's own text projection gives their textual features: adding posts
    refits the store's.
    """
    selected = posts_from_store(contents)
    provenance = checkpoint.provenance
    if posts_fingerprint(selected.posts) == provenance.posts_fingerprint:
        return selected, ""
    if provenance.post_ids is None:  # a checkpoint from before post ids were recorded
        raise CheckpointError(f"{contents.path}: its posts changed since {checkpoint_path} was trained "
                              "(the split would not match); retrain with `phr train`")
    assert contents.posts is not None  # posts_from_store checked it
    position: dict[int, int] = {}
    for index, post_id in enumerate(contents.posts.post_ids()[selected.store_rows].tolist()):
        position.setdefault(post_id, index)
    wanted = provenance.post_ids.tolist()
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


class PostTensors(NamedTuple):
    """A chunk of posts as `GCNPHR.score_parts` reads them."""

    users: Tensor  # graph ids, -1: cold
    items: Tensor  # graph ids, -1: new content
    features: dict[str, Tensor]
    masks: dict[str, Tensor]
    times: Tensor | None  # Unix seconds, NaN: unknown


class ModelScorer:
    """GCN-PHR as an `evaluate.Scorer`: scores of every known hashtag for each post."""

    def __init__(self, model: GCNPHR, user_reps: Tensor, hashtag_reps: Tensor, item_index: dict[str, int],
                 rows_per_chunk: int = 256, reranker: Reranker | None = None) -> None:
        self.model, self.user_reps, self.hashtag_reps = model, user_reps, hashtag_reps
        self.item_index = item_index  # training items by key: a post of one of them gets its ID and counts
        self.rows_per_chunk = rows_per_chunk
        self.reranker = reranker

    def _chunks(self, users: np.ndarray, posts: PostData) -> Iterator[PostTensors]:
        """The posts as tensors on the model's device, rows_per_chunk posts at a time."""
        device = self.user_reps.device
        users_t = torch.as_tensor(np.asarray(users, dtype=np.int64), device=device)
        for start in range(0, len(posts), self.rows_per_chunk):
            chunk = slice(start, start + self.rows_per_chunk)
            yield PostTensors(
                users_t[chunk],
                torch.as_tensor([self.item_index.get(item, -1) for item in posts.items[chunk]],
                                dtype=torch.long, device=device),
                {m: torch.as_tensor(np.asarray(f[chunk], dtype=np.float32), device=device)
                 for m, f in posts.features.items()},
                {m: torch.as_tensor(np.asarray(k[chunk], dtype=bool), device=device) for m, k in posts.masks.items()},
                None if posts.times is None else torch.as_tensor(posts.times[chunk], dtype=torch.float64,
                                                                 device=device))

    @torch.no_grad()
    def parts(self, users: np.ndarray, posts: PostData) -> Iterator[dict[str, Tensor]]:
        """The named score parts (`GCNPHR.score_parts`) of every hashtag for posts, one chunk
        of rows_per_chunk posts at a time; users[b] is the graph user index, -1 when cold.
        A post's time (posts.times) weighs the user's past uses of each hashtag by recency."""
        for chunk in self._chunks(users, posts):
            yield self.model.score_parts(self.user_reps, self.hashtag_reps, *chunk)

    @torch.no_grad()
    def scored_chunks(self, users: np.ndarray, posts: PostData) -> Iterator[tuple[PostTensors, dict[str, Tensor],
                                                                                   Tensor]]:
        """Each chunk of posts, its unscaled parts and their calibrated total (B, H)."""
        for chunk in self._chunks(users, posts):
            parts = self.model.unscaled_parts(self.user_reps, self.hashtag_reps, *chunk)
            total = torch.stack(list(self.model.scaled(parts).values())).sum(dim=0)
            yield chunk, parts, total

    def score(self, users: np.ndarray, posts: PostData) -> Tensor:
        """(len(posts), n_hashtags) on the model's device: the sum of the parts, each post's
        leading hashtags ranked again by the re-ranker if there is one."""
        blocks = [total if self.reranker is None else
                  self.reranker.rescore(self.model, parts, total, chunk.users, chunk.items)
                  for chunk, parts, total in self.scored_chunks(users, posts)]
        return torch.cat(blocks) if blocks else self.hashtag_reps.new_zeros(0, len(self.hashtag_reps))


class FactorScorer(ModelScorer):
    """The model's PITF factors part alone (`factors.TagFactors`, unscaled) as an `evaluate.Scorer`."""

    @torch.no_grad()
    def score(self, users: np.ndarray, posts: PostData) -> Tensor:
        factors = self.model.factors
        assert factors is not None, "the model has no factors part"
        blocks = [factors.score_rows(chunk.users, chunk.items, chunk.features, chunk.masks)
                  for chunk in self._chunks(users, posts)]
        return torch.cat(blocks) if blocks else self.hashtag_reps.new_zeros(0, len(self.hashtag_reps))
