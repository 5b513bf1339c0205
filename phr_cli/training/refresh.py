"""`phr train --refresh`: a checkpoint's counts brought up to date with the posts its store
gained since training, in seconds and without training the network again.

The posts the checkpoint does not know (neither trained on nor folded in by an earlier
refresh, found by their ids) are folded into its model as `ranking.live.LiveModel` folds in
a published post: its evidence counts, its content index and its re-ranker's counts grow,
and users, items and hashtags first seen get rows of their own. What was learned stays
as trained; `Checkpoint.refreshed` records what the counts were refreshed from. The
held-out posts of the split are never among them: they were in the store at training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from phr_cli.data.graph import posts_from_store
from phr_cli.data.journal import Intake, Journal, take_into_store
from phr_cli.data.store import load_store
from phr_cli.errors import CheckpointError, EncoderMismatchError
from phr_cli.ranking.live import LiveModel
from phr_cli.ranking.rerank import Reranker
from phr_cli.training.checkpoint import load_checkpoint


@dataclass
class Refreshed:
    """What a refresh folded in."""

    posts: int
    users: int  # first seen
    hashtags: int
    items: int
    seconds: float
    intake: Intake | None  # the journal's posts taken into the store first (None: no journal)


def refresh_checkpoint(checkpoint_path: Path, store_path: Path, journal: Journal | None = None) -> Refreshed:
    """Fold the store's posts the checkpoint does not know into it (after taking the
    journal's posts into the store, with a journal); the checkpoint is rewritten in place."""
    started = time.perf_counter()
    intake = None if journal is None else take_into_store(journal, store_path)
    checkpoint = load_checkpoint(checkpoint_path)
    provenance = checkpoint.provenance
    if provenance.post_ids is None:
        raise CheckpointError(f"{checkpoint_path} records no post ids (an older phr trained it): it cannot tell "
                              "its posts from new ones; retrain with `phr train`")
    contents = load_store(store_path)
    if contents.attributes.get("encoders") != provenance.encoders:
        raise EncoderMismatchError(f"{store_path} was built with other encoders than {checkpoint_path}'s store; "
                                   "refresh from the store it was trained on")
    selected = posts_from_store(contents)
    assert contents.posts is not None  # posts_from_store checked it
    ids = contents.posts.post_ids()[selected.store_rows]
    known = set(provenance.post_ids.tolist()) | set(checkpoint.refreshed.get("post_ids", []))
    new_rows = np.array([row for row, post_id in enumerate(ids.tolist()) if post_id not in known], dtype=np.int64)
    posts = selected.posts.subset(new_rows)
    # Textual features as the checkpoint's own projection gives them (the store's may be refitted).
    store_rows = selected.store_rows[new_rows]
    posts.features["textual"] = (provenance.text_projection().apply(contents.posts.text_embedding[store_rows])
                                 * posts.masks["textual"][:, None]).astype(np.float32)
    scorer = checkpoint.scorer(torch.device("cpu"))
    live = LiveModel(scorer, checkpoint.users, checkpoint.hashtags)
    live.fold_in(posts)
    trained = checkpoint.refreshed.get("trained", [len(checkpoint.users), len(checkpoint.hashtags),
                                                   len(checkpoint.items)])
    grown = {"users": live.new_users, "hashtags": live.new_hashtags,
             "items": len(scorer.item_index) - len(checkpoint.items)}
    checkpoint.users, checkpoint.hashtags = live.users, live.hashtags
    checkpoint.items = sorted(scorer.item_index, key=scorer.item_index.__getitem__)
    checkpoint.state_dict = {name: value.detach().cpu() for name, value in scorer.model.state_dict().items()}
    checkpoint.user_representations = scorer.user_reps.cpu()
    checkpoint.hashtag_representations = scorer.hashtag_reps.cpu()
    if isinstance(scorer.reranker, Reranker):
        checkpoint.reranker = scorer.reranker  # the copy LiveModel counted the posts into
    checkpoint.refreshed = {
        "store": str(Path(store_path).resolve()), "journal": None if journal is None else journal.location,
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "trained": trained,
        "posts": int(checkpoint.refreshed.get("posts", 0)) + len(posts),
        "post_ids": sorted(known - set(provenance.post_ids.tolist()) | set(ids[new_rows].tolist())),
    }
    checkpoint.save(checkpoint_path)
    return Refreshed(len(posts), grown["users"], grown["hashtags"], grown["items"], time.perf_counter() - started,
                     intake)
