"""`phr tune` on a tiny store: a few short trials, a resumable study, the best configuration trained,
every check before the study, the study read back."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import optuna
import pytest
from test_train import planted_posts

from phr_cli.choices import plain_values
from phr_cli.errors import CheckpointError, ConfigError, DataError, PhrError
from phr_cli.model.config import EvidenceConfig, ModelConfig, NetworkConfig
from phr_cli.serving.inspection import inspect_path
from phr_cli.training.checkpoint import load_checkpoint
from phr_cli.training.config import TrainConfig, settings
from phr_cli.training.tune import SEARCH_SPACE, StudyError, base_point, configurations, read_study, tune
from support.stores import write_text_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BASE = TrainConfig(epochs=2, patience=2, device="cpu")
SMALL_SPACE = {name: SEARCH_SPACE[name] for name in ("network.dim", "lr", "negatives")}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_text_store(tmp_path_factory.mktemp("tune") / "features.h5",
                            planted_posts(n_users=12, posts_per_user=8))


@pytest.fixture
def small_space(monkeypatch):
    """Small models keep each trial quick; the full table is checked on its own."""
    monkeypatch.setattr("phr_cli.training.tune.SEARCH_SPACE", {**SMALL_SPACE, "network.dim": lambda trial, name:
                                                      trial.suggest_categorical(name, (8, 16))})


def test_the_base_point_is_every_default_inside_the_space():
    point = base_point(ModelConfig(), TrainConfig())
    assert set(point) == set(SEARCH_SPACE)  # the defaults all lie inside the search space
    assert point["network.dim"] == 64 and point["evidence.recency"] is True and point["hard_negatives"] == 0.5
    assert "lr" not in base_point(ModelConfig(), replace(TrainConfig(), lr=1.0))


def test_every_searched_name_is_a_field_of_one_configuration():
    options = settings(ModelConfig(), TrainConfig())
    for name in SEARCH_SPACE:
        assert name in options, name


def test_a_trial_changes_exactly_the_searched_fields():
    params = {"network.dim": 128, "network.layers": 2, "network.dropout": 0.25, "network.residual": True,
              "lr": 0.01, "l2": 1e-5, "weight_decay": 1e-4, "negatives": 4, "batch_size": 256,
              "hard_negatives": 0.25, "evidence.neighbours": 10, "evidence.recency": False,
              "evidence.similar_posts": False}
    assert set(params) == set(SEARCH_SPACE)
    base = ModelConfig(NetworkConfig(variant="no_attention"))
    model, train = configurations(optuna.trial.FixedTrial(params), base, BASE)
    assert model == ModelConfig(NetworkConfig(variant="no_attention", dim=128, layers=2, dropout=0.25, residual=True),
                                EvidenceConfig(neighbours=10, recency=False, similar_posts=False))
    assert train == replace(BASE, lr=0.01, l2=1e-5, weight_decay=1e-4, negatives=4, batch_size=256,
                            hard_negatives=0.25)


def test_tune_writes_the_best_configuration_trains_it_and_resumes_the_study(store, tmp_path, small_space):
    checkpoint = tmp_path / "model.pt"
    seen = []
    first = tune(store, checkpoint, ModelConfig(), BASE, trials=2,
                 on_trial=lambda number, state, value, best, params: seen.append((number, state, value, best, params)))
    assert first.trials_run == 2 and first.trials_complete == 2
    assert [s[:2] for s in seen] == [(0, "complete"), (1, "complete")]
    study = optuna.load_study(study_name="phr-tune", storage=f"sqlite:///{tmp_path / 'model.pt.tune.db'}")
    # The first trial is the base configuration, where the space holds its values (not dim 64 here).
    assert study.trials[0].params == {"lr": BASE.lr, "negatives": BASE.negatives,
                                      "network.dim": study.trials[0].params["network.dim"]}
    assert [s[4] for s in seen] == [t.params for t in study.trials]
    assert first.best_value == max(s[2] for s in seen) == seen[-1][3]

    record = json.loads(first.best_path.read_text())
    assert first.best_path == tmp_path / "model.pt.tune.json"
    assert record["value"] == first.best_value and record["trial"] == first.best_trial
    saved = load_checkpoint(checkpoint)
    # The record holds what the checkpoint was trained with: the best trial's settings, with
    # the item-ID dropout training resolved from the data.
    assert saved.model_config.item_ids.dropout is not None
    assert record["model_config"] == plain_values(saved.model_config) and first.model_config == saved.model_config
    assert record["train_config"] == plain_values(saved.train_config) and first.train_config == saved.train_config
    assert record["checkpoint"] == str(checkpoint) and saved.train_config.validation_metric == "P@5"
    best_trial = study.trials[first.best_trial]
    trained = settings(saved.model_config, saved.train_config)
    assert {name: trained[name] for name in best_trial.params} == best_trial.params
    # the best trial, trained again with its seed, reaches its validation value again
    assert first.training.result.best_metric == pytest.approx(first.best_value)

    # The study read back, from the database or the record: its trials, the best, what was trained.
    read = read_study(tmp_path / "model.pt.tune.db")
    assert read == read_study(first.best_path) == inspect_path(first.best_path)
    assert read["states"] == {"complete": 2} and read["trained"] == record
    assert [(t["number"], t["state"], t["value"], t["params"]) for t in read["trials"]] == \
        [(t.number, "complete", t.value, t.params) for t in study.trials]
    assert read["best"] == {"trial": first.best_trial, "value": first.best_value, "params": best_trial.params}
    assert read["task"]["epochs"] == BASE.epochs

    # The checkpoint is there now: a second run adds trials only with overwrite.
    with pytest.raises(CheckpointError, match=r"a checkpoint is already there.*--overwrite.*adds this run's trials"):
        tune(store, checkpoint, ModelConfig(), BASE, trials=1)
    again = tune(store, checkpoint, ModelConfig(), BASE, trials=1, overwrite=True)
    assert again.trials_run == 1 and again.trials_complete == 3
    study = optuna.load_study(study_name="phr-tune", storage=f"sqlite:///{tmp_path / 'model.pt.tune.db'}")
    assert len(study.trials) == 3
    assert study.trials[2].params != study.trials[0].params  # a resumed study draws new points


def test_a_checkpoint_already_there_is_refused_before_the_study(store, tmp_path, small_space):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_text("notes, not a checkpoint")
    with pytest.raises(CheckpointError, match=r"model.pt: a checkpoint is already there.*pass --overwrite"):
        tune(store, checkpoint, ModelConfig(), BASE, trials=1)
    # Overwriting replaces a checkpoint, never another file (as `phr train --overwrite`).
    with pytest.raises(CheckpointError, match=r"model\.pt is not a readable phr checkpoint"):
        tune(store, checkpoint, ModelConfig(), BASE, trials=1, overwrite=True)
    assert not (tmp_path / "model.pt.tune.db").exists()


def test_a_store_that_cannot_serve_is_refused_before_the_study(tmp_path, small_space):
    checkpoint = tmp_path / "models" / "model.pt"
    with pytest.raises(PhrError, match=r"missing\.h5"):
        tune(tmp_path / "missing.h5", checkpoint, ModelConfig(), BASE, trials=1)
    small = write_text_store(tmp_path / "small.h5", planted_posts(n_users=1, posts_per_user=6))
    with pytest.raises(DataError, match="only 6 trainable posts"):
        tune(small, checkpoint, ModelConfig(), BASE, trials=1)
    posts = planted_posts(n_users=2, posts_per_user=8)
    one_hashtag = write_text_store(tmp_path / "one.h5", replace(posts, hashtags=[["tag0"]] * len(posts)))
    with pytest.raises(DataError, match="at least two distinct hashtags"):
        tune(one_hashtag, checkpoint, ModelConfig(), BASE, trials=1)
    assert not checkpoint.parent.exists()  # neither a study nor its folder


def test_a_database_that_is_no_study_is_named_and_left_unchanged(tmp_path):
    other = tmp_path / "other.tune.db"
    with sqlite3.connect(other) as connection:
        connection.execute("create table notes (text)")
    before = other.read_bytes()
    with pytest.raises(StudyError, match=r"other\.tune\.db is not a readable Optuna study"):
        inspect_path(other)
    assert other.read_bytes() == before  # Optuna's tables were not added
    with pytest.raises(StudyError, match=r"missing.tune.db: no study"):
        read_study(tmp_path / "missing.tune.json")


def test_a_damaged_study_beside_the_checkpoint_is_one_error(store, tmp_path, small_space):
    checkpoint = tmp_path / "model.pt"
    (tmp_path / "model.pt.tune.db").write_bytes(b"SQLite format 3\x00" + b"damaged" * 40)
    with pytest.raises(StudyError, match=r"model\.pt\.tune\.db is not a readable Optuna study.*move it away"):
        tune(store, checkpoint, ModelConfig(), BASE, trials=1)
    assert not checkpoint.exists()


def test_a_pruned_trial_is_counted_and_needs_no_value(store, tmp_path, small_space):
    class PruneAfterTheFirstTrial(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return trial.number > 0

    result = tune(store, tmp_path / "model.pt", ModelConfig(), BASE, trials=2, pruner=PruneAfterTheFirstTrial())
    assert (result.trials_complete, result.trials_pruned, result.best_trial) == (1, 1, 0)


def test_a_study_refuses_another_split_and_a_budget_is_required(store, tmp_path, small_space):
    tune(store, tmp_path / "model.pt", ModelConfig(), BASE, trials=1)
    refusal = r"model.pt.tune.db: this study tuned another task \(split_by 'post' → 'item'\)"
    with pytest.raises(ConfigError, match=refusal):
        tune(store, tmp_path / "model.pt", ModelConfig(), BASE, split_by="item", trials=1, overwrite=True)
    with pytest.raises(ConfigError, match="give tune a budget"):
        tune(store, tmp_path / "other.pt", ModelConfig(), BASE)


def test_cli_tune_prints_each_trial_and_the_trained_best(store, tmp_path, small_space):
    from typer.testing import CliRunner

    from phr_cli.cli import app

    checkpoint = tmp_path / "model.pt"

    def run_tune(*options: str, store=store):
        return CliRunner().invoke(app, ["tune", "--store", str(store), "--checkpoint", str(checkpoint),
                                        "--trials", "1", "--device", "cpu", *options])

    missing = run_tune("--epochs", "1", store=tmp_path / "missing.h5")
    assert missing.exit_code == 1
    errors = [line for line in missing.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "missing.h5: no feature store here" in errors[0] and "Traceback" not in missing.output
    assert not (tmp_path / "model.pt.tune.db").exists()  # the next run's task is not taken

    result = run_tune("--epochs", "1")
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())  # rich wraps long lines at the console's width
    assert "trial 0: validation P@5" in printed and "lr=" in printed and "network.dim=" in printed
    assert "best configuration, epoch 1: loss" in printed  # the final training shows its epochs
    assert "1 trials run" in printed and f"{checkpoint}.tune.json" in printed
    # The final training's summary and curve, as `phr train` draws them.
    assert "best epoch 1: validation P@5" in printed and (tmp_path / "model-curve.png").is_file()
    assert checkpoint.is_file()

    refused = run_tune("--epochs", "1")
    assert refused.exit_code == 1 and "trial 1" not in refused.output
    assert "a checkpoint is already there" in " ".join(refused.output.split())
    other_task = run_tune("--epochs", "2", "--overwrite")
    assert other_task.exit_code == 1
    assert "this study tuned another task (epochs 1 → 2)" in " ".join(other_task.output.split())

    quiet = run_tune("--epochs", "1", "--overwrite", "-q")
    assert quiet.exit_code == 0, quiet.output
    assert "trial 1" not in quiet.output and "epoch 1: loss" not in quiet.output and "tuning on" not in quiet.output
    assert "1 trials run" in quiet.output and "2 complete" in quiet.output

    shown = CliRunner().invoke(app, ["inspect", f"{checkpoint}.tune.db"])
    assert shown.exit_code == 0, shown.output
    assert "phr tune study" in shown.output and "2: 2 complete" in shown.output and "lr=" in shown.output
    as_json = CliRunner().invoke(app, ["inspect", "--json", f"{checkpoint}.tune.json"])
    assert as_json.exit_code == 0, as_json.output
    summary = json.loads(as_json.output)
    assert summary["kind"] == "study" and len(summary["trials"]) == 2
    assert summary["trained"] == json.loads((tmp_path / "model.pt.tune.json").read_text())
