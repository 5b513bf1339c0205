"""A new hashtag placed by its words (model/hashtag_text.py) and grown into a trained model (ranking/live.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from test_baselines import planted_posts

from phr_cli.data.graph import PostData
from phr_cli.data.provenance import Provenance
from phr_cli.errors import EncoderMismatchError
from phr_cli.model.config import ModelConfig, NetworkConfig
from phr_cli.model.hashtag_text import HashtagEmbedder, HashtagsByText, HashtagTextMap, hashtag_words
from phr_cli.ranking.live import LiveModel
from phr_cli.training.checkpoint import Checkpoint, load_checkpoint
from phr_cli.training.config import TrainConfig
from phr_cli.training.train import train_from_store
from support.stores import ENCODERS, write_text_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")
N_TAGS = 40  # planted_posts' tags, and the width of its textual features


@pytest.mark.parametrize(("hashtag", "words"), [
    ("hiphopdance", ["hip", "hop", "dance"]),
    ("HipHopDance", ["hip", "hop", "dance"]),
    ("#alternative_rock", ["alternative", "rock"]),
    ("NYCSubway2020", ["nyc", "subway", "2020"]),
    ("k-pop", ["k", "pop"]),
    ("schöneMusik", ["schöne", "musik"]),
])
def test_a_hashtag_is_split_into_its_words(hashtag: str, words: list[str]) -> None:
    assert hashtag_words(hashtag) == words


def test_the_map_recovers_a_planted_linear_relation() -> None:
    rng = np.random.default_rng(0)
    weight, intercept = rng.normal(size=(12, 5)), rng.normal(size=5)
    embeddings = rng.normal(size=(300, 12))
    reps = embeddings @ weight + intercept + rng.normal(0, 0.01, (300, 5))
    text_map = HashtagTextMap.fit(embeddings, reps)
    unseen = rng.normal(size=(20, 12))
    np.testing.assert_allclose(text_map(unseen).numpy(), unseen @ weight + intercept, atol=0.05)
    assert text_map.alpha <= 1.0  # little noise: leave-one-out keeps the penalty small


def test_an_embedder_for_another_text_encoder_is_refused() -> None:
    with pytest.raises(EncoderMismatchError, match="text encoder 't'"):
        HashtagEmbedder.for_provenance(Provenance(store="s.h5", encoders=ENCODERS))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Checkpoint, PostData, np.ndarray]:
    """A checkpoint trained on planted posts (time split), every post, and each post's item's planted tags.
    The paper's network alone: its graph score is what a new hashtag's representation enters."""
    posts, _ = planted_posts(seed=3, n_users=20, n_items=40, posts_per_user=10)
    times = np.arange(len(posts), dtype=np.float64) * 3600.0
    root = tmp_path_factory.mktemp("hashtag-text")
    store = write_text_store(root / "features.h5", posts, times)
    train_from_store(store, root / "model.pt", ModelConfig.paper(NetworkConfig(dim=16)),
                     TrainConfig(epochs=10, patience=10, batch_size=128, device="cpu"), split_by="time")
    padded = np.zeros((len(posts), 100), np.float32)
    padded[:, :N_TAGS] = posts.features["textual"]
    posts.features = {"textual": padded}
    posts.masks = {"textual": np.ones(len(posts), bool)}
    posts.times = times
    item_tags = (np.asarray(posts.features["textual"])[:, :N_TAGS] > 0.5)
    return load_checkpoint(root / "model.pt"), posts, item_tags


def planted_embedder(hashtags: Sequence[str]) -> np.ndarray:
    """A hashtag "tJ" or "newJ" as the indicator of planted tag J: the words of the content it describes."""
    embedded = np.zeros((len(hashtags), N_TAGS), np.float32)
    for row, hashtag in enumerate(hashtags):
        embedded[row, int(hashtag.lstrip("tnew"))] = 1.0
    return embedded


def test_a_new_hashtag_whose_words_match_the_clip_ranks_above_unrelated_new_ones(trained) -> None:
    checkpoint, posts, item_tags = trained
    scorer = checkpoint.scorer()
    live = LiveModel(scorer, checkpoint.users, checkpoint.hashtags,
                     HashtagsByText.fit(planted_embedder, checkpoint.hashtags, scorer.hashtag_reps))
    new = [f"new{j}" for j in range(N_TAGS)]
    live.add_hashtags(new)
    probe = posts.subset(checkpoint.split.test)
    users = np.array([live.user_position(u) for u in probe.users])
    new_scores = live.scorer.score(users, probe).numpy()[:, [live.hashtag_index[h] for h in new]]
    matching = item_tags[checkpoint.split.test]
    # Each post's new hashtags that describe its content against those that do not (ROC AUC).
    wins = [(s[m][:, None] > s[~m][None, :]).mean() for s, m in zip(new_scores, matching) if m.any()]
    assert np.mean(wins) > 0.7


def test_grown_columns_leave_the_known_hashtags_scores_unchanged(trained) -> None:
    checkpoint, posts, _ = trained
    probe = posts.subset(checkpoint.split.test[:20])
    users = np.array([checkpoint.user_position(u) for u in probe.users])
    frozen = torch.cat([total for _, _, total in checkpoint.scorer().scored_chunks(users, probe)])
    scorer = checkpoint.scorer()
    live = LiveModel(scorer, checkpoint.users, checkpoint.hashtags,
                     HashtagsByText.fit(planted_embedder, checkpoint.hashtags, scorer.hashtag_reps))
    live.add_hashtags(["new3", "new7", checkpoint.hashtags[0]])
    assert live.new_hashtags == 2 and live.hashtags[-2:] == ["new3", "new7"]
    grown = torch.cat([total for _, _, total in live.scorer.scored_chunks(users, probe)])
    assert grown.shape == (len(probe), len(checkpoint.hashtags) + 2)
    torch.testing.assert_close(grown[:, : len(checkpoint.hashtags)], frozen)
