"""Warm starts (`phr train --warm-start`): what carries over from an earlier checkpoint, what is
refused, and what the new checkpoint records."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import WIDTHS, planted_posts
from typer.testing import CliRunner

from phr_cli.cli import app
from phr_cli.data.dataset import SplitPosts
from phr_cli.data.graph import Graph, PostData, split_posts
from phr_cli.data.provenance import Provenance
from phr_cli.errors import CheckpointError
from phr_cli.files import sha256_of
from phr_cli.model.config import ModelConfig, NetworkConfig
from phr_cli.model.phr import PHRModel
from phr_cli.training.checkpoint import load_checkpoint
from phr_cli.training.config import TrainConfig
from phr_cli.training.train import Start, train
from phr_cli.training.warm_start import ROW_TABLES, carry_over, load_origin, reads_item_vectors

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODEL = ModelConfig(NetworkConfig(dim=8))
ONE_EPOCH = TrainConfig(epochs=1, batch_size=64, device="cpu", rerank=False)
NEW_USERS = ("user3", "user7")  # users the old posts do not have
NEW_HASHTAG = "tag29"  # a hashtag the old posts do not have


@pytest.fixture(scope="module")
def grown() -> PostData:
    return planted_posts(n_users=12, posts_per_user=8)


@pytest.fixture(scope="module")
def old_checkpoint(grown, tmp_path_factory) -> Path:
    """A model trained on the posts before the store grew: without two users and one hashtag."""
    old = grown.subset([i for i in range(len(grown)) if grown.users[i] not in NEW_USERS])
    old.hashtags = [[tag for tag in tags if tag != NEW_HASHTAG] for tags in old.hashtags]
    path = tmp_path_factory.mktemp("old") / "old.pt"
    train(SplitPosts(old, split_posts(old, seed=0)), MODEL, ONE_EPOCH, path)
    return path


def training_graph(posts: PostData) -> Graph:
    return SplitPosts(posts, split_posts(posts, seed=0)).graph


def fresh_model(posts: PostData, config: ModelConfig = MODEL) -> PHRModel:
    """The model a fresh run builds for posts' training graph (seeded as `train` seeds it)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ONE_EPOCH.seed)
        return PHRModel.from_graph(config, training_graph(posts))


def test_rows_of_known_names_carry_over_and_new_ones_keep_their_fresh_rows(grown, old_checkpoint):
    old = load_origin(old_checkpoint, MODEL, ONE_EPOCH, Provenance())
    fresh, warm = fresh_model(grown), fresh_model(grown)
    graph = training_graph(grown)
    record = carry_over(old, warm, graph, Provenance())

    names = {"users": graph.users, "hashtags": graph.hashtags, "items": graph.items}
    old_names = {"users": old.users, "hashtags": old.hashtags, "items": old.items}
    assert set(NEW_USERS) <= set(graph.users) - set(old.users) and NEW_HASHTAG in graph.hashtags
    warm_state, fresh_state = warm.state_dict(), fresh.state_dict()
    for name, vocabulary in ROW_TABLES.items():
        for row, key in enumerate(names[vocabulary]):
            expected = (old.state_dict[name][old_names[vocabulary].index(key)] if key in old_names[vocabulary]
                        else fresh_state[name][row])
            assert torch.equal(warm_state[name][row], expected), (name, key)
    assert record.carried == {vocabulary: [len(set(names[vocabulary]) & set(old_names[vocabulary])),
                                           len(names[vocabulary])] for vocabulary in names}
    assert record.carried["users"] == [10, 12]
    assert record.sha256 == sha256_of(old_checkpoint) and record.path == str(old_checkpoint.resolve())

    for name, parameter in warm.named_parameters():  # the other learned parameters: OLD's, whole
        if name not in ROW_TABLES and not reads_item_vectors(name) and "missing" not in name:
            assert torch.equal(parameter, old.state_dict[name]), name
    learned = dict(warm.named_parameters())
    for name in warm_state.keys() - learned.keys():  # the fitted statistics (buffers): the grown posts' own
        torch.testing.assert_close(warm_state[name], fresh_state[name], rtol=0, atol=0, equal_nan=True, msg=name)


def test_every_table_sized_by_the_data_is_carried_row_by_row():
    """A parameter whose shape follows the number of users, hashtags or items must be in
    ROW_TABLES (else a warm start would refuse it, or copy a table of another size whole)."""
    small, large = planted_posts(n_users=6, posts_per_user=4), planted_posts(n_users=9, posts_per_user=5)
    small_shapes = {name: p.shape for name, p in fresh_model(small).named_parameters()}
    large_shapes = {name: p.shape for name, p in fresh_model(large).named_parameters()}
    assert {name for name in small_shapes if small_shapes[name] != large_shapes[name]} == set(ROW_TABLES)


