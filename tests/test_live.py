"""Posts folded into a trained model (ranking/live.py): counts as a retrain would count them,
new users and hashtags scored from their first use, the frozen model untouched."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_baselines import planted_posts

from phr_cli.data.graph import PostData
from phr_cli.model.config import ModelConfig, NetworkConfig
from phr_cli.ranking.live import LiveModel
from phr_cli.training.checkpoint import Checkpoint, load_checkpoint
from phr_cli.training.config import TrainConfig
from phr_cli.training.train import train_from_store
from support.stores import write_text_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FEATURE_WIDTH = 40  # planted_posts' textual width (its number of tags)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Checkpoint, PostData]:
    """A checkpoint trained on the earliest posts of a planted set (time split), and every post."""
    posts, _ = planted_posts(seed=3, n_users=20, n_items=40, posts_per_user=10)
    times = np.arange(len(posts), dtype=np.float64) * 3600.0
    root = tmp_path_factory.mktemp("live")
    store = write_text_store(root / "features.h5", posts, times)
    train_from_store(store, root / "model.pt", ModelConfig(NetworkConfig(dim=8)),
                     TrainConfig(epochs=2, batch_size=128, device="cpu"), split_by="time")
    padded = np.zeros((len(posts), 100), np.float32)
    padded[:, :FEATURE_WIDTH] = posts.features["textual"]
    posts.features = {"textual": padded}
    posts.masks = {"textual": np.ones(len(posts), bool)}
    posts.times = times
    return load_checkpoint(root / "model.pt"), posts


def live_model(checkpoint: Checkpoint) -> LiveModel:
    return LiveModel(checkpoint.scorer(), checkpoint.users, checkpoint.hashtags)


def scores(live: LiveModel, posts: PostData) -> np.ndarray:
    users = np.array([live.user_position(u) for u in posts.users])
    return live.scorer.score(users, posts).numpy()


def test_folded_posts_are_counted_as_training_posts_are(trained):
    checkpoint, posts = trained
    split = checkpoint.split
    live = live_model(checkpoint)
    later = posts.subset(np.concatenate([split.validation, split.test]))
    live.fold_in(later)
    counted = posts.subset(np.concatenate([split.train, split.validation, split.test]))
    for user in sorted(set(counted.users)):
        expected = Counter(h for u, tags in zip(counted.users, counted.hashtags) if u == user for h in tags)
        found = {live.hashtags[c]: n for c, n in live.user_counts(live.user_position(user)).items()}
        assert found == expected, user
    evidence = live.scorer.model.evidence
    everything = Counter(h for tags in counted.hashtags for h in tags)
    assert {live.hashtags[c]: n for c, n in enumerate(evidence.hashtag_counts.tolist()) if n} == everything
    assert len(evidence.uses.keys) == sum(everything.values()) == len(evidence.use_items)
    assert live.folded == len(later)


def test_a_new_user_and_a_new_hashtag_are_ranked_from_their_first_uses(trained):
    checkpoint, posts = trained
    live = live_model(checkpoint)
    assert "brandnew" not in live.hashtags and live.user_position("newcomer") == -1
    mine = PostData(users=["newcomer"] * 3, items=["fresh-1", "fresh-2", "fresh-3"],
                    hashtags=[["brandnew", "t1"]] * 3, features={"textual": posts.features["textual"][:3]},
                    masks={"textual": np.ones(3, bool)}, times=np.array([1e6, 1e6 + 60, 1e6 + 120]))
    live.fold_in(mine)
    assert live.new_users == 1 and live.new_hashtags == 1
    next_post = PostData(users=["newcomer"], items=["fresh-4"], hashtags=[[]],
                         features={"textual": posts.features["textual"][5:6]}, masks={"textual": np.ones(1, bool)},
                         times=np.array([1e6 + 180]))
    [row] = scores(live, next_post)
    top = [live.hashtags[c] for c in np.argsort(-row, kind="stable")[:2]]
    assert set(top) == {"brandnew", "t1"}
    # Someone else's ranking does not put the newcomer's habit first.
    other = replace(next_post, users=[posts.users[0]])
    [row] = scores(live, other)
    assert live.hashtags[int(np.argmax(row))] != "brandnew"


def test_the_checkpoint_and_other_scorers_are_untouched(trained):
    checkpoint, posts = trained
    frozen = checkpoint.scorer()
    probe = posts.subset(checkpoint.split.test[:5])
    users = np.array([checkpoint.user_position(u) for u in probe.users])
    before = frozen.score(users, probe).numpy()
    live = live_model(checkpoint)
    live.fold_in(posts.subset(checkpoint.split.validation))
    np.testing.assert_array_equal(frozen.score(users, probe).numpy(), before)
    np.testing.assert_array_equal(checkpoint.scorer().score(users, probe).numpy(), before)
    assert not torch.equal(torch.as_tensor(scores(live, probe)[:, :len(checkpoint.hashtags)]), torch.as_tensor(before))


def test_an_item_folded_in_is_known_by_its_key_and_its_history_counts(trained):
    checkpoint, posts = trained
    live = live_model(checkpoint)
    post = PostData(users=[posts.users[0]], items=["viral"], hashtags=[["t7"]],
                    features={"textual": posts.features["textual"][:1]}, masks={"textual": np.ones(1, bool)},
                    times=np.array([2e6]))
    live.fold_in(replace(post, users=["a"]))
    live.fold_in(replace(post, users=["b"]))
    assert "viral" in live.scorer.item_index
    evidence = live.scorer.model.evidence
    item = torch.tensor([live.scorer.item_index["viral"]])
    assert evidence.item_counts.dense_rows(item)[0, live.hashtag_index["t7"]] == 2
