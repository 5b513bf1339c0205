"""A store's dataset: posts, split and provenance for train, tune and evaluate."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from test_train import planted_posts

from phr_cli.checkpoint import CheckpointError, load_checkpoint
from phr_cli.config import TrainConfig
from phr_cli.dataset import Dataset
from phr_cli.encoders.registry import EncoderMismatchError
from phr_cli.errors import DataError
from phr_cli.graph import split_posts
from phr_cli.model import ModelConfig
from phr_cli.train import train_from_store
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


def test_too_few_posts_are_refused(tmp_path):
    store = write_text_store(tmp_path / "features.h5", planted_posts(n_users=3, posts_per_user=3))
    with pytest.raises(DataError, match=r"features.h5: only 9 trainable posts"):
        Dataset.from_store(store)


def test_a_checkpoint_dataset_is_its_split_of_unchanged_posts(tmp_path):
    posts = planted_posts(n_users=6, posts_per_user=5)
    store = write_text_store(tmp_path / "features.h5", posts)
    path = tmp_path / "model.pt"
    train_from_store(store, path, ModelConfig(dim=8), TrainConfig(epochs=1, device="cpu"), split_by="item")
    checkpoint = load_checkpoint(path)
    dataset = Dataset.for_checkpoint(store, checkpoint, path)
    np.testing.assert_array_equal(dataset.split.train, checkpoint.split.train)
    assert dataset.split.by == "item"

    posts.hashtags[0] = ["changed"]
    changed = write_text_store(tmp_path / "changed.h5", posts)
    with pytest.raises(CheckpointError, match=r"changed.h5: its posts changed since .*model.pt was trained"):
        Dataset.for_checkpoint(changed, checkpoint, path)
    with h5py.File(changed, "a") as handle:
        handle.attrs["encoders"] = '{"textual": "another"}'
    with pytest.raises(EncoderMismatchError, match="other encoders"):
        Dataset.for_checkpoint(changed, checkpoint, path)
