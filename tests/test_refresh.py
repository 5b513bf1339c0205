"""`phr train --refresh` (training/refresh.py) and the journal taken into the store
(data/journal.take_into_store): new posts counted without a retrain, each post once."""

from __future__ import annotations

import numpy as np
import pytest
from test_baselines import planted_posts
from typer.testing import CliRunner

from phr_cli.cli import app
from phr_cli.data.graph import posts_from_store
from phr_cli.data.journal import JOURNAL_SOURCE, LivePost, SQLiteJournal, take_into_store
from phr_cli.data.store import TEXTUAL_DIM, load_store
from phr_cli.model.config import ModelConfig, NetworkConfig
from phr_cli.ranking.live import LiveModel
from phr_cli.training.checkpoint import load_checkpoint
from phr_cli.training.comparison import evaluate_store
from phr_cli.training.config import TrainConfig
from phr_cli.training.refresh import refresh_checkpoint
from phr_cli.training.train import train_from_store
from support.stores import write_text_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def user_counts(path, user: str) -> dict[str, int]:
    """The user's posts per hashtag, as the refreshed checkpoint's model counts them."""
    checkpoint = load_checkpoint(path)
    live = LiveModel(checkpoint.scorer(), checkpoint.users, checkpoint.hashtags)
    return {live.hashtags[c]: round(n) for c, n in live.user_counts(live.user_position(user)).items()}


@pytest.fixture
def grown(tmp_path):
    """A checkpoint trained on a store of 150 posts, and the same store grown by 50 posts."""
    posts, _ = planted_posts(seed=4, n_users=20, n_items=40, posts_per_user=10)
    times = np.arange(len(posts), dtype=np.float64) * 3600.0
    first = np.arange(150)
    store = write_text_store(tmp_path / "features.h5", posts.subset(first), times[first])
    checkpoint = tmp_path / "model.pt"
    train_from_store(store, checkpoint, ModelConfig(NetworkConfig(dim=8)),
                     TrainConfig(epochs=1, batch_size=128, device="cpu"), split_by="time")
    write_text_store(store, posts, times)  # the store grew: the first 150 posts keep their ids
    return store, checkpoint, posts


def test_a_refresh_counts_the_new_posts_once_and_keeps_the_network(grown):
    store, checkpoint, posts = grown
    before = load_checkpoint(checkpoint)
    done = refresh_checkpoint(checkpoint, store)
    assert done.posts == 50 and done.intake is None
    after = load_checkpoint(checkpoint)
    assert after.users[: len(before.users)] == before.users and after.trained_users == before.users
    assert after.refreshed["posts"] == 50 and after.refreshed["trained"][1] == len(before.hashtags)
    network = "network.scorer"  # the learned network is as trained
    for name, value in before.state_dict.items():
        if name.startswith(network):
            assert after.state_dict[name].equal(value), name
    user = posts.users[-1]
    expected: dict[str, int] = {}
    for u, tags in zip(posts.users, posts.hashtags):
        if u == user:
            for tag in tags:
                expected[tag] = expected.get(tag, 0) + 1
    # The training split's posts and every new one; the held-out posts were in the store at training.
    held_out = set(before.split.validation.tolist()) | set(before.split.test.tolist())
    for row in held_out:
        if posts.users[row] == user:
            for tag in posts.hashtags[row]:
                expected[tag] -= 1
    assert user_counts(checkpoint, user) == {t: n for t, n in expected.items() if n}
    assert refresh_checkpoint(checkpoint, store).posts == 0  # nothing new the second time
    comparison = evaluate_store(store, checkpoint, "full", baselines=())  # still evaluates on its split
    assert comparison.methods[0].metrics["full"]["all"]["cases"] > 0


def test_the_journal_is_taken_into_the_store_once_then_refreshed_in(grown, tmp_path):
    store, checkpoint, _ = grown
    journal = SQLiteJournal(tmp_path / "journal.db")
    for n in range(3):
        journal.append(LivePost(f"post-{n}", "newcomer", ["fresh", "t1"], caption=f"a new clip {n}",
                                time=1e9 + n, features={"textual": np.ones(TEXTUAL_DIM, np.float32)},
                                masks={"textual": True}, status="text_only"))
    intake = take_into_store(journal, store)
    assert (intake.posts, intake.already) == (3, 0)
    contents = load_store(store)
    assert contents.posts.source[-3:] == [JOURNAL_SOURCE + f"post-{n}" for n in range(3)]
    assert len(posts_from_store(contents).posts) == 200 + 3
    assert take_into_store(journal, store).posts == 0
    result = CliRunner().invoke(app, ["train", "--refresh", "--store", str(store), "--checkpoint", str(checkpoint),
                                      "--journal", str(tmp_path / "journal.db")])
    assert result.exit_code == 0, result.output
    assert "53 post(s) folded in (" in result.stdout and "; the network is as trained" in result.stdout
    assert "0 post(s) taken into the store (3 there before)" in result.stderr
    assert user_counts(checkpoint, "newcomer") == {"fresh": 3, "t1": 3}
    shown = CliRunner().invoke(app, ["inspect", str(checkpoint)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "53 post(s) folded in from" in shown.stdout, shown.output
