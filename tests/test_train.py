"""Training on a synthetic set with planted structure; checkpoints, resumption, determinism."""

from __future__ import annotations

import json
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from phr_cli.cli import app
from phr_cli.data.cases import build_cases
from phr_cli.data.dataset import SplitPosts
from phr_cli.data.graph import PostData, build_graph, split_posts
from phr_cli.data.provenance import Provenance
from phr_cli.errors import CheckpointError, DataError
from phr_cli.evaluation.baselines import GlobalPopularity, UserPopularity
from phr_cli.evaluation.metrics import evaluate
from phr_cli.model.config import ItemIdConfig, ModelConfig, NetworkConfig
from phr_cli.training.checkpoint import load_checkpoint, save_checkpoint
from phr_cli.training.config import TrainConfig
from phr_cli.training.train import NegativeSampler, Start, train

WIDTHS = {"visual": 32, "acoustic": 8, "textual": 16}
N_TOPICS, TAGS_PER_TOPIC, N_PERSONAL_TAGS = 4, 5, 10
PROVENANCE = Provenance(store="x.h5", encoders={"visual": "resnet50"}, text_projection_mean=torch.arange(3.0),
                        text_projection_components=torch.arange(6.0).reshape(2, 3))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def planted_posts(seed: int = 0, n_users: int = 40, posts_per_user: int = 15) -> PostData:
    """4 topics with 5 hashtags each (0-19) and 10 personal hashtags (20-29), 2 per user.

    A post is about one topic: its features are the topic's centroid plus noise (10 % of
    modalities missing), its hashtags two of the topic's (skewed) and each of the user's
    two personal ones with probability 0.9. Only the user knows the personal hashtags and
    only the content knows the topic: a good model needs both.
    """
    rng = np.random.default_rng(seed)
    centroids = {m: rng.normal(size=(N_TOPICS, w)) for m, w in WIDTHS.items()}
    topic_tag_weights = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    personal = [rng.choice(N_PERSONAL_TAGS, size=2, replace=False) + N_TOPICS * TAGS_PER_TOPIC for _ in range(n_users)]
    users, items, hashtags, topics = [], [], [], []
    for user in range(n_users):
        for post in range(posts_per_user):
            topic = int(rng.integers(N_TOPICS))
            tags = set(TAGS_PER_TOPIC * topic + rng.choice(TAGS_PER_TOPIC, size=2, replace=False, p=topic_tag_weights))
            tags |= {int(t) for t in personal[user] if rng.random() < 0.9}
            users.append(f"user{user}")
            items.append(f"video{user}-{post}")
            hashtags.append([f"tag{t}" for t in sorted(tags)])
            topics.append(topic)
    n_posts = len(users)
    return PostData(
        users=users,
        items=items,
        hashtags=hashtags,
        features={
            m: (centroids[m][topics] + 0.6 * rng.normal(size=(n_posts, w))).astype(np.float32)
            for m, w in WIDTHS.items()
        },
        masks={m: rng.random(n_posts) > 0.1 for m in WIDTHS},
    )


@pytest.fixture(scope="module")
def data():
    posts = planted_posts()
    return posts, split_posts(posts, seed=0)


FAST = TrainConfig(epochs=60, batch_size=128, lr=3e-3, patience=60, device="cpu")


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    posts, split = data
    path = tmp_path_factory.mktemp("train") / "model.pt"
    result = train(SplitPosts(posts, split), ModelConfig(NetworkConfig(dim=64)), FAST, path, PROVENANCE)
    return result, path


def full_ranking(scorer, posts, cases) -> dict[str, float]:
    return evaluate(scorer, posts, cases, protocol="full", ks=(5,))["full"]["all"]


