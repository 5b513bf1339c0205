"""`phr extract`: a folder of videos (and posts) -> the HDF5 feature store."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from phr_cli.cli import present
from phr_cli.cli.app import (
    DEFAULT_STORE,
    DeviceOption,
    QuietOption,
    RandomWeightsOption,
    WeightsDirOption,
    app,
    check_device,
    err,
    fail,
    finite,
    printable,
    quiet_libraries,
)
from phr_cli.errors import PhrError


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


@app.command()
def extract(
    videos: Path = typer.Argument(..., help="Folder of videos (searched recursively), with an "
                                 "optional posts.csv / posts.jsonl manifest or yt-dlp .info.json sidecars."),
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="The HDF5 feature store to create or add to "
                               "(other folders' posts are kept; this folder's are updated)."),
    replace: bool = typer.Option(False, "--replace", help="Start the store over with this folder's posts only "
                                 "(stored videos are still reused)."),
    device: str = DeviceOption,
    workers: int | None = typer.Option(
        None, "--workers", min=0, help="Decoding processes (default: one per core; 0 decodes in-process). With "
        "--ray: at most this many decode tasks at once (default: as the cluster's CPUs allow)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Frames per encoder batch."),
    weights_dir: Path | None = WeightsDirOption,
    random_weights: bool = RandomWeightsOption,
    float16: bool = typer.Option(False, "--float16", help="Store visual/acoustic features as float16."),
    strict: bool = typer.Option(False, "--strict",
                                help="Stop at the first file that fails (what is finished is kept)."),
    file_timeout: float = typer.Option(300.0, "--file-timeout", callback=finite(0, inclusive=False),
                                       help="Seconds a decoding worker may spend on one file before it is stopped."),
    precision: Precision = typer.Option(Precision.fp32, "--precision", help="Autocast of ResNet50 and VGGish: "
                                        "fp32 (exact), bf16 or fp16 (GPU tensor cores; recorded in the store)."),
    ray: bool = typer.Option(False, "--ray", help="Decode and encode on a Ray cluster (pip install "
                             "'phr\\[ray]'); the store is the same."),
    ray_address: str | None = typer.Option(None, "--ray-address", metavar="ADDRESS", help="With --ray: the cluster "
                                           "to join (host:port, ray://host:port); default $RAY_ADDRESS, else a "
                                           "local cluster."),
    ray_encoders: int | None = typer.Option(None, "--ray-encoders", min=1, help="With --ray: encoder actors "
                                            "(default: one per GPU of the cluster, else 1)."),
    quiet: bool = QuietOption,
) -> None:
    """Decode videos and encode them (ResNet50, VGGish, MiniLM) into an HDF5 feature store."""
    if (ray_address or ray_encoders) and not ray:
        fail("--ray-address and --ray-encoders need --ray", code=2)
    if ray:
        from importlib.util import find_spec

        if find_spec("ray") is None:
            fail("--ray needs Ray: pip install 'phr[ray]'", code=2)
    from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn

    from phr_cli.data.decode import DecodeLimits
    from phr_cli.data.statuses import FAILED_STATUSES
    from phr_cli.extract import ExtractOptions, ExtractReport, VideoOutcome
    from phr_cli.extract import extract as run_extract
    from phr_cli.progress import CountColumn, EtaColumn, PhaseProgress, SpeedColumn

    if not ray:  # Ray's encoder actors pick their own device
        check_device(device)
    quiet_libraries()
    options = ExtractOptions(device=device, workers=workers, batch_size=batch_size,
                             weights_dir=weights_dir, random_weights=random_weights,
                             feature_dtype="float16" if float16 else "float32", strict=strict,
                             limits=DecodeLimits(seconds_per_file=file_timeout), precision=precision.value,
                             replace=replace,
                             ray=ray, ray_address=ray_address, ray_encoders=ray_encoders)
    err.print(f"reading posts under {printable(videos)}; store {printable(store)}", highlight=False)
    progress = PhaseProgress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), CountColumn(),
        SpeedColumn("videos"), TextColumn("[red]{task.fields[failed]} failed"),
        TimeElapsedColumn(), EtaColumn(), console=err, quiet=quiet,
    )
    task = progress.add_task("reading posts …", total=None, failed=0)

    def on_phase(name: str, total: int | None) -> None:
        progress.phase(task, f"{name} …", total)

    def on_progress(outcome: VideoOutcome, report: ExtractReport, total: int) -> None:
        progress.update(task, total=total, completed=report.extracted, failed=len(report.failures))
        if outcome.status in FAILED_STATUSES:
            progress.console.print(f"[yellow]{printable(outcome.path)}[/]: {outcome.status}: "
                                   f"{printable(outcome.reason)}", highlight=False, soft_wrap=True)

    try:
        with progress:
            report = run_extract(videos, store, options, on_progress, on_phase)
    except PhrError as error:
        fail(str(error))
    present.show_extract(report, random_weights, replace)
    if report.failures:
        fail(f"{len(report.failures)} file(s) failed" + (" (stopped by --strict)" if report.stopped_early else "")
             + f"; their status and reason are in {store}")
