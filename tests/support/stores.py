"""Small feature stores of text-only posts, written through the store module (no encoder runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from phr_cli.data.graph import PostData
from phr_cli.data.statuses import Status
from phr_cli.data.store import TEXT_EMBEDDING_DIM, TEXTUAL_DIM, PostRows, StoreWriter, TextProjection

ENCODERS = {"textual": {"spec": {"name": "t", "version": "1"}, "weights": "random-init(seed=0)"}}


def write_text_store(path: Path, posts: PostData, times: np.ndarray | None = None) -> Path:
    """Each post as a text-only post (its item name is the caption) with its textual features
    zero-padded to the store's width; sources are "posts.jsonl:<line>"."""
    n = len(posts)
    textual = np.zeros((n, TEXTUAL_DIM), np.float32)
    if "textual" in posts.features:
        width = posts.features["textual"].shape[1]
        textual[:, :width] = posts.features["textual"]
    rows = PostRows(
        video_key=[""] * n, path=[""] * n, user=list(posts.users), caption=list(posts.items),
        hashtags=[list(tags) for tags in posts.hashtags], status=[Status.TEXT_ONLY] * n,
        text_embedding=np.zeros((n, TEXT_EMBEDDING_DIM), np.float32), textual=textual,
        textual_mask=np.ones(n, bool), time=times, source=[f"posts.jsonl:{i + 1}" for i in range(n)],
    )
    projection = TextProjection(np.zeros(TEXT_EMBEDDING_DIM, np.float32),
                                np.zeros((TEXTUAL_DIM, TEXT_EMBEDDING_DIM), np.float32),
                                np.zeros(TEXTUAL_DIM, np.float32))
    with StoreWriter(path, ENCODERS, {}) as writer:
        writer.finalize(rows, projection)
    return path
