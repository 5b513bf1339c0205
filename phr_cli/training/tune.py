"""`phr tune`: search ModelConfig's parts / TrainConfig with Optuna for validation P@5, then train the best.

Each trial trains on the store's split (the same split for every trial: the split depends
on the seed and unit only) and is scored by its best epoch's validation P@5, full ranking.
Trials report their best-so-far value after every epoch, so a median pruner can stop one
that trails the others. The study lives in `<checkpoint>.tune.db` (SQLite): a second run
with the same checkpoint (and `overwrite`, since the checkpoint is there) adds trials to it.
The best configuration is trained into the checkpoint, and what was trained goes to
`<checkpoint>.tune.json`. Everything a run needs (the checkpoint's place, the store, enough
posts) is checked before the study is opened, so that a refused run leaves no study behind.
`read_study` reads a study back (`phr inspect`).
"""

from __future__ import annotations

import json
import math
import sqlite3
import tempfile
import urllib.parse
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc

from phr_cli.choices import plain_values
from phr_cli.data.dataset import Dataset
from phr_cli.errors import CheckpointError, ConfigError, DataError, PhrError
from phr_cli.files import atomic_file
from phr_cli.model.config import ModelConfig
from phr_cli.training.checkpoint import load_checkpoint, read_checkpoint_file
from phr_cli.training.config import TrainConfig, settings, with_settings
from phr_cli.training.train import (
    FinishingCallback,
    ProgressCallback,
    StoreTraining,
    check_trainable,
    train,
    train_from_store,
)

OBJECTIVE = "P@5"  # validation, full ranking of every known hashtag
STUDY_NAME = "phr-tune"


class StudyError(PhrError):
    """A study (`.tune.db`) or its record (`.tune.json`) that cannot be read."""

Suggest = Callable[[optuna.trial.BaseTrial, str], Any]


def choice(*values: Any) -> Suggest:
    return lambda trial, name: trial.suggest_categorical(name, values)


def integers(low: int, high: int) -> Suggest:
    return lambda trial, name: trial.suggest_int(name, low, high)


def uniform(low: float, high: float) -> Suggest:
    return lambda trial, name: trial.suggest_float(name, low, high)


def log_uniform(low: float, high: float) -> Suggest:
    return lambda trial, name: trial.suggest_float(name, low, high, log=True)


# The search space: an option as `config.settings` names it ("lr", "network.dim") -> how a
# trial draws it. Adding a field to the search is one line here; fields not listed
# keep the base value.
SEARCH_SPACE: dict[str, Suggest] = {
    "network.dim": choice(32, 64, 128),
    "network.layers": integers(1, 2),
    "network.dropout": uniform(0.0, 0.5),
    "network.residual": choice(False, True),
    "lr": log_uniform(3e-4, 3e-2),
    "l2": log_uniform(1e-7, 1e-2),
    "weight_decay": choice(0.0, 1e-5, 1e-4, 1e-3),
    "negatives": choice(1, 2, 4, 8),
    "batch_size": choice(256, 1024, 4096),
    "hard_negatives": uniform(0.0, 0.9),
    "evidence.neighbours": choice(5, 10, 20, 50),
    "evidence.recency": choice(False, True),
    "evidence.similar_posts": choice(False, True),
}


def configurations(trial: optuna.Trial, model_base: ModelConfig, train_base: TrainConfig
                   ) -> tuple[ModelConfig, TrainConfig]:
    """The base configurations with every SEARCH_SPACE field drawn by the trial."""
    try:
        return with_settings(model_base, train_base,
                             {name: suggest(trial, name) for name, suggest in SEARCH_SPACE.items()})
    except ConfigError as error:
        raise ConfigError(f"tune's search space: {error}") from None


def base_point(model_base: ModelConfig, train_base: TrainConfig) -> dict[str, Any]:
    """The base configurations' values of the SEARCH_SPACE fields that lie inside the space
    (a field whose base value lies outside is left to the sampler)."""
    values = settings(model_base, train_base)
    point = {}
    for name, suggest in SEARCH_SPACE.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Optuna warns of a number outside a range
            try:
                suggest(optuna.trial.FixedTrial({name: values[name]}), name)
            except (ValueError, UserWarning):
                continue
        point[name] = values[name]
    return point


def study_path(checkpoint: Path) -> Path:
    return Path(f"{checkpoint}.tune.db")


def best_path(checkpoint: Path) -> Path:
    return Path(f"{checkpoint}.tune.json")


@dataclass
class TuneResult:
    study_path: Path
    best_path: Path  # the configuration trained into the checkpoint, JSON
    trials_run: int  # by this call
    trials_complete: int  # in the whole study
    trials_pruned: int  # in the whole study
    best_trial: int
    best_value: float  # validation P@5 of the best trial
    model_config: ModelConfig  # as the checkpoint holds them (the item-ID dropout resolved)
    train_config: TrainConfig
    training: StoreTraining  # the best configuration trained into the checkpoint


