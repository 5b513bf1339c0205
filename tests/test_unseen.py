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
from phr_cli.training.unseen import CAPTION_WORDS, KNOWN_ONLY, MEAN_REPRESENTATION, TEXT_MAP, evaluate_unseen
from support.stores import write_text_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")
N_TAGS = 40  # planted_posts' tags, and the width of its textual features


def test_unseen_hashtags_are_ranked_beside_the_known_ones(tmp_path) -> None:
    posts, _ = planted_posts(seed=3, n_users=20, n_items=40, posts_per_user=10)
    times = np.arange(len(posts), dtype=np.float64) * 3600.0
    latest = np.argsort(times)[-len(posts) // 10:]  # the time split's test posts
    for row in latest:  # each also tagged with its caption (its item's name), a hashtag training never saw
        posts.hashtags[row] = [*posts.hashtags[row], posts.items[row]]
    store = write_text_store(tmp_path / "features.h5", posts, times)
    train_from_store(store, tmp_path / "model.pt", ModelConfig(NetworkConfig(dim=8)),
                     TrainConfig(epochs=2, batch_size=128, device="cpu"), split_by="time")
    checkpoint = load_checkpoint(tmp_path / "model.pt")
    data = Dataset.for_checkpoint(store, checkpoint.split, checkpoint.provenance, tmp_path / "model.pt")
    features = {name: data.posts.features["textual"][row, :N_TAGS]
                for row, name in enumerate(data.posts.items)}

    def embed(hashtags: Sequence[str]) -> np.ndarray:
        """An item's name as its content; a tag "tJ" as planted tag J's indicator."""
        rows = [features[h] if h in features else np.eye(N_TAGS, dtype=np.float32)[int(h[1:])] for h in hashtags]
        return np.stack(rows)

    report = evaluate_unseen(data, checkpoint, embedder=embed)
    assert sorted(checkpoint.split.test) == sorted(latest)
    assert report.counts["unseen_hashtags"] == len({posts.items[row] for row in latest})
    assert report.counts["unseen_cases"] == report.counts["cases"] == len(latest)
    assert set(report.methods) == {TEXT_MAP, MEAN_REPRESENTATION, KNOWN_ONLY, CAPTION_WORDS}
    assert report.methods[KNOWN_ONLY]["unseen R@5"] == 0.0
    assert report.methods[CAPTION_WORDS]["unseen R@5"] == 1.0  # the caption names it, and no seen hashtag as well
    main = evaluate(checkpoint.scorer(), data.posts, data.test, protocol="full", ks=(5, 10))["full"]["all"]
    assert report.methods[KNOWN_ONLY]["seen P@5"] == pytest.approx(main["P@5"])
    for figures in report.methods.values():
        assert all(0.0 <= value <= 1.0 for value in figures.values())
    assert "α" in report.notes[TEXT_MAP] and "caption words" in report.summary_line()
