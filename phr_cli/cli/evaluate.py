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
    out,
    printable,
)
from phr_cli.errors import PhrError


# The library's evaluation.metrics.ProtocolName (a module that imports torch); tests/test_cli.py
# checks that both agree.
class Protocol(str, Enum):
    sampled = "sampled"
    full = "full"
    both = "both"
    stream = "stream"


@app.command()
def evaluate(
    store: Annotated[Path, typer.Option(
        "--store", help="Feature store the checkpoint was trained on.")] = DEFAULT_STORE,
    checkpoint: Annotated[list[Path] | None, typer.Option(
        "--checkpoint", help="Checkpoint from `phr train`; repeat it, or give a quoted glob ('models/gcn-phr*.pt'), "
        f"for the mean ± standard deviation over seeds [default: {DEFAULT_CHECKPOINT}]")] = None,
    protocol: Annotated[Protocol, typer.Option(
        "--protocol", help="sampled (the paper's: ground truth + 1,000 random hashtags), full (every known "
        "hashtag), both, or stream (full, frozen and with each test post folded in once scored, in time order: "
        "a time split).")] = Protocol.both,
    baselines: Annotated[bool, typer.Option(
        "--baselines/--no-baselines", help="Also fit and score the baselines.")] = True,
    seed: Annotated[int, typer.Option(
        min=0, max=SEED_MAX, help="Seed of the sampled negatives and tie-breaking.")] = 0,
    device: DeviceOption = DEFAULT_DEVICE,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    plot: Annotated[Path | None, typer.Option(
        "--plot", metavar="FILE", help="Also draw the methods side by side into this PNG.")] = None,
    runs: Annotated[Path | None, typer.Option(
        "--runs", metavar="DIR", help="Also write TREC qrels.txt and a run file per method (full ranking) into "
        "this folder; one subfolder a checkpoint when there are several.")] = None,
    segments: Annotated[bool, typer.Option(
        "--segments", help="Also print every metric by user activity, hashtag frequency and new or seen video, "
        "and the catalogue coverage (always in --json).")] = False,
    unseen_hashtags: Annotated[bool, typer.Option(
        "--unseen-hashtags", help="Also rank the test hashtags training never saw (by their words: the text map and "
        "their match with the caption) beside the known ones, against the caption-words baseline (in --json: "
        "\"unseen\").")] = False,
    quiet: QuietOption = False,
) -> None:
    """P/R/A/F1/nDCG/MAP/MRR@K (K = 5, 10) on the test split: GCN-PHR next to the baselines, with paired tests."""
    from phr_cli.devices import resolve_device
    from phr_cli.evaluation.plots import plot_comparison
    from phr_cli.training.comparison import BASELINES, evaluate_checkpoints, summarise_seeds, write_all_runs

    if plot is not None and plot.suffix.lower() != ".png":
        fail(f"--plot {printable(plot)}: give a .png file name", code=2)
    if runs is not None and protocol is Protocol.sampled:
        fail(f"--runs {printable(runs)}: the run files hold the full ranking; use --protocol full or both", code=2)
    check_device(device)
    checkpoints = _existing(checkpoint or [DEFAULT_CHECKPOINT])
    phase = "fitting baselines and scoring the test split …" if baselines else "scoring the test split …"
    if not quiet and not err.is_terminal:  # a log gets the phase as a line (a spinner shows nothing there)
        err.print(phase, highlight=False)
    try:
        with err.status(phase) if not quiet else nullcontext():
            comparisons = evaluate_checkpoints(store, checkpoints, protocol.value, BASELINES if baselines else (),
                                               resolve_device(device), seed, unseen_hashtags=unseen_hashtags)
        summary = summarise_seeds(comparisons) if len(comparisons) > 1 else None
        result = summary.to_dict() if summary is not None else comparisons[0].to_dict()
        if plot is not None:
            plot_comparison(result, plot)
        if runs is not None:
            write_all_runs(comparisons, runs)
    except PhrError as error:
        fail(str(error))
    for notice in dict.fromkeys(n for c in comparisons for n in c.notices):
        err.print(f"[yellow]warning:[/] {printable(notice)}", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    shown = {Protocol.both: ("sampled", "full"), Protocol.stream: ("full", "stream")}.get(protocol, (protocol.value,))
    if summary is not None:
        present.show_seed_summary(summary, shown, segments)
    else:
        present.show_comparison(comparisons[0], shown, segments)
    for comparison in comparisons if unseen_hashtags else []:
        present.show_unseen(comparison.unseen)
    if runs is not None:
        out.print(f"TREC qrels and runs → {printable(runs)}", highlight=False, soft_wrap=True)


def _existing(patterns: list[Path]) -> list[Path]:
    """The checkpoints the --checkpoint values name (a glob expanded); a missing one is a one-line error."""
    from phr_cli.training.comparison import expand_checkpoints

    try:
        checkpoints = expand_checkpoints(patterns)
    except PhrError as error:
        fail(str(error), code=2)
    for path in checkpoints:
        if not path.is_file():
            fail(f"{printable(path)}: no checkpoint; run `phr train --checkpoint {printable(path)}` first")
    return checkpoints