TrialCallback = Callable[[int, str, float | None, float | None, dict[str, Any]], None]


def tune(
    store_path: Path,
    checkpoint_path: Path,
    model_base: ModelConfig,
    train_base: TrainConfig,
    split_by: str = "post",
    trials: int | None = None,
    timeout: float | None = None,
    on_trial: TrialCallback | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    progress: ProgressCallback | None = None,
    finishing: FinishingCallback | None = None,
    overwrite: bool = False,
) -> TuneResult:
    """Run `trials` more trials and/or for `timeout` seconds, then train the best configuration.

    `on_trial(number, state, value, best, params)` follows each finished trial (state
    "complete" or "pruned"; value None when pruned; params as SEARCH_SPACE names them). The
    default pruner is Optuna's median pruner after five complete trials and one epoch.
    `progress` and `finishing` follow the final training as `train.train` reports it. An
    existing checkpoint is replaced only with `overwrite` (refused before the first trial).
    """
    if trials is None and timeout is None:
        raise ConfigError("give tune a budget: a number of trials, a timeout, or both")
    if (trials is not None and trials < 1) or (timeout is not None and timeout <= 0):
        raise ConfigError("the number of trials and the timeout must be positive")
    train_base = replace(train_base, validation_metric=OBJECTIVE)
    checkpoint_path = Path(checkpoint_path)
    database = study_path(checkpoint_path)
    _check_target(checkpoint_path, database, overwrite)
    dataset = Dataset.from_store(store_path, split_by, train_base.seed)  # read once, for every trial
    provenance = dataset.provenance()
    check_trainable(dataset)
    if len(dataset.validation) == 0:  # every trial's value would be NaN
        raise DataError(f"{store_path}: no validation post has a hashtag known to training; nothing to tune on")
    try:
        checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f"{checkpoint_path}: cannot make its folder ({error.strerror or error})") from None
    study = _open_study(database, pruner)
    _check_same_task(study, database, store_path, split_by, train_base)
    before = len(study.trials)
    if not study.trials:
        # The first trial is the base configuration (phr's defaults): tuning then never
        # returns something worse on validation than not tuning at all.
        study.enqueue_trial(base_point(model_base, train_base))
    # A resumed study draws new points, not the first session's again.
    study.sampler = optuna.samplers.TPESampler(seed=train_base.seed + before)

    with tempfile.TemporaryDirectory(prefix="phr-tune-") as scratch:
        def objective(trial: optuna.Trial) -> float:
            model_config, train_config = configurations(trial, model_base, train_base)
            trial.set_user_attr("model_config", plain_values(model_config))
            trial.set_user_attr("train_config", plain_values(train_config))

            def report(epoch: int, loss: float, metric: float, best: float) -> None:
                trial.report(best, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()

            # A trial's value is its best epoch's validation P@5, which PITF's factors and the
            # re-ranker (fitted after the last epoch) do not change: trials skip those fits, the
            # final training has them.
            result = train(dataset, replace(model_config, factors=False), replace(train_config, rerank=False),
                           Path(scratch) / f"trial-{trial.number}.pt", provenance, report, resume=False)
            return result.best_metric

        def finished(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if on_trial is not None:
                values = [t.value for t in study.trials
                          if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
                best = max(values, default=None)
                on_trial(trial.number, trial.state.name.lower(), trial.value, best, trial.params)

        study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[finished])

    states = [t.state for t in study.trials]
    if optuna.trial.TrialState.COMPLETE not in states:
        raise DataError(f"{database}: no trial completed; give tune more trials or time")
    best = study.best_trial
    n_complete = states.count(optuna.trial.TrialState.COMPLETE)
    best_value = float(best.value) if best.value is not None else math.nan
    model_config = ModelConfig(**best.user_attrs["model_config"])
    # The device is this run's; the rest is the trial's.
    train_config = TrainConfig(**{**best.user_attrs["train_config"], "device": train_base.device})
    best_file = best_path(checkpoint_path)
    best_file.unlink(missing_ok=True)  # it describes the checkpoint about to be replaced
    training = train_from_store(store_path, checkpoint_path, model_config, train_config, split_by, progress,
                                overwrite=overwrite, finishing=finishing)
    # What the checkpoint holds, as training resolved it (an item-ID dropout left to the data).
    trained = load_checkpoint(checkpoint_path)
    model_config, train_config = trained.model_config, trained.train_config
    _write_record(best_file, {
        "objective": f"validation {OBJECTIVE}, full ranking",
        "value": best_value,
        "trial": best.number,
        "trials_complete": n_complete,
        "split_by": split_by,
        "store": str(store_path),
        "study": str(database),
        "checkpoint": str(checkpoint_path),
        "model_config": plain_values(model_config),
        "train_config": plain_values(train_config),
    })
    return TuneResult(
        study_path=database,
        best_path=best_file,
        trials_run=len(study.trials) - before,
        trials_complete=n_complete,
        trials_pruned=states.count(optuna.trial.TrialState.PRUNED),
        best_trial=best.number,
        best_value=best_value,
        model_config=model_config,
        train_config=train_config,
        training=training,
    )


def _check_target(checkpoint_path: Path, database: Path, overwrite: bool) -> None:
    """The best configuration can be trained into checkpoint_path: nothing is there, or
    (with `overwrite`) a checkpoint training may replace."""
    if not checkpoint_path.exists():
        return
    if not overwrite:
        resumed = f" (its study {database} then adds this run's trials to its own)" if database.exists() else ""
        raise CheckpointError(f"{checkpoint_path}: a checkpoint is already there, which tune would replace with "
                              f"the best configuration's; write to another --checkpoint, or pass --overwrite to "
                              f"replace it{resumed}")
    read_checkpoint_file(checkpoint_path)  # training replaces a checkpoint, never another file


def _write_record(path: Path, record: dict[str, Any]) -> None:
    try:
        with atomic_file(path) as temporary:
            temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        raise CheckpointError(f"{path}: cannot write the tuned configuration ({error.strerror or error})") from None


def _check_same_task(study: optuna.Study, database: Path, store_path: Path, split_by: str,
                     train_base: TrainConfig) -> None:
    """A study's values compare only on one store, split and epoch budget."""
    task = {"store": str(Path(store_path).resolve()), "split_by": split_by, "seed": train_base.seed,
            "epochs": train_base.epochs, "patience": train_base.patience}
    saved = study.user_attrs.get("task")
    if saved is None:
        study.set_user_attr("task", task)
    elif saved != task:
        differ = ", ".join(f"{k} {saved.get(k)!r} → {v!r}" for k, v in task.items() if saved.get(k) != v)
        raise ConfigError(f"{database}: this study tuned another task ({differ}); use another "
                          "--checkpoint or the same options")


def read_study(path: Path) -> dict[str, Any]:
    """A study as `phr inspect` shows it, from its `.tune.db` or its `.tune.json`: the task it
    tunes, each trial (number, state, value, seconds, parameters), the best one, and what
    was trained into the checkpoint (the `.tune.json` beside the study; None before one)."""
    path = Path(path)
    checkpoint = next((path.with_name(path.name.removesuffix(suffix)) for suffix in (".tune.db", ".tune.json")
                       if path.name.endswith(suffix)), None)
    database = path if checkpoint is None else study_path(checkpoint)
    if not database.is_file():
        raise StudyError(f"{database}: no study (`phr tune` keeps it beside the checkpoint it trains)")
    study = _load_study(database)
    trials = [{"number": t.number, "state": t.state.name.lower(), "value": t.value,
               "seconds": t.duration.total_seconds() if t.duration is not None else None, "params": t.params}
              for t in study.trials]
    try:
        best: optuna.trial.FrozenTrial | None = study.best_trial
    except ValueError:  # no trial complete
        best = None
    return {
        "kind": "study",
        "study": str(database),
        "objective": f"validation {OBJECTIVE}, full ranking",
        "task": study.user_attrs.get("task"),
        "states": dict(Counter(trial["state"] for trial in trials)),
        "trials": trials,
        "best": None if best is None else {"trial": best.number, "value": best.value, "params": best.params},
        "trained": _read_record(best_path(checkpoint)) if checkpoint and best_path(checkpoint).is_file() else None,
    }


def _open_study(database: Path, pruner: optuna.pruners.BasePruner | None) -> optuna.Study:
    """The study beside the checkpoint, created on the first run."""
    try:
        return optuna.create_study(
            study_name=STUDY_NAME, storage=f"sqlite:///{database}", direction="maximize", load_if_exists=True,
            pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        )
    except (optuna.exceptions.OptunaError, sqlalchemy.exc.SQLAlchemyError) as error:  # a damaged database
        raise StudyError(f"{database} is not a readable Optuna study ({type(error).__name__}); move it "
                         "away to start a new study") from None


def _load_study(database: Path) -> optuna.Study:
    """The study in the database, opened read-only: inspecting a file never changes it (Optuna
    would otherwise add its tables to any SQLite file)."""
    uri = f"file:{urllib.parse.quote(str(database.resolve()))}?mode=ro"
    try:
        storage = optuna.storages.RDBStorage(
            "sqlite://", engine_kwargs={"creator": lambda: sqlite3.connect(uri, uri=True)}, skip_table_creation=True)
        return optuna.load_study(study_name=STUDY_NAME, storage=storage)
    except KeyError:
        raise StudyError(f"{database}: no `phr tune` study in this database") from None
    except optuna.exceptions.OptunaError as error:  # Optuna wraps the database's errors in its own
        raise StudyError(f"{database} is not a readable Optuna study ({type(error).__name__})") from None


def _read_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StudyError(f"{path} is not a readable `phr tune` record ({type(error).__name__})") from None
    if not isinstance(record, dict):
        raise StudyError(f"{path} is not a `phr tune` record (no JSON object)")
    return record
