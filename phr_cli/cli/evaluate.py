"""`phr evaluate`: the checkpoint against the baselines on its test split."""

from __future__ import annotations

import json
from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from phr_cli.cli import present
from phr_cli.cli.app import (
    DEFAULT_CHECKPOINT,
    DEFAULT_DEVICE,
    DEFAULT_STORE,
    SEED_MAX,
    DeviceOption,
    QuietOption,
    app,
    check_device,
    err,
    fail,
    printable,
)
from phr_cli.errors import PhrError


# The library's evaluation.metrics.ProtocolName (a module that imports torch); tests/test_cli.py
# checks that both agree.
class Protocol(str, Enum):
    sampled = "sampled"
    full = "full"
    both = "both"


@app.command()
def evaluate(
    store: Annotated[Path, typer.Option(
        "--store", help="Feature store the checkpoint was trained on.")] = DEFAULT_STORE,
    checkpoint: Annotated[Path, typer.Option(
        "--checkpoint", help="Checkpoint from `phr train`.")] = DEFAULT_CHECKPOINT,
    protocol: Annotated[Protocol, typer.Option(
        "--protocol", help="sampled (the paper's: ground truth + 1,000 random hashtags), full (every known "
        "hashtag) or both.")] = Protocol.both,
    baselines: Annotated[bool, typer.Option(
        "--baselines/--no-baselines", help="Also fit and score the baselines.")] = True,
    seed: Annotated[int, typer.Option(
        min=0, max=SEED_MAX, help="Seed of the sampled negatives and tie-breaking.")] = 0,
    device: DeviceOption = DEFAULT_DEVICE,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot", metavar="FILE", help="Also draw the methods side by side into this PNG.")] = None,
    quiet: QuietOption = False,
) -> None:
    """P@K, R@K and A@K (K = 5, 10) on the test split: GCN-PHR next to the baselines."""
    from phr_cli.devices import resolve_device
    from phr_cli.evaluation.plots import plot_comparison
    from phr_cli.training.comparison import BASELINES, evaluate_store

    if plot is not None and plot.suffix.lower() != ".png":
        fail(f"--plot {printable(plot)}: give a .png file name", code=2)
    check_device(device)
    if not checkpoint.is_file():
        fail(f"{printable(checkpoint)}: no checkpoint; run `phr train --checkpoint {printable(checkpoint)}` first")
    phase = "fitting baselines and scoring the test split …" if baselines else "scoring the test split …"
    if not quiet and not err.is_terminal:  # a log gets the phase as a line (a spinner shows nothing there)
        err.print(phase, highlight=False)
    try:
        with err.status(phase) if not quiet else nullcontext():
            comparison = evaluate_store(store, checkpoint, protocol.value, BASELINES if baselines else (),
                                        resolve_device(device), seed)
        if plot is not None:
            plot_comparison(comparison.to_dict(), plot)
    except PhrError as error:
        fail(str(error))
    for notice in comparison.notices:
        err.print(f"[yellow]warning:[/] {printable(notice)}", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps(comparison.to_dict(), indent=2))
        return
    present.show_comparison(comparison, ("sampled", "full") if protocol is Protocol.both else (protocol.value,))