def test_training_beats_popularity_baselines(data, trained):
    posts, split = data
    result, path = trained
    graph = build_graph(posts.subset(split.train))
    cases = build_cases(posts, split.test, graph)
    model = full_ranking(load_checkpoint(path).scorer(), posts, cases)
    global_popularity = full_ranking(GlobalPopularity(graph), posts, cases)
    user_popularity = full_ranking(UserPopularity(graph), posts, cases)
    for metric in ("P@5", "R@5"):
        assert model[metric] > global_popularity[metric] + 0.2, (metric, model, global_popularity)
        assert model[metric] > user_popularity[metric] + 0.05, (metric, model, user_popularity)
    losses = [epoch["loss"] for epoch in result.history]
    assert losses[-1] < 0.5 * losses[0]


def test_checkpoint_holds_what_recommend_needs(data, trained):
    posts, split = data
    result, path = trained
    checkpoint = load_checkpoint(path)
    graph = build_graph(posts.subset(split.train))
    assert checkpoint.users == graph.users and checkpoint.hashtags == graph.hashtags and checkpoint.items == graph.items
    assert all(np.array_equal(getattr(checkpoint.split, p), getattr(split, p)) for p in ("train", "validation", "test"))
    assert (checkpoint.split.seed, checkpoint.split.by) == (split.seed, split.by)
    # The item-ID dropout left to the data is recorded as resolved: every validation post is new here.
    assert checkpoint.model_config == ModelConfig(NetworkConfig(dim=64), item_ids=ItemIdConfig(dropout=1.0))
    assert checkpoint.train_config == FAST
    assert checkpoint.provenance.store == "x.h5" and checkpoint.provenance.encoders == PROVENANCE.encoders
    assert torch.equal(checkpoint.provenance.text_projection_components, PROVENANCE.text_projection_components)
    assert checkpoint.completed and not checkpoint.stopped_early and len(checkpoint.history) == FAST.epochs

    metrics = [epoch["metric"] for epoch in checkpoint.history]
    assert checkpoint.best_epoch == result.best_epoch == 1 + int(np.argmax(metrics))
    assert checkpoint.best_metric == result.best_metric == max(metrics)
    # The saved model, without any graph, reproduces the best epoch's validation figure.
    cases = build_cases(posts, split.validation, graph)
    again = evaluate(checkpoint.scorer(), posts, cases, protocol="full", ks=(5, 10), seed=FAST.seed)
    assert again["full"]["all"][checkpoint.train_config.validation_metric] == pytest.approx(checkpoint.best_metric)
    assert not checkpoint.model().training


class Interrupted(Exception):
    pass


SMALL_MODEL = ModelConfig(NetworkConfig(dim=16))
SMALL = TrainConfig(epochs=4, batch_size=256, lr=3e-3, patience=10, device="cpu", seed=3)


def state_of(path: Path) -> tuple[list[tuple[float, float]], dict[str, torch.Tensor]]:
    checkpoint = load_checkpoint(path)
    numbers = [(epoch["loss"], epoch["metric"]) for epoch in checkpoint.history]
    return numbers, {**checkpoint.state_dict, "users": checkpoint.user_representations}


def assert_same_state(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name in first:  # bit for bit; unknown times are NaN in both
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0, equal_nan=True, msg=name)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    posts, split = data
    path = tmp_path_factory.mktemp("reference") / "model.pt"
    train(SplitPosts(posts, split), SMALL_MODEL, SMALL, path)
    return path


def test_same_seed_gives_the_same_checkpoint(data, uninterrupted, tmp_path):
    posts, split = data
    train(SplitPosts(posts, split), SMALL_MODEL, SMALL, tmp_path / "again.pt")
    numbers, state = state_of(tmp_path / "again.pt")
    reference_numbers, reference_state = state_of(uninterrupted)
    assert numbers == reference_numbers
    assert_same_state(state, reference_state)

    train(SplitPosts(posts, split), SMALL_MODEL, replace(SMALL, seed=4), tmp_path / "other.pt")
    assert state_of(tmp_path / "other.pt")[0] != reference_numbers


