"""Hashtags unseen in training ranked beside the known ones (training/unseen.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from test_baselines import planted_posts

from phr_cli.data.dataset import Dataset
from phr_cli.evaluation.metrics import evaluate
from phr_cli.model.config import ModelConfig, NetworkConfig
from phr_cli.training.checkpoint import load_checkpoint
from phr_cli.training.config import TrainConfig
from phr_cli.training.train import train_from_store
from phr_cli.training.unseen import (
    CAPTION_WORDS,
    KNOWN_ONLY,
    MEAN_REPRESENTATION,
    TEXT_MAP,
    WORDS_MATCH,
    evaluate_unseen,
)
from support.stores import write_text_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")
N_TAGS = 40  # planted_posts' tags, and the width of its textual features


def test_unseen_hashtags_are_ranked_beside_the_known_ones(tmp_path) -> None:
    posts, _ = planted_posts(seed=3, n_users=20, n_items=40, posts_per_user=10)
    times = np.arange(len(posts), dtype=np.float64) * 3600.0
    # The time split's validation and test posts, each also tagged with its caption (its item's
    # name), a hashtag training never saw: the words match is fitted on the first, measured on the second.
    held_out = np.argsort(times)[-len(posts) // 5:]
    latest = held_out[len(held_out) // 2:]
    for row in held_out:
        posts.hashtags[row] = [*posts.hashtags[row], posts.items[row]]
    store = write_text_store(tmp_path / "features.h5", posts, times)
    train_from_store(store, tmp_path / "model.pt", ModelConfig(NetworkConfig(dim=8)),
                     TrainConfig(epochs=2, batch_size=128, device="cpu"), split_by="time")
    checkpoint = load_checkpoint(tmp_path / "model.pt")
    data = Dataset.for_checkpoint(store, checkpoint.split, checkpoint.provenance, tmp_path / "model.pt")
    assert data.posts.captions is not None
    features = {name: data.posts.features["textual"][row] for row, name in enumerate(data.posts.captions)}
    width = data.posts.features["textual"].shape[1]

    def embed(hashtags: Sequence[str]) -> np.ndarray:
        """An item's name as its content; a tag "tJ" as planted tag J's indicator."""
        rows = [features[h] if h in features else np.eye(width, dtype=np.float32)[int(h[1:])] for h in hashtags]
        return np.stack(rows)

    report = evaluate_unseen(data, checkpoint, embedder=embed)
    assert sorted(checkpoint.split.test) == sorted(latest)
    assert report.counts["unseen_hashtags"] == len({posts.items[row] for row in latest})
    assert report.counts["unseen_cases"] == report.counts["cases"] == len(latest)
    assert set(report.methods) == {WORDS_MATCH, TEXT_MAP, MEAN_REPRESENTATION, KNOWN_ONLY, CAPTION_WORDS}
    assert report.methods[KNOWN_ONLY]["unseen R@5"] == 0.0
    assert report.methods[CAPTION_WORDS]["unseen R@5"] == 1.0  # the caption names it, and no seen hashtag as well
    # The caption's embedding is the new hashtag's: the match fitted on validation brings it into
    # the first five of most posts (it is right more often than the fifth known hashtag).
    assert report.methods[WORDS_MATCH]["unseen R@5"] >= 0.75
    assert report.methods[WORDS_MATCH]["seen P@5"] >= report.methods[KNOWN_ONLY]["seen P@5"] - 0.05
    assert "fitted on" in report.notes[WORDS_MATCH]
    main = evaluate(checkpoint.scorer(), data.posts, data.test, protocol="full", ks=(5, 10))["full"]["all"]
    assert report.methods[KNOWN_ONLY]["seen P@5"] == pytest.approx(main["P@5"])
    for figures in report.methods.values():
        assert all(0.0 <= value <= 1.0 for value in figures.values())
    assert "α" in report.notes[TEXT_MAP] and "caption words" in report.summary_line()
