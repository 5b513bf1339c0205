"""A store's dataset: posts, split and provenance for train, tune and evaluate."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from test_train import planted_posts

from phr_cli.data.cases import build_cases
from phr_cli.data.dataset import Dataset, SplitPosts
from phr_cli.data.graph import build_graph, split_posts
from phr_cli.errors import CheckpointError, DataError, EncoderMismatchError
from phr_cli.model.config import ModelConfig, NetworkConfig
from phr_cli.training.checkpoint import load_checkpoint
from phr_cli.training.config import TrainConfig
from phr_cli.training.train import train_from_store
from support.stores import write_text_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_store_dataset_splits_its_posts_and_records_training_hashtags_only(tmp_path):
    posts = planted_posts(n_users=6, posts_per_user=5)
    dataset = Dataset.from_store(write_text_store(tmp_path / "features.h5", posts), "post", seed=2)
    expected = split_posts(posts, seed=2, by="post")
    np.testing.assert_array_equal(dataset.split.test, expected.test)
    assert dataset.split_sizes == (len(expected.train), len(expected.validation), len(expected.test))
    assert dataset.names[:2] == ["posts.jsonl:1", "posts.jsonl:2"]
    used = dataset.provenance().user_hashtags
    trained = {tag for row in dataset.split.train for tag in posts.hashtags[row]}
    assert set().union(*used.values()) == trained


def test_split_posts_build_the_training_graph_and_the_cases_once():
    posts = planted_posts(n_users=6, posts_per_user=5)
    split = split_posts(posts, seed=1, by="post")
    data = SplitPosts(posts, split)
    graph = build_graph(posts.subset(split.train))
    assert data.graph is data.graph  # built on first read, then kept
    assert (data.graph.users, data.graph.hashtags, data.graph.items) == (graph.users, graph.hashtags, graph.items)
    np.testing.assert_array_equal(data.graph.triples, graph.triples)
    for cases, rows in ((data.validation, split.validation), (data.test, split.test)):
        expected = build_cases(posts, rows, graph)
        np.testing.assert_array_equal(cases.rows, expected.rows)
        np.testing.assert_array_equal(cases.users, expected.users)
        assert [r.tolist() for r in cases.relevant] == [r.tolist() for r in expected.relevant]
    assert data.test is data.test


def test_too_few_posts_are_refused(tmp_path):
    store = write_text_store(tmp_path / "features.h5", planted_posts(n_users=3, posts_per_user=3))
    with pytest.raises(DataError, match=r"features.h5: only 9 trainable posts"):
        Dataset.from_store(store)


def test_a_checkpoint_dataset_is_its_split_of_unchanged_posts(tmp_path):
    posts = planted_posts(n_users=6, posts_per_user=5)
    store = write_text_store(tmp_path / "features.h5", posts)
    path = tmp_path / "model.pt"
    train_from_store(store, path, ModelConfig(NetworkConfig(dim=8)), TrainConfig(epochs=1, device="cpu"),
                     split_by="item")
    checkpoint = load_checkpoint(path)
    dataset = Dataset.for_checkpoint(store, checkpoint.split, checkpoint.provenance, path)
    np.testing.assert_array_equal(dataset.split.train, checkpoint.split.train)
    assert dataset.split.by == "item"

    posts.hashtags[0] = ["changed"]
    changed = write_text_store(tmp_path / "changed.h5", posts)
    with pytest.raises(CheckpointError, match=r"changed.h5: its posts changed since .*model.pt was trained"):
        Dataset.for_checkpoint(changed, checkpoint.split, checkpoint.provenance, path)
    with h5py.File(changed, "a") as handle:
        handle.attrs["encoders"] = '{"textual": "another"}'
    with pytest.raises(EncoderMismatchError, match="other encoders"):
        Dataset.for_checkpoint(changed, checkpoint.split, checkpoint.provenance, path)