def test_resume_continues_at_the_next_epoch(data, uninterrupted, tmp_path):
    posts, split = data
    path = tmp_path / "model.pt"

    def interrupt_after_two(epoch, loss, metric, best):
        if epoch == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(SplitPosts(posts, split), SMALL_MODEL, SMALL, path, progress=interrupt_after_two)
    interrupted = load_checkpoint(path)
    assert len(interrupted.history) == 2
    assert interrupted.resume is not None and interrupted.resume.optimizer is not None
    with pytest.raises(CheckpointError, match=r"already past --epochs 1 \(epoch 2 of 4\); pass --epochs 4"):
        train(SplitPosts(posts, split), SMALL_MODEL, replace(SMALL, epochs=1), path)

    seen = []
    result = train(SplitPosts(posts, split), SMALL_MODEL, SMALL, path, progress=lambda epoch, *_: seen.append(epoch))
    assert seen == [3, 4] and result.resumed_from_epoch == 2 and result.start is Start.RESUMED
    # Resumed, the run ends exactly where an uninterrupted one does.
    numbers, state = state_of(path)
    reference_numbers, reference_state = state_of(uninterrupted)
    assert numbers == reference_numbers
    assert_same_state(state, reference_state)


def test_batch_steps_train_as_full_graph_steps(data, uninterrupted, tmp_path):
    """The default step (receptive field of the batch) and the plain full-graph step are
    the same maths: four epochs end at the same weights, within float rounding."""
    posts, split = data
    result = train(SplitPosts(posts, split), SMALL_MODEL, replace(SMALL, step_propagation="full"), tmp_path / "full.pt")
    assert all(epoch["train_seconds"] <= epoch["seconds"] for epoch in result.history)
    numbers, state = state_of(tmp_path / "full.pt")
    reference_numbers, reference_state = state_of(uninterrupted)
    assert load_checkpoint(uninterrupted).train_config.step_propagation == "batch"
    np.testing.assert_allclose([loss for loss, _ in numbers], [loss for loss, _ in reference_numbers], rtol=1e-5)
    for name in state:
        torch.testing.assert_close(state[name], reference_state[name], atol=1e-4, rtol=1e-4, equal_nan=True, msg=name)


def test_a_checkpoint_of_another_configuration_is_not_resumed(data, tmp_path):
    posts, split = data
    path = tmp_path / "model.pt"
    one_epoch = replace(SMALL, epochs=1)
    train(SplitPosts(posts, split), SMALL_MODEL, one_epoch, path)
    seen = []
    result = train(SplitPosts(posts, split), SMALL_MODEL, replace(one_epoch, lr=1e-2), path,
                   progress=lambda epoch, *_: seen.append(epoch))
    assert seen == [1] and result.resumed_from_epoch is None and result.start is Start.FRESH
    assert load_checkpoint(path).train_config.lr == 1e-2


def test_early_stopping_keeps_the_best_epoch_and_is_final(data, tmp_path):
    posts, split = data
    path = tmp_path / "model.pt"
    frozen = replace(SMALL, lr=0.0, patience=2, epochs=10)  # validation can never improve
    result = train(SplitPosts(posts, split), SMALL_MODEL, frozen, path)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1
    finished = path.read_bytes()
    seen = []
    again = train(SplitPosts(posts, split), SMALL_MODEL, frozen, path, progress=lambda epoch, *_: seen.append(epoch))
    assert seen == [] and again.best_epoch == 1 and again.stopped_early and again.start is Start.FINISHED
    assert path.read_bytes() == finished  # nothing to do: not even written again


def test_more_epochs_extend_a_run_that_stopped_early_with_patience_afresh(data, tmp_path):
    posts, split = data
    path = tmp_path / "model.pt"
    frozen = replace(SMALL, lr=0.0, patience=2, epochs=10)
    train(SplitPosts(posts, split), SMALL_MODEL, frozen, path)
    seen = []
    extended = train(SplitPosts(posts, split), SMALL_MODEL, replace(frozen, epochs=20), path,
                     progress=lambda epoch, *_: seen.append(epoch))
    # Validation cannot improve: `patience` more epochs, counted from the extension's first.
    assert seen == [4, 5] and extended.start is Start.EXTENDED and extended.resumed_from_epoch == 3
    assert extended.stopped_early and extended.epochs == 20 and len(extended.history) == 5
    checkpoint = load_checkpoint(path)
    assert checkpoint.completed and checkpoint.train_config.epochs == 20 and checkpoint.best_epoch == 1