def test_item_weights_follow_the_grown_stores_caption_pca(grown, tmp_path):
    """The grown store refits its caption PCA: the weights reading v_k are re-expressed so that
    the warm-started model projects each item as OLD did (exactly, for a PCA that only
    reordered and flipped its components)."""
    width = WIDTHS["textual"]
    rng = np.random.default_rng(1)
    turn = np.eye(width, dtype=np.float32)[rng.permutation(width)] * rng.choice([-1.0, 1.0], size=width)
    old_provenance = Provenance(text_projection_mean=torch.zeros(width), text_projection_components=torch.eye(width))
    new_provenance = Provenance(text_projection_mean=torch.zeros(width),
                                text_projection_components=torch.as_tensor(turn.T.copy()))
    path = tmp_path / "old.pt"
    train(SplitPosts(grown, split_posts(grown, seed=0)), MODEL, ONE_EPOCH, path, old_provenance)
    turned = PostData(grown.users, grown.items, grown.hashtags,
                      {**grown.features, "textual": grown.features["textual"] @ turn}, grown.masks)
    warm = fresh_model(turned)
    old = load_origin(path, MODEL, ONE_EPOCH, new_provenance)
    carry_over(old, warm, training_graph(turned), new_provenance)

    before = old.model()
    masks = {m: torch.as_tensor(mask) for m, mask in grown.masks.items()}
    old_vectors = before.network.encode_items({m: torch.as_tensor(f) for m, f in grown.features.items()}, masks)
    new_vectors = warm.network.encode_items({m: torch.as_tensor(f) for m, f in turned.features.items()}, masks)
    assert not torch.allclose(old_vectors, new_vectors, atol=1e-3)  # the items' vectors differ …
    with torch.no_grad():  # … what the model reads of them does not
        torch.testing.assert_close(warm.network.scorer.item(new_vectors), before.network.scorer.item(old_vectors),
                                   atol=1e-4, rtol=1e-4)
        for new_layer, old_layer in zip(warm.network.propagation_layers(), before.network.propagation_layers()):
            torch.testing.assert_close(new_layer.item_projection(new_vectors), old_layer.item_projection(old_vectors),
                                       atol=1e-4, rtol=1e-4)


def test_another_model_configuration_encoders_or_modalities_are_refused(grown, old_checkpoint):
    with pytest.raises(CheckpointError, match=r"^--warm-start .*old\.pt: trained with another model configuration "
                                              r"\(network\.dim 8 → 16\)"):
        load_origin(old_checkpoint, ModelConfig(NetworkConfig(dim=16)), ONE_EPOCH, Provenance())
    with pytest.raises(CheckpointError, match=r"trained on a store of other encoders \(visual differ\)"):
        load_origin(old_checkpoint, MODEL, ONE_EPOCH, Provenance(encoders={"visual": "resnet50"}))
    # The item-ID dropout is resolved from each store's validation posts: it may differ.
    load_origin(old_checkpoint, replace(MODEL, item_ids=replace(MODEL.item_ids, dropout=0.3)), ONE_EPOCH,
                Provenance())

    without_audio = PostData(grown.users, grown.items, grown.hashtags,
                             {m: f for m, f in grown.features.items() if m != "acoustic"},
                             {m: mask for m, mask in grown.masks.items() if m != "acoustic"})
    old = load_origin(old_checkpoint, MODEL, ONE_EPOCH, Provenance())
    with pytest.raises(CheckpointError, match=r"its items have other modalities \(visual 32, acoustic 8, textual 16 "
                                              r"there, visual 32, textual 16 here\)"):
        carry_over(old, fresh_model(without_audio), training_graph(without_audio),
                   Provenance())


class Interrupted(Exception):
    pass


def test_the_checkpoint_records_its_origin_and_resumes_only_its_own_run(grown, old_checkpoint, tmp_path):
    data = SplitPosts(grown, split_posts(grown, seed=0))
    path = tmp_path / "new.pt"
    result = train(data, MODEL, ONE_EPOCH, path, warm_start=old_checkpoint)
    written = load_checkpoint(path)
    assert written.warm_start == result.warm_start and written.warm_start is not None
    assert written.warm_start.sha256 == sha256_of(old_checkpoint)
    assert written.warm_start.summary() == "10 of 12 users, 29 of 30 hashtags, 55 of 77 items rows carried over"

    assert written.warm_start.validation_metric is not None
    assert written.best_metric >= written.warm_start.validation_metric > 0  # epoch 0: the carried-over weights

    with pytest.raises(CheckpointError, match=r"is the --checkpoint itself"):
        train(data, MODEL, ONE_EPOCH, old_checkpoint, warm_start=old_checkpoint)

    # An interrupted run from scratch at the checkpoint is not silently replaced by a warm start …
    def stop(epoch, loss, metric, best):
        raise Interrupted

    interrupted = tmp_path / "interrupted.pt"
    with pytest.raises(Interrupted):
        train(data, MODEL, replace(ONE_EPOCH, epochs=2), interrupted, progress=stop)
    with pytest.raises(CheckpointError, match=r"holds an interrupted run that began afresh, not from --warm-start .*: "
                                              r"pass --restart to replace it"):
        train(data, MODEL, replace(ONE_EPOCH, epochs=2), interrupted, warm_start=old_checkpoint)
    # … an interrupted warm start resumes, with or without the option, and keeps its origin.
    with pytest.raises(Interrupted):
        train(data, MODEL, replace(ONE_EPOCH, epochs=2), interrupted, resume=False, warm_start=old_checkpoint,
              progress=stop)
    resumed = train(data, MODEL, replace(ONE_EPOCH, epochs=2), interrupted)
    assert resumed.start is Start.RESUMED and resumed.warm_start == written.warm_start


