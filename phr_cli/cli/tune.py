"""`phr tune`: an Optuna search of the model and training settings, then the best trained."""

from __future__ import annotations

from pathlib import Path

import typer

from phr_cli.cli import present
from phr_cli.cli.app import DEFAULT_CHECKPOINT, DEFAULT_STORE, DeviceOption, app, check_device, err, fail, out
from phr_cli.errors import PhrError


@app.command()
def tune(
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="Feature store from `phr extract`."),
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, "--checkpoint", help="Checkpoint the best configuration "
                                    "is trained into; the study is kept beside it (<checkpoint>.tune.db)."),
    trials: int | None = typer.Option(None, "--trials", min=1, help="Trials to add to the study "
                                         "(20 when neither --trials nor --timeout is given)."),
    timeout: float | None = typer.Option(None, "--timeout", min=1, help="Seconds to spend on trials."),
    epochs: int = typer.Option(50, help="Maximum epochs of each trial and of the final training."),
    patience: int = typer.Option(5, help="Epochs without validation gain before a trial stops."),
    seed: int = typer.Option(0, help="Seed of the split, initialisation, sampling and search."),
    split_by: str = typer.Option("post", "--split-by", help="post, item or time (as `phr train`)."),
    device: str = DeviceOption,
) -> None:
    """Search the model and training settings for validation P@5 (Optuna), then train the best."""
    import optuna

    from phr_cli.model.phr import ModelConfig
    from phr_cli.training.config import TrainConfig
    from phr_cli.training.tune import OBJECTIVE
    from phr_cli.training.tune import tune as run_tune

    check_device(device)
    if trials is None and timeout is None:
        trials = 20
    try:
        train_base = TrainConfig(epochs=epochs, patience=patience, seed=seed, device=device)
    except PhrError as error:
        fail(str(error), code=2)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # phr prints one line a trial itself
    budget = " and ".join(part for part in (f"{trials} trials" if trials else "",
                                            f"{timeout:g} s" if timeout else "") if part)
    err.print(f"tuning on {store} ({budget}); study {checkpoint}.tune.db", highlight=False)

    def on_trial(number: int, state: str, value: float | None, best: float | None) -> None:
        shown = f"validation {OBJECTIVE} {value:.4f}" if value is not None else "stopped early by the pruner"
        best_shown = f"{best:.4f}" if best is not None else "–"
        err.print(f"trial {number}: {shown} (best {best_shown})", highlight=False)

    # The final training can take as long as a trial: one line per epoch and per step after them.
    def on_epoch(epoch: int, loss: float, metric: float, best: float) -> None:
        err.print(f"best configuration, epoch {epoch}: {present.epoch_scores(loss, metric, best, OBJECTIVE)}",
                  highlight=False)

    def on_finishing(step: str, done: int, total: int | None) -> None:
        if done == 0:
            err.print(f"best configuration: {step} …", highlight=False)

    try:
        result = run_tune(store, checkpoint, ModelConfig(), train_base, split_by, trials, timeout, on_trial,
                          progress=on_epoch, finishing=on_finishing)
    except PhrError as error:
        fail(str(error))
    training = result.training.result
    out.print(
        f"{result.trials_run} trials run; study {result.study_path}: {result.trials_complete} complete, "
        f"{result.trials_pruned} pruned; best trial {result.best_trial}: validation {OBJECTIVE} "
        f"{result.best_value:.4f} → {result.best_path}",
        highlight=False,
    )
    out.print(
        f"trained the best configuration: best epoch {training.best_epoch}, validation {OBJECTIVE} "
        f"{training.best_metric:.4f} on {training.device} → {training.checkpoint_path}",
        highlight=False,
    )
