"""`phr extract`: a folder of videos (and posts) -> the HDF5 feature store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from phr_cli.choices import Choice
from phr_cli.cli import present
from phr_cli.cli.app import (
    DEFAULT_STORE,
    DeviceOption,
    JournalOption,
    QuietOption,
    RandomWeightsOption,
    WeightsDirOption,
    app,
    check_device,
    choices,
    err,
    fail,
    finite,
    printable,
    quiet_libraries,
    take_journal,
)
from phr_cli.data.decode_options import DecodeLimits
from phr_cli.encoders.registry import PRECISIONS
from phr_cli.errors import PhrError
from phr_cli.extract.options import ExtractOptions, ExtractReport, VideoOutcome

if TYPE_CHECKING:
    Precision = Choice
else:  # the encoders' autocast choices, as the registry names them
    Precision = choices("Precision", PRECISIONS)
DEFAULT_PRECISION = Precision(ExtractOptions.precision)
FLOAT16 = "float16"  # ExtractOptions.feature_dtype of --float16


@app.command()
def extract(
    videos: Annotated[Path, typer.Argument(
        help="Folder of videos (searched recursively), with an optional posts.csv / posts.jsonl manifest "
        "or yt-dlp .info.json sidecars.")],
    store: Annotated[Path, typer.Option(
        "--store", help="The HDF5 feature store to create or add to (other folders' posts are kept; this "
        "folder's are updated).")] = DEFAULT_STORE,
    replace: Annotated[bool, typer.Option(
        "--replace", help="Start the store over with this folder's posts only, every video extracted "
        "again.")] = ExtractOptions.replace,
    device: DeviceOption = ExtractOptions.device,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=0, help="Decoding processes (default: one per core; 0 decodes in-process). With "
        "--ray: at most this many decode tasks at once (default: as the cluster's CPUs allow).")
    ] = ExtractOptions.workers,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, help="Frames per encoder batch.")] = ExtractOptions.batch_size,
    weights_dir: WeightsDirOption = ExtractOptions.weights_dir,
    random_weights: RandomWeightsOption = ExtractOptions.random_weights,
    float16: Annotated[bool, typer.Option(
        "--float16", help="Store visual/acoustic features as float16.")] = ExtractOptions.feature_dtype == FLOAT16,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Stop at the first file that fails (what is finished is kept).")] = ExtractOptions.strict,
    file_timeout: Annotated[float, typer.Option(
        "--file-timeout", callback=finite(0, inclusive=False),
        help="Seconds a decoding worker may spend on one file before it is stopped.")
    ] = DecodeLimits.seconds_per_file,
    precision: Annotated[Precision, typer.Option(
        "--precision", help="Autocast of ResNet50 and VGGish: fp32 (exact), bf16 or fp16 (GPU tensor cores; "
        "recorded in the store).")] = DEFAULT_PRECISION,
    ray: Annotated[bool, typer.Option(
        "--ray", help="Decode and encode on a Ray cluster (pip install 'phr\\[ray]'); the store is the same.")
    ] = ExtractOptions.ray,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", metavar="ADDRESS", help="With --ray: the cluster to join (host:port, ray://host:port); "
        "default $RAY_ADDRESS, else a local cluster.")] = ExtractOptions.ray_address,
    ray_encoders: Annotated[int | None, typer.Option(
        "--ray-encoders", min=1, help="With --ray: encoder actors (default: one per GPU of the cluster, else 1).")
    ] = ExtractOptions.ray_encoders,
    journal: JournalOption = None,
    quiet: QuietOption = False,
) -> None:
    """Decode videos and encode them (ResNet50, VGGish, MiniLM) into an HDF5 feature store."""
    if (ray_address or ray_encoders) and not ray:
        fail("--ray-address and --ray-encoders need --ray", code=2)
    if ray:
        from importlib.util import find_spec

        if find_spec("ray") is None:
            fail("--ray needs Ray: pip install 'phr[ray]'", code=2)
    if not ray:  # Ray's encoder actors pick their own device
        check_device(device)
    quiet_libraries()
    options = ExtractOptions(device=device, workers=workers, batch_size=batch_size,
                             weights_dir=weights_dir, random_weights=random_weights,
                             feature_dtype=FLOAT16 if float16 else "float32", strict=strict,
                             limits=DecodeLimits(seconds_per_file=file_timeout), precision=precision.value,
                             replace=replace,
                             ray=ray, ray_address=ray_address, ray_encoders=ray_encoders)
    if not quiet:
        err.print(f"reading posts under {printable(videos)}; store {printable(store)}", highlight=False)
    report = _run(videos, store, options, quiet)
    present.show_extract(report, random_weights, replace)
    if journal is not None:
        take_journal(journal, store)
    if report.failures:
        fail(f"{len(report.failures)} file(s) failed" + (" (stopped by --strict)" if report.stopped_early else "")
             + f"; their status and reason are in {store}")


def _run(videos: Path, store: Path, options: ExtractOptions, quiet: bool) -> ExtractReport:
    """The extraction under a progress display: a line a file that failed as it fails."""
    from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn

    from phr_cli.data.statuses import FAILED_STATUSES
    from phr_cli.extract import extract as run_extract
    from phr_cli.progress import CountColumn, EtaColumn, PhaseProgress, SpeedColumn

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
            return run_extract(videos, store, options, on_progress, on_phase)
    except PhrError as error:
        fail(str(error))