def test_a_finished_checkpoint_keeps_what_ran_after_the_epochs_and_no_optimizer(uninterrupted, data):
    checkpoint = load_checkpoint(uninterrupted)
    assert checkpoint.resume is not None and checkpoint.resume.optimizer is None  # finished: Adam's moments go
    assert checkpoint.resume.model.keys() == checkpoint.state_dict.keys()  # the last epoch's, to extend from
    n_validation = len(build_cases(data[0], data[1].validation, build_graph(data[0].subset(data[1].train))))
    assert n_validation < 200
    assert checkpoint.stages == {
        "PITF's factors": f"fitted (epoch {checkpoint.pitf_epoch} of at most 200)",
        "calibration": f"skipped ({n_validation} validation cases < 200)",
        "re-ranker": f"skipped ({n_validation} validation cases < 200)",
    }
    assert checkpoint.calibration is None and checkpoint.reranker is None


def test_negatives_are_never_on_the_post():
    rng = np.random.default_rng(0)
    columns = [rng.integers(0, 5, 400), rng.integers(0, 6, 400), rng.integers(0, 20, 400)]  # user, hashtag, item
    triples = np.unique(np.stack(columns, axis=1), axis=0)
    triples = np.vstack([triples, [[9, h, 30] for h in range(6)]])  # a post with every hashtag
    sampler = NegativeSampler(triples, n_hashtags=6)
    on_post = {(u, v): set() for u, _, v in triples}
    for u, h, v in triples:
        on_post[(u, v)].add(h)
    assert not any(triples[sampler.trainable, 0] == 9), "a post carrying every hashtag has no negative"
    negatives = sampler.sample(sampler.trainable, 5, rng)
    assert negatives.shape == (len(sampler.trainable), 5)
    for row, drawn in zip(sampler.trainable, negatives):
        u, _, v = triples[row]
        assert not on_post[(u, v)] & set(drawn.tolist())


def test_metadata_must_load_safely(data, tmp_path):
    posts, split = data
    with pytest.raises(TypeError, match="ndarray"):
        train(SplitPosts(posts, split), SMALL_MODEL, SMALL, tmp_path / "model.pt",
              Provenance(encoders={"pca": np.zeros(3)}))


