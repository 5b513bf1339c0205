"""`phr tune` on a tiny store: a few short trials, a resumable study, the best configuration trained."""

from __future__ import annotations

import json
from dataclasses import replace

import optuna
import pytest
from test_train import planted_posts

from phr_cli.errors import ConfigError
from phr_cli.model.config import EvidenceConfig, ModelConfig, NetworkConfig
from phr_cli.training.checkpoint import load_checkpoint
from phr_cli.training.config import TrainConfig, settings
from phr_cli.training.tune import SEARCH_SPACE, base_point, configurations, tune
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
                 on_trial=lambda number, state, value, best: seen.append((number, state, value, best)))
    assert first.trials_run == 2 and first.trials_complete == 2
    assert [s[:2] for s in seen] == [(0, "complete"), (1, "complete")]
    study = optuna.load_study(study_name="phr-tune", storage=f"sqlite:///{tmp_path / 'model.pt.tune.db'}")
    # The first trial is the base configuration, where the space holds its values (not dim 64 here).
    assert study.trials[0].params == {"lr": BASE.lr, "negatives": BASE.negatives,
                                      "network.dim": study.trials[0].params["network.dim"]}
    assert first.best_value == max(s[2] for s in seen) == seen[-1][3]

    record = json.loads(first.best_path.read_text())
    assert first.best_path == tmp_path / "model.pt.tune.json"
    assert record["value"] == first.best_value and record["trial"] == first.best_trial
    assert ModelConfig(**record["model_config"]) == first.model_config
    saved = load_checkpoint(checkpoint)
    # Training resolves an item-ID dropout left to the data; everything else is as tuned.
    assert saved.model_config == first.model_config.with_item_id_dropout(saved.model_config.item_ids.dropout)
    assert saved.train_config == first.train_config and saved.train_config.validation_metric == "P@5"
    # the best trial, trained again with its seed, reaches its validation value again
    assert first.training.result.best_metric == pytest.approx(first.best_value)

    again = tune(store, checkpoint, ModelConfig(), BASE, trials=1)
    assert again.trials_run == 1 and again.trials_complete == 3
    study = optuna.load_study(study_name="phr-tune", storage=f"sqlite:///{tmp_path / 'model.pt.tune.db'}")
    assert len(study.trials) == 3
    assert study.trials[2].params != study.trials[0].params  # a resumed study draws new points


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
        tune(store, tmp_path / "model.pt", ModelConfig(), BASE, split_by="item", trials=1)
    with pytest.raises(ConfigError, match="give tune a budget"):
        tune(store, tmp_path / "other.pt", ModelConfig(), BASE)


def test_cli_tune_prints_each_trial_and_the_trained_best(store, tmp_path, small_space):
    from typer.testing import CliRunner

    from phr_cli.cli import app

    checkpoint = tmp_path / "model.pt"
    result = CliRunner().invoke(app, ["tune", "--store", str(store), "--checkpoint", str(checkpoint),
                                      "--trials", "1", "--epochs", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    printed = " ".join(result.output.split())  # rich wraps long lines at the console's width
    assert "trial 0: validation P@5" in printed
    assert "best configuration, epoch 1: loss" in printed  # the final training shows its epochs
    # ... and folds a path longer than the width
    assert "1 trials run" in printed and f"{checkpoint}.tune.json" in "".join(result.output.split())
    assert checkpoint.is_file()
    refused = CliRunner().invoke(app, ["tune", "--store", str(store), "--checkpoint", str(checkpoint),
                                       "--trials", "1", "--epochs", "2", "--device", "cpu"])
    assert refused.exit_code == 1
    assert "this study tuned another task (epochs 1 → 2)" in " ".join(refused.output.split())
