"""`phr tune`: an Optuna search of the model and training settings, then the best trained."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from phr_cli.cli import present
from phr_cli.cli.app import (
    DEFAULT_CHECKPOINT,
    DEFAULT_STORE,
    SEED_MAX,
    DeviceOption,
    QuietOption,
    SplitBy,
    app,
    check_device,
    err,
    fail,
    finite,
    out,
    printable,
)
from phr_cli.cli.train import show_outcome
from phr_cli.errors import PhrError
from phr_cli.training.config import TrainConfig

TRIALS = 20  # when neither --trials nor --timeout is given


@app.command()
def tune(
    store: Annotated[Path, typer.Option("--store", help="Feature store from `phr extract`.")] = DEFAULT_STORE,
    checkpoint: Annotated[Path, typer.Option(
        "--checkpoint", help="Checkpoint the best configuration is trained into; the study is kept beside it "
        "(<checkpoint>.tune.db).")] = DEFAULT_CHECKPOINT,
    trials: Annotated[int | None, typer.Option(
        "--trials", min=1, help=f"Trials to add to the study ({TRIALS} when neither --trials nor --timeout is "
        "given).")] = None,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", callback=finite(1), help="Seconds to spend on trials.")] = None,
    epochs: Annotated[int, typer.Option(
        min=1, help="Maximum epochs of each trial and of the final training.")] = TrainConfig.epochs,
    patience: Annotated[int, typer.Option(
        min=1, help="Epochs without validation gain before a trial stops.")] = TrainConfig.patience,
    seed: Annotated[int, typer.Option(
        min=0, max=SEED_MAX, help="Seed of the split, initialisation, sampling and search.")] = TrainConfig.seed,
    split_by: Annotated[SplitBy, typer.Option(
        "--split-by", help="post, item or time (as `phr train`).")] = SplitBy.post,
    device: DeviceOption = TrainConfig.device,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing checkpoint with the best configuration's (refused without it); "
        "its study keeps its trials and adds more.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Search the model and training settings for validation P@5 (Optuna), then train the best."""
    import optuna

    from phr_cli.model.config import ModelConfig
    from phr_cli.training.tune import OBJECTIVE, study_path
    from phr_cli.training.tune import tune as run_tune

    check_device(device)
    if trials is None and timeout is None:
        trials = TRIALS
    try:
        train_base = TrainConfig(epochs=epochs, patience=patience, seed=seed, device=device)
    except PhrError as error:
        fail(str(error), code=2)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # phr prints one line a trial itself
    budget = " and ".join(part for part in (f"{trials} trials" if trials else "",
                                            f"{timeout:g} s" if timeout else "") if part)
    if not quiet:
        err.print(f"tuning on {printable(store)} ({budget}); study {printable(study_path(checkpoint))}",
                  highlight=False)

    def on_trial(number: int, state: str, value: float | None, best: float | None, params: dict[str, Any]) -> None:
        shown = f"validation {OBJECTIVE} {value:.4f}" if value is not None else "stopped early by the pruner"
        best_shown = f"{best:.4f}" if best is not None else "–"
        err.print(f"trial {number}: {shown} (best {best_shown}): {present.parameters(params)}", highlight=False,
                  soft_wrap=True)

    # The final training can take as long as a trial: one line per epoch and per step after them.
    def on_epoch(epoch: int, loss: float, metric: float, best: float) -> None:
        err.print(f"best configuration, epoch {epoch}: {present.epoch_scores(loss, metric, best, OBJECTIVE)}",
                  highlight=False)

    def on_finishing(step: str, done: int, total: int | None) -> None:
        if done == 0:
            err.print(f"best configuration: {step} …", highlight=False)

    try:
        result = run_tune(store, checkpoint, ModelConfig(), train_base, split_by.value, trials, timeout,
                          None if quiet else on_trial, progress=None if quiet else on_epoch,
                          finishing=None if quiet else on_finishing, overwrite=overwrite)
    except PhrError as error:
        fail(str(error))
    out.print(
        f"{result.trials_run} trials run; study {printable(result.study_path)}: {result.trials_complete} complete, "
        f"{result.trials_pruned} pruned; best trial {result.best_trial}: validation {OBJECTIVE} "
        f"{result.best_value:.4f}; trained into the checkpoint, its settings → {printable(result.best_path)}",
        highlight=False, soft_wrap=True,  # a path broken over two lines cannot be copied
    )
    show_outcome(result.training, OBJECTIVE, checkpoint)  # the final training's curve and summary