def test_ctrl_c_during_a_checkpoint_write_lands_after_it(tmp_path, monkeypatch, request):
    """torch turns an interrupt inside its writer into a RuntimeError; held until the write
    ends, a Ctrl-C keeps the new checkpoint and stays an interrupt (exit 130, not "cannot
    write")."""
    path = tmp_path / "model.pt"
    real_save = torch.save

    def interrupted_save(payload, handle):
        signal.raise_signal(signal.SIGINT)
        real_save(payload, handle)

    monkeypatch.setattr(torch, "save", interrupted_save)
    # Python's own handler, as in a terminal (a test run started in the background ignores SIGINT).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": torch.tensor(3)}, path)
    assert torch.load(path)["epoch"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    not_checkpoint = tmp_path / "features.h5"
    not_checkpoint.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(CheckpointError, match="not a readable phr checkpoint"):
        load_checkpoint(not_checkpoint)


def test_the_time_split_from_a_store_holds_out_the_latest_posts(tmp_path):
    from phr_cli.training.train import train_from_store
    from support.stores import write_text_store

    posts = planted_posts(n_users=10, posts_per_user=6)
    times = np.random.default_rng(0).permutation(len(posts)) * 60.0
    store = write_text_store(tmp_path / "features.h5", posts, times)
    outcome = train_from_store(store, tmp_path / "model.pt", ModelConfig(NetworkConfig(dim=8)),
                               replace(FAST, epochs=1), split_by="time")
    split = load_checkpoint(tmp_path / "model.pt").split
    assert split.by == "time" and outcome.split_sizes == (48, 6, 6)
    assert times[split.train].max() < times[split.validation].min() <= times[split.validation].max() \
        < times[split.test].min()

    times[[4, 9]] = np.nan
    store = write_text_store(tmp_path / "untimed.h5", posts, times)
    with pytest.raises(DataError, match=r"^2 posts have no time \(posts.jsonl:5, posts.jsonl:10\); the time split"):
        train_from_store(store, tmp_path / "untimed.pt", ModelConfig(NetworkConfig(dim=8)), FAST, split_by="time")


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    from reliability.reliability_data import write_text_posts

    root = write_text_posts(tmp_path_factory.mktemp("small") / "posts", users=3, posts_per_user=4)
    store = root.parent / "features.h5"
    result = CliRunner().invoke(app, ["extract", str(root), "--store", str(store), "--random-weights",
                                      "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return store


def train_cli(store: Path, checkpoint: Path, *options: str):
    return CliRunner().invoke(app, ["train", "--store", str(store), "--checkpoint", str(checkpoint),
                                    "--epochs", "2", "--device", "cpu", *options])


def test_a_tiny_validation_set_is_reported_with_a_warning(small_store, tmp_path):
    result = train_cli(small_store, tmp_path / "m.pt", "--dim", "8")
    assert result.exit_code == 0, result.output
    assert "warning: only 1 validation case(s)" in result.stderr and "fewer than 30" in result.stderr
    assert "trained epochs 1–2 of at most 2\n" in result.stdout
    # The steps after the epochs say what they did, here and in `phr inspect`.
    assert "calibration: skipped (1 validation case < 200)\n" in result.stdout
    assert "re-ranker: skipped (1 validation case < 200)\n" in result.stdout
    inspected = CliRunner().invoke(app, ["inspect", str(tmp_path / "m.pt"), "--json"])
    assert json.loads(inspected.stdout)["stages"]["re-ranker"] == "skipped (1 validation case < 200)"

    again = train_cli(small_store, tmp_path / "m.pt", "--dim", "8")
    assert again.exit_code == 0, again.output
    assert "already finished after epoch 2 of 2 (all its epochs run); nothing to do: pass --epochs above 2 to " \
           "extend it" in again.stdout and "resumed" not in again.stdout
    extended = train_cli(small_store, tmp_path / "m.pt", "--dim", "8", "--epochs", "3")
    assert "extended after epoch 2: epochs 3–3 of at most 3" in extended.stdout


def test_other_settings_never_silently_overwrite_a_finished_checkpoint(small_store, tmp_path):
    path = tmp_path / "m.pt"
    assert train_cli(small_store, path, "--dim", "8").exit_code == 0
    finished = path.read_bytes()
    refused = train_cli(small_store, path, "--dim", "16")
    assert refused.exit_code == 1
    message = refused.output.strip().splitlines()[-1]
    assert message.startswith("error: ") and "dim 8 → 16" in message and "--overwrite" in message
    assert path.read_bytes() == finished
    assert train_cli(small_store, path, "--dim", "8", "--epochs", "3").exit_code == 0  # same settings: resumes
    replaced = train_cli(small_store, path, "--dim", "16", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert load_checkpoint(path).model_config.network.dim == 16


def test_too_few_posts_is_one_plain_line(tmp_path):
    from reliability.reliability_data import write_text_posts

    root = write_text_posts(tmp_path / "posts", users=1, posts_per_user=3)
    with (root / "posts.csv").open("a") as manifest:
        manifest.write(",,no user here,topic0\n")
    store = tmp_path / "features.h5"
    CliRunner().invoke(app, ["extract", str(root), "--store", str(store), "--random-weights", "--workers", "0",
                             "--device", "cpu"])
    result = train_cli(store, tmp_path / "m.pt")
    assert result.exit_code == 1
    message = result.output.strip().splitlines()[-1]
    assert "only 3 trainable posts" in message and "left out: 1 no user" in message
    assert "{" not in message
