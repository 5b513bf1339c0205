"""The `phr` command line: parse options, call into phr_cli, print the result.

Heavy modules (torch, the encoders) are imported inside the commands so that
`phr --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Personalised hashtag recommendation for micro-videos (GCN-PHR).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

DEFAULT_STORE = Path("phr_data/features.h5")
DEFAULT_CHECKPOINT = Path("models/gcn-phr.pt")

DeviceOption = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda.")
WeightsDirOption = typer.Option(
    None, "--weights-dir", envvar="PHR_WEIGHTS_DIR",
    help="Folder holding encoder weight files (searched before the torch hub cache).",
)
RandomWeightsOption = typer.Option(
    False, "--random-weights",
    help="Use seeded random ResNet50/VGGish weights instead of pretrained ones (for tests "
    "and offline trials; every output records it).",
)


def fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _quiet_libraries() -> None:
    """The terminal belongs to phr's own progress bars: silence transformers' loading bar."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def _known_errors() -> tuple[type[Exception], ...]:
    from phr_cli.encoders.registry import MissingWeightsError, WeightsHashError
    from phr_cli.posts import ManifestError
    from phr_cli.store import StoreError

    return (MissingWeightsError, WeightsHashError, ManifestError, StoreError,
            NotADirectoryError, FileNotFoundError)


@app.command()
def extract(
    videos: Path = typer.Argument(..., help="Folder of videos (searched recursively), with an "
                                 "optional posts.csv / posts.jsonl manifest or yt-dlp .info.json sidecars."),
    store: Path = typer.Option(DEFAULT_STORE, "--out", "-o", help="The HDF5 feature store to create or extend."),
    device: str = DeviceOption,
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding processes (default: one per core; 0 decodes in-process)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Frames per encoder batch."),
    weights_dir: Optional[Path] = WeightsDirOption,
    random_weights: bool = RandomWeightsOption,
    float16: bool = typer.Option(False, "--float16", help="Store visual/acoustic features as float16."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first file that fails (what is finished is kept)."),
) -> None:
    """Decode videos and encode them (ResNet50, VGGish, MiniLM) into an HDF5 feature store."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from phr_cli.extract import ExtractOptions, extract as run_extract

    _quiet_libraries()
    options = ExtractOptions(device=device, workers=workers, batch_size=batch_size,
                             weights_dir=weights_dir, random_weights=random_weights,
                             feature_dtype="float16" if float16 else "float32", strict=strict)
    err.print(f"reading posts under {videos}; store {store}", highlight=False)
    progress = Progress(
        TextColumn("extracting"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.2f} videos/s"), TextColumn("[red]{task.fields[failed]} failed"),
        TimeElapsedColumn(), console=err, transient=False,
    )
    task = progress.add_task("extract", total=None, rate=0.0, failed=0)

    def on_progress(outcome, report, total) -> None:
        elapsed = progress.tasks[task].elapsed or 1e-9
        progress.update(task, total=total, completed=report.extracted,
                        rate=report.extracted / elapsed, failed=len(report.failures))
        if outcome.status in ("corrupt", "unreadable", "truncated", "missing"):
            progress.console.print(f"[yellow]{outcome.path}[/]: {outcome.status}: {outcome.reason}",
                                   highlight=False, soft_wrap=True)

    try:
        with progress:
            report = run_extract(videos, store, options, on_progress)
    except _known_errors() as error:
        fail(str(error))
    for outcome in report.failures:
        if outcome.status == "missing":
            err.print(f"[yellow]{outcome.path}[/]: {outcome.status}: {outcome.reason}", highlight=False)

    table = Table(title=f"phr extract → {report.store}")
    table.add_column("status")
    table.add_column("videos", justify="right")
    for status, count in sorted(report.statuses.items()):
        table.add_row(status, str(count))
    table.add_row("reused (already in store)", str(report.reused))
    out.print(table)
    out.print(
        f"{report.posts} posts, {report.videos} videos: {report.extracted} extracted in "
        f"{report.seconds:.1f} s ({report.videos_per_second:.2f} videos/s after "
        f"{report.load_seconds:.1f} s loading the encoders)"
        + (" with RANDOM encoder weights" if random_weights else ""),
        highlight=False,
    )
    if report.failures:
        fail(f"{len(report.failures)} file(s) failed" + (" (stopped by --strict)" if report.stopped_early else "")
             + f"; their status and reason are in {store}")


@app.command()
def inspect(
    store: Path = typer.Argument(DEFAULT_STORE, help="The HDF5 feature store."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """Summarise a feature store: statuses, users, hashtags, encoders and weights."""
    from phr_cli.store import summarize

    try:
        summary = summarize(store)
    except _known_errors() as error:
        fail(str(error))
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    table = Table(title=f"phr store {store}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for name in ("phr_version", "updated", "videos", "posts", "users", "hashtags",
                 "text_only_posts", "unmerged_segments"):
        if name in summary:
            table.add_row(name, str(summary[name]))
    for name in ("video_statuses", "post_statuses"):
        if name in summary:
            table.add_row(name, ", ".join(f"{k} {v}" for k, v in summary[name].items()))
    for modality, encoder in summary["encoders"].items():
        table.add_row(f"{modality} encoder", f"{encoder['name']} ({encoder['version']}); weights {encoder['weights']}")
    out.print(table)