def test_phr_train_warm_start_says_what_carried_over(tmp_path):
    from reliability.reliability_data import write_text_posts

    root = write_text_posts(tmp_path / "posts", users=3, posts_per_user=4)
    store = tmp_path / "features.h5"
    extracted = CliRunner().invoke(app, ["extract", str(root), "--store", str(store), "--random-weights",
                                         "--workers", "0", "--device", "cpu"])
    assert extracted.exit_code == 0, extracted.output

    def train_cli(checkpoint: Path, *options: str):
        return CliRunner().invoke(app, ["train", "--store", str(store), "--checkpoint", str(checkpoint), "--epochs",
                                        "1", "--dim", "8", "--no-rerank", "--device", "cpu", *options])

    assert train_cli(tmp_path / "old.pt").exit_code == 0
    warm = train_cli(tmp_path / "new.pt", "--warm-start", str(tmp_path / "old.pt"))
    assert warm.exit_code == 0, warm.output
    assert f"warm-started from {(tmp_path / 'old.pt').resolve()}: 3 of 3 users," in warm.stdout
    inspected = CliRunner().invoke(app, ["inspect", str(tmp_path / "new.pt"), "--json"])
    assert json.loads(inspected.stdout)["warm_start"]["sha256"] == sha256_of(tmp_path / "old.pt")
    refused = train_cli(tmp_path / "other.pt", "--warm-start", str(tmp_path / "old.pt"), "--dim", "16")
    assert refused.exit_code == 1
    assert refused.output.strip().splitlines()[-1].startswith("error: --warm-start ")
    # A finished run from scratch is a result: a warm start replaces it only with --overwrite.
    assert train_cli(tmp_path / "old.pt", "--warm-start", str(tmp_path / "new.pt")).exit_code == 1


def test_the_carried_over_weights_stay_the_result_unless_an_epoch_beats_them(grown, old_checkpoint, tmp_path):
    """Validated before the first epoch as epoch 0; an epoch that learns nothing (a vanishing
    learning rate) does not beat them, so they are what the checkpoint keeps."""
    data = SplitPosts(grown, split_posts(grown, seed=0))
    result = train(data, MODEL, replace(ONE_EPOCH, lr=1e-30, epochs=2, patience=1), tmp_path / "new.pt",
                   warm_start=old_checkpoint)
    assert result.best_epoch == 0 and result.stopped_early and len(result.history) == 1
    assert result.warm_start is not None and result.best_metric == result.warm_start.validation_metric
    carried = fresh_model(grown)
    carry_over(load_origin(old_checkpoint, MODEL, ONE_EPOCH, Provenance()), carried, training_graph(grown),
               Provenance())
    kept = load_checkpoint(tmp_path / "new.pt").state_dict
    for name, parameter in carried.named_parameters():
        assert torch.equal(kept[name], parameter), name


def test_rows_a_refresh_added_to_old_start_afresh(grown, old_checkpoint, tmp_path):
    """`phr train --refresh` appends rows for users first seen after training, filled in
    without training: a warm start treats those users as new."""
    refreshed = load_checkpoint(old_checkpoint)
    trained = [len(refreshed.users), len(refreshed.hashtags), len(refreshed.items)]
    refreshed.users = [*refreshed.users, NEW_USERS[0]]
    for name in ("network.user_embedding.weight", "evidence.user_weights"):
        table = refreshed.state_dict[name]
        refreshed.state_dict[name] = torch.cat([table, torch.full_like(table[:1], 7.0)])
    refreshed.refreshed = {"trained": trained}
    refreshed.save(tmp_path / "refreshed.pt")

    fresh, warm = fresh_model(grown), fresh_model(grown)
    graph = training_graph(grown)
    record = carry_over(load_origin(tmp_path / "refreshed.pt", MODEL, ONE_EPOCH, Provenance()), warm, graph,
                        Provenance())
    row = graph.users.index(NEW_USERS[0])
    assert torch.equal(warm.network.user_embedding.weight[row], fresh.network.user_embedding.weight[row])
    assert record.carried["users"] == [10, 12]
