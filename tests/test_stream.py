"""The stream protocol (training/stream.py): test posts scored in time order, each folded
in once scored; posts of one time never see each other; PITF stays frozen and says so."""

from __future__ import annotations

import numpy as np
import pytest
from test_baselines import planted_posts
from typer.testing import CliRunner

from phr_cli.cli import app
from phr_cli.data.cases import build_cases
from phr_cli.data.graph import PostData, build_graph
from phr_cli.errors import ConfigError
from phr_cli.evaluation.baselines import UserPopularity
from phr_cli.model.config import ModelConfig, NetworkConfig
from phr_cli.training.comparison import evaluate_store
from phr_cli.training.config import TrainConfig
from phr_cli.training.stream import FROZEN_NOTE, RefittedCounts, stream_rank
from phr_cli.training.train import train_from_store
from support.stores import write_text_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def text_posts(rows: list[tuple[str, str, list[str], float]]) -> PostData:
    return PostData(users=[r[0] for r in rows], items=[r[1] for r in rows], hashtags=[r[2] for r in rows],
                    features={"textual": np.ones((len(rows), 4), np.float32)},
                    masks={"textual": np.ones(len(rows), bool)}, times=np.array([r[3] for r in rows]))


def test_a_users_new_habit_counts_from_the_post_after_it():
    posts = text_posts([
        ("ann", "a", ["rock"], 1), ("bob", "b", ["jazz"], 2), ("bob", "c", ["jazz"], 3),  # training
        ("ann", "d", ["jazz"], 10), ("ann", "e", ["jazz"], 11),  # test: ann takes up jazz
        ("cat", "f", ["rock"], 12), ("cat", "g", ["jazz"], 12),  # test: cat's posts of one time
    ])
    train, test_rows = np.arange(3), np.arange(3, 7)
    graph = build_graph(posts.subset(train))
    cases = build_cases(posts, test_rows, graph)
    frozen = UserPopularity(graph).score(cases.users, posts.subset(cases.rows))
    assert graph.hashtags[int(np.argmax(frozen[1]))] == "rock"  # ann's second jazz post, frozen
    outcome = stream_rank(RefittedCounts(UserPopularity, posts.subset(train)), posts, cases, test_rows,
                          graph.n_hashtags, ks=(1,), seed=0)
    first = [graph.hashtags[c] for c in outcome.ranked[:, 0]]
    # ann's first jazz post is scored before it is known; her second one after (a tie with
    # rock in her counts, which global popularity breaks).
    assert first[:2] == ["rock", "jazz"]
    # cat's two posts share a time: neither is folded in before the other is scored, so cat
    # stays a user without history and both get the global favourite.
    assert first[2:] == ["jazz", "jazz"]
    assert outcome.metrics["P@1"].tolist() == [0.0, 1.0, 0.0, 1.0]


@pytest.fixture(scope="module")
def time_split(tmp_path_factory):
    posts, _ = planted_posts(seed=5, n_users=20, n_items=40, posts_per_user=10)
    root = tmp_path_factory.mktemp("stream")
    store = write_text_store(root / "features.h5", posts, np.arange(len(posts)) * 3600.0)
    checkpoint = root / "model.pt"
    train_from_store(store, checkpoint, ModelConfig(NetworkConfig(dim=8)),
                     TrainConfig(epochs=2, batch_size=128, device="cpu"), split_by="time")
    return store, checkpoint


def test_every_method_has_a_stream_figure_beside_its_frozen_one(time_split):
    store, checkpoint = time_split
    comparison = evaluate_store(store, checkpoint, "stream",
                                baselines=("user popularity", "content kNN", "PITF"))
    assert [m.name for m in comparison.methods] == ["GCN-PHR", "user popularity", "content kNN", "PITF"]
    for method in comparison.methods:
        assert set(method.metrics) >= {"full", "stream"}
        assert set(method.metrics["stream"]["all"]) == set(method.metrics["full"]["all"])
    pitf = comparison.methods[-1]
    assert FROZEN_NOTE in pitf.note and pitf.metrics["stream"] == pitf.metrics["full"]
    assert all(FROZEN_NOTE not in m.note for m in comparison.methods[:-1])
    assert "stream" in comparison.methods[1].significance


def test_the_stream_protocol_needs_a_time_split(tmp_path):
    posts, _ = planted_posts(seed=6, n_users=10, n_items=20, posts_per_user=6)
    store = write_text_store(tmp_path / "features.h5", posts)
    train_from_store(store, tmp_path / "model.pt", ModelConfig(NetworkConfig(dim=8)),
                     TrainConfig(epochs=1, batch_size=128, device="cpu"))
    with pytest.raises(ConfigError, match=r"needs a time split.*--split-by time"):
        evaluate_store(store, tmp_path / "model.pt", "stream", baselines=())
    result = CliRunner().invoke(app, ["evaluate", "--store", str(store), "--checkpoint", str(tmp_path / "model.pt"),
                                      "--protocol", "stream", "--no-baselines", "--device", "cpu"])
    assert result.exit_code == 1 and "needs a time split" in result.stderr
