"""The `phr` command line: parse options, call into phr_cli, print the result.

Heavy modules (torch, the encoders) are imported inside the commands so that
`phr --help` stays fast.
"""

from __future__ import annotations

import json
import math
import sys
from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from phr_cli import __version__
from phr_cli.errors import PhrError

if TYPE_CHECKING:
    from phr_cli.serving.explain import Because

out = Console()
err = Console(stderr=True)


class _Commands(TyperGroup):
    """Ctrl-C is one line and exit 130 (128 + SIGINT) instead of click's "Aborted!": the
    store writer and the checkpoint writer have kept every finished video and epoch, and
    their locks are released on the way out."""

    def invoke(self, ctx) -> Any:  # typer's own (vendored click) Context
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            err.print("interrupted; work so far kept", highlight=False)
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Commands,
    help="Personalised hashtag recommendation for micro-videos (GCN-PHR).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DEFAULT_STORE = Path("phr_data/features.h5")
DEFAULT_CHECKPOINT = Path("models/gcn-phr.pt")


# Choices as enums, so that a bad value is a usage error listing them (exit 2). Their values
# are the library's (model.FUSIONS, model.VARIANTS, registry.PRECISIONS, ...), which import
# torch; tests/test_cli.py checks that both agree.
class Fusion(str, Enum):
    concat = "concat"
    sum = "sum"


class Variant(str, Enum):
    full = "full"
    paper = "paper"
    no_attention = "no_attention"
    no_user_guidance = "no_user_guidance"
    no_hashtag_guidance = "no_hashtag_guidance"


class VideoMessages(str, Enum):
    mean = "mean"
    sum = "sum"


class SplitBy(str, Enum):
    post = "post"
    item = "item"
    time = "time"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Protocol(str, Enum):
    sampled = "sampled"
    full = "full"
    both = "both"


DEVICE_CHOICES = ("auto", "cpu", "cuda")


def _device_name(value: str) -> str:
    """auto, cpu, cuda or cuda:N, checked at parse time; whether CUDA is there is checked
    when the command starts (`_check_device`)."""
    from phr_cli.devices import check_device_name

    try:
        return check_device_name(value)
    except PhrError as error:
        raise typer.BadParameter(str(error)) from None


def _complete_device(incomplete: str) -> list[str]:
    return [name for name in DEVICE_CHOICES if name.startswith(incomplete)]


def finite(minimum: float, inclusive: bool = True) -> Any:
    """An option callback: the number is finite (a range alone lets nan and inf through)
    and at least (or, not inclusive, above) `minimum`."""

    def check(value: float) -> float:
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
            raise typer.BadParameter(f"{value} is not a finite number {bound}")
        return value

    return check


SEED_MAX = 2**32 - 1  # numpy's seed range

DeviceOption = typer.Option("auto", "--device", parser=_device_name, metavar="[auto|cpu|cuda|cuda:N]",
                            autocompletion=_complete_device, help="auto (CUDA when present), cpu, cuda or cuda:N.")
QuietOption = typer.Option(False, "--quiet", "-q", help="No progress display (errors and the summary still print).")
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
    err.print(f"[bold red]error:[/] {printable(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def printable(path: Path | str) -> str:
    """A file name on one line: control characters (a newline in a name) escaped, and
    rich markup characters escaped."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))
    return escape(text)


def _version(value: bool) -> None:
    if value:
        out.print(f"phr {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                 help="Print phr's version and exit."),
) -> None:
    """Personalised hashtag recommendation for micro-videos (GCN-PHR)."""
    from phr_cli.devices import keep_freed_memory

    keep_freed_memory()


def _check_device(name: str) -> None:
    """Fail fast, in one line, on a device this machine lacks (before any loading)."""
    from phr_cli.devices import resolve_device

    try:
        resolve_device(name)
    except PhrError as error:
        fail(str(error))


def _without_option(arguments: list[str], name: str) -> list[str]:
    """`arguments` less `name VALUE` / `name=VALUE`."""
    kept, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == name:
            skip = True
        elif not argument.startswith(name + "="):
            kept.append(argument)
    return kept


def _quiet_libraries() -> None:
    """The terminal belongs to phr's own progress bars: silence transformers' loading bar."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


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
    from phr_cli.data.statuses import FAILED_STATUSES, Status
    from phr_cli.extract import ExtractOptions, ExtractReport, VideoOutcome
    from phr_cli.extract import extract as run_extract
    from phr_cli.progress import CountColumn, EtaColumn, PhaseProgress, SpeedColumn

    if not ray:  # Ray's encoder actors pick their own device
        _check_device(device)
    _quiet_libraries()
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
    for notice in report.notices:
        err.print(f"[yellow]note:[/] {printable(notice)}", highlight=False, soft_wrap=True)
    for outcome in report.failures:
        if outcome.status == Status.MISSING:
            err.print(f"[yellow]{printable(outcome.path)}[/]: {outcome.status}: "
                      f"{printable(outcome.reason)}", highlight=False)

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
    if not report.stopped_early:
        changes = report.post_changes
        out.print(f"posts: {changes.added} added, {changes.updated} updated, "
                  f"{changes.unchanged} unchanged, {changes.removed} removed (this folder); "
                  f"{changes.kept} kept (other folders)" + (" — started over (--replace)" if replace else ""),
                  highlight=False, soft_wrap=True)
    if report.failures:
        fail(f"{len(report.failures)} file(s) failed" + (" (stopped by --strict)" if report.stopped_early else "")
             + f"; their status and reason are in {store}")


@app.command()
def inspect(
    path: Path | None = typer.Argument(None, help="A feature store, a checkpoint or a posts.csv / "
                                          "posts.jsonl manifest (default: --store)."),
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="The HDF5 feature store (when no PATH is given)."),
    failures: bool = typer.Option(False, "--failures", help="List only the files that failed."),
    limit: int = typer.Option(20, "--limit", min=1, help="Rows a list shows (files, users, hashtags)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """Show what a store, checkpoint or manifest holds: files with status and reason, users, hashtags."""
    from phr_cli.serving.inspection import inspect_path

    target = path or store
    try:
        summary = inspect_path(target, limit, failures)
    except PhrError as error:
        fail(str(error))
    if as_json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    {"store": _show_store, "checkpoint": _show_checkpoint, "manifest": _show_manifest}[summary["kind"]](summary)


def _fields(title: str, rows: list[tuple[str, object]]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for name, value in rows:
        table.add_row(name, printable(str(value)))
    out.print(table)


def _counts(rows: list[list], total: int, columns: tuple[str, str]) -> None:
    """A name -> count table; the header says when it shows only the top rows (--limit)."""
    if not rows:
        return
    table = Table()
    table.add_column(f"{columns[0]} (top {len(rows)} of {total})" if total > len(rows) else columns[0])
    table.add_column(columns[1], justify="right")
    for name, count in rows:
        table.add_row(printable(str(name)), str(count))
    out.print(table)


def _show_store(summary: dict) -> None:
    rows = [(name, summary[name]) for name in ("phr_version", "updated", "videos", "posts", "users", "hashtags",
                                               "text_only_posts", "unmerged_segments") if name in summary]
    rows += [(name, ", ".join(f"{k} {v}" for k, v in summary[name].items()))
             for name in ("video_statuses", "post_statuses") if name in summary]
    rows += [(f"{modality} encoder", f"{e['name']} ({e['version']}); weights {e['weights']}")
             for modality, e in summary["encoders"].items()]
    rows += [("folder", f"{folder}: {count} posts") for folder, count in summary.get("folders", [])]
    _fields(f"phr store {printable(summary['store'])}", rows)
    files = summary["files"]
    if files:
        table = Table(title=f"files (first {len(files)} of {summary['files_listed']})"
                      if summary["files_listed"] > len(files) else "files")
        for column in ("file", "status", "reason"):
            table.add_column(column)
        for file, status, reason in files:
            table.add_row(printable(file), status, printable(reason))
        out.print(table)
    _counts(summary.get("top_users", []), summary.get("users", 0), ("user", "posts"))
    _counts(summary.get("top_hashtags", []), summary.get("hashtags", 0), ("hashtag", "posts"))
    if summary["failed_files"]:
        out.print(f"{summary['failed_files']} file(s) failed (`phr inspect --failures` lists only those)",
                  highlight=False)


def _show_checkpoint(summary: dict) -> None:
    split, provenance = summary["split"], summary["provenance"]
    model = {part: values for part, values in summary["model_config"].items() if isinstance(values, dict)}
    switches = {name: value for name, value in summary["model_config"].items() if not isinstance(value, dict)}
    rows: list[tuple[str, object]] = [
        *((f"model: {part}", ", ".join(f"{k} {v}" for k, v in values.items())) for part, values in model.items()),
        ("model", ", ".join(f"{k} {v}" for k, v in switches.items())),
        ("training", ", ".join(f"{k} {v}" for k, v in summary["train_config"].items())),
        ("split", f"by {split['by']}, seed {split['seed']}: train {split['train']}, "
                  f"validation {split['validation']}, test {split['test']}"),
        ("vocabulary", f"{summary['users']} users, {summary['hashtags']} hashtags, {summary['items']} items"),
        ("best epoch", f"{summary['best_epoch']} of {summary['epochs_run']} run (validation "
                       f"{summary['train_config']['validation_metric']} {summary['best_metric']:.4f})"),
        ("state", ("finished" if summary["completed"] else "interrupted: `phr train` resumes it")
         + (", stopped early" if summary["stopped_early"] else "")),
        ("trained on", provenance["store"] or "posts from no store"),
    ]
    rows += [(f"{modality} encoder", text) for modality, text in provenance["encoders"].items()]
    if provenance["posts_recorded"] is not None:
        rows.append(("posts recorded", provenance["posts_recorded"]))
    _fields(f"phr checkpoint {summary['checkpoint']}", rows)


def _show_manifest(summary: dict) -> None:
    _fields(f"posts manifest {summary['manifest']}",
            [(name, summary[name]) for name in ("posts", "text_only_posts", "users", "hashtags") if name in summary])
    _counts(summary.get("top_users", []), summary.get("users", 0), ("user", "posts"))
    _counts(summary.get("top_hashtags", []), summary.get("hashtags", 0), ("hashtag", "posts"))
    problems = summary["problems"]
    for problem in problems:
        err.print(f"[yellow]problem:[/] {printable(problem)}", highlight=False, soft_wrap=True)
    if summary.get("problem_count", len(problems)) > len(problems):
        err.print(f"… and {summary['problem_count'] - len(problems)} more problems", highlight=False)


@app.command()
def train(
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="Feature store written by `phr extract`."),
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, "--checkpoint", help="Checkpoint to write (and resume)."),
    device: str = DeviceOption,
    dim: int = typer.Option(64, min=1, help="Latent dimension."),
    layers: int = typer.Option(1, min=1, help="Stacked propagation layers."),
    fusion: Fusion = typer.Option(Fusion.concat, help="concat (Eq. 7) or sum (Eq. 8)."),
    variant: Variant = typer.Option(Variant.full, help="full (phr's default model: GCN-PHR with the count "
                                    "evidence, item IDs and the self-loop), paper (the paper's equations "
                                    "only), or an attention ablation of the default: no_attention "
                                    "(Variant-I), no_user_guidance (Variant-II), no_hashtag_guidance (Variant-III)."),
    content_only: bool = typer.Option(False, "--content-only", help="Drop graph messages (ablation)."),
    residual: bool | None = typer.Option(None, "--residual/--no-residual", help="Keep each node's own embedding "
                                         "beside its messages (a self-loop); default on, off for --variant paper."),
    evidence: bool | None = typer.Option(None, "--evidence/--no-evidence", help="The learned count prior "
                                         "(user, item, popularity, similar items); default on, off for paper."),
    item_ids: bool | None = typer.Option(None, "--item-ids/--no-item-ids", help="ID embeddings for items seen "
                                         "in training; default on, off for paper."),
    item_id_dropout: float | None = typer.Option(None, "--item-id-dropout", min=0.0, max=1.0,
                                                 help="Share of training posts scored without their item's "
                                                 "ID and history; default: the share of validation posts "
                                                 "with a new item."),
    neighbours: int = typer.Option(20, min=1, help="Content neighbours of the similar-items evidence."),
    recency: bool = typer.Option(True, "--recency/--no-recency", help="Weigh the user's past hashtags by how "
                                 "recent they are, beside their counts (an evidence term)."),
    similar_posts: bool = typer.Option(True, "--similar-posts/--no-similar-posts", help="Weigh the user's "
                                       "past hashtags by how alike their items' tags are to this item's "
                                       "(an evidence term)."),
    factors: bool = typer.Option(True, "--factors/--no-factors", help="Fit PITF once the model is trained "
                                 "and add its score as one more calibrated part (with the evidence)."),
    rerank: bool = typer.Option(True, "--rerank/--no-rerank", help="Re-rank each post's leading hashtags "
                                "with gradient-boosted trees fitted on the validation posts (with the "
                                "evidence; kept only if held-out validation P@5 rises)."),
    hard_negatives: float = typer.Option(0.5, "--hard-negatives", min=0.0, max=1.0,
                                         help="Share of negatives drawn from the user's and the item's "
                                         "own hashtags."),
    video_messages: VideoMessages = typer.Option(VideoMessages.mean, "--video-messages",
                                                 help="mean (default: Eq. 6's sum divided "
                                       "by the node's number of groups) or sum (Eq. 6 as printed)."),
    epochs: int = typer.Option(50, min=1, help="Maximum epochs."),
    batch_size: int = typer.Option(1024, "--batch-size", min=1, help="BPR triples per step."),
    lr: float = typer.Option(3e-3, callback=finite(0, inclusive=False), help="Adam learning rate."),
    l2: float = typer.Option(1e-4, callback=finite(0), help="λ of Eq. 11 on the batch's ID embeddings."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", callback=finite(0),
                                       help="Adam weight decay (the paper's code used 0.1)."),
    negatives: int = typer.Option(1, min=1, help="Negative hashtags per positive."),
    patience: int = typer.Option(5, min=1, help="Epochs without validation gain before stopping."),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Seed of the split, initialisation and sampling."),
    split_by: SplitBy = typer.Option(SplitBy.post, "--split-by",
                                     help="post: random posts; item: whole videos held out; "
                                     "time: the latest posts held out (every post needs a time)."),
    resume: bool = typer.Option(True, "--resume/--restart", help="Continue an interrupted checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished checkpoint trained with "
                                   "other settings (refused without it)."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Training processes on this machine (torchrun, "
                              "DistributedDataParallel: gloo on CPU, NCCL with one GPU each)."),
    quiet: bool = QuietOption,
) -> None:
    """Train GCN-PHR on the store's posts (8:1:1 split) and write a checkpoint."""
    if nproc > 1:
        from phr_cli.training.distributed import launch

        arguments = sys.argv[sys.argv.index("train") + 1:]
        raise typer.Exit(launch(nproc, ["train", *_without_option(arguments, "--nproc")]))
    from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn

    from phr_cli.evaluation.plots import curve_path, plot_training_curve
    from phr_cli.model.evidence import EvidenceConfig
    from phr_cli.model.network import Fusion as ConfigFusion
    from phr_cli.model.network import NetworkConfig
    from phr_cli.model.network import Variant as ConfigVariant
    from phr_cli.model.network import VideoMessages as ConfigVideoMessages
    from phr_cli.model.phr import ItemIdConfig, ModelConfig
    from phr_cli.progress import CountColumn, EtaColumn, PhaseProgress
    from phr_cli.training.config import TrainConfig
    from phr_cli.training.distributed import launched_rank
    from phr_cli.training.train import train_from_store

    other_rank = launched_rank() != 0  # under torchrun only rank 0 reports; errors print on every rank
    out.quiet = other_rank
    _check_device(device)

    try:
        paper = variant is Variant.paper  # the paper's network alone, unless a part is asked for
        network = NetworkConfig(dim=dim, layers=layers, fusion=ConfigFusion(fusion.value),
                                variant=ConfigVariant("full" if paper else variant.value), propagate=not content_only,
                                video_messages=ConfigVideoMessages(video_messages.value),
                                residual=residual if residual is not None else not paper)
        model_config = ModelConfig(
            network,
            EvidenceConfig(evidence if evidence is not None else not paper, neighbours, recency, similar_posts),
            ItemIdConfig(item_ids if item_ids is not None else not paper, item_id_dropout),
            factors=factors)
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, l2=l2,
                             weight_decay=weight_decay, negatives=negatives, patience=patience,
                             seed=seed, device=device, hard_negatives=hard_negatives, rerank=rerank)
    except PhrError as error:
        fail(str(error), code=2)
    if not other_rank:
        err.print(f"training on {printable(store)}; checkpoint {printable(checkpoint)}", highlight=False)
    progress = PhaseProgress(
        SpinnerColumn(), TextColumn("{task.description}"), CountColumn(), BarColumn(),
        TextColumn("{task.fields[scores]}"), TimeElapsedColumn(), EtaColumn(),
        console=err, quiet=quiet or other_rank,
    )
    # No epoch total until the first epoch ends: reading the store and building the graph come first.
    task = progress.add_task("reading the store, building the graph …", total=None, scores="")
    metric_name = config.validation_metric

    def on_epoch(epoch: int, loss: float, metric: float, best: float) -> None:
        scores = _epoch_scores(loss, metric, best, metric_name)
        if progress.tasks[task].total is None:  # the first epoch (or the first after resuming)
            progress.phase(task, "epoch", epochs, completed=epoch, scores=scores)
        else:
            progress.update(task, completed=epoch, scores=scores)

    def on_finishing(step: str, done: int, total: int | None) -> None:
        if done == 0:  # PITF's fit may stop early (on validation): its count then ends below the total
            progress.phase(task, f"{step} …", total, scores="")
        else:
            progress.update(task, completed=done)

    try:
        with progress:
            outcome = train_from_store(store, checkpoint, model_config, config, split_by.value, on_epoch, resume,
                                       overwrite, on_finishing)
    except PhrError as error:
        fail(str(error))
    result = outcome.result
    if not other_rank:
        try:
            plot_training_curve(result.history, result.best_epoch, metric_name, curve_path(checkpoint))
        except PhrError as error:
            fail(str(error))
    train_size, val_size, test_size = outcome.split_sizes
    out.print(
        f"{outcome.n_posts} posts (train {train_size}, validation {val_size}, test {test_size}); "
        f"left out: {', '.join(f'{k} {v}' for k, v in outcome.skipped.items() if v) or 'none'}",
        highlight=False,
    )
    resumed = f", resumed after epoch {result.resumed_from_epoch}" if result.resumed_from_epoch else ""
    stopped = ", stopped early" if result.stopped_early else ""
    validation = "no validation set: the last epoch is kept" if math.isnan(result.best_metric) else \
        f"validation {metric_name} {result.best_metric:.4f}"
    out.print(
        f"best epoch {result.best_epoch}: {validation} on {result.device}{resumed}{stopped} → "
        f"{printable(result.checkpoint_path)}",
        highlight=False, soft_wrap=True,  # a path broken over two lines cannot be copied
    )
    out.print(f"training curve → {printable(curve_path(checkpoint))}", highlight=False, soft_wrap=True)
    reranking = result.reranking
    if reranking is not None:
        verdict = "kept" if reranking["kept"] else "left out (the calibrated model ranks as well)"
        out.print(f"re-ranker: {verdict}; held-out validation {reranking['metric']} "
                  f"{reranking['held_out_before']:.4f} → {reranking['held_out_after']:.4f}", highlight=False)
    for notice in outcome.notices:
        err.print(f"[yellow]warning:[/] {printable(notice)}", highlight=False, soft_wrap=True)


def _epoch_scores(loss: float, metric: float, best: float, metric_name: str) -> str:
    """An epoch's loss and validation metric as progress shows them."""
    validation = "no validation set" if math.isnan(metric) else f"val {metric_name} {metric:.4f}  best {best:.4f}"
    return f"loss {loss:.4f}  {validation}"


@app.command()
def recommend(
    clips: list[Path] = typer.Argument(..., help="Video files, or folders of videos."),
    user: str | None = typer.Option(None, "--user", "-u", help="Who posts the clip (as in the training posts)."),
    caption: str = typer.Option("", "--caption", help="The clip's description; its hashtags are never suggested."),
    top: int = typer.Option(10, "--top", "-k", min=1, max=10_000, help="How many hashtags."),
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, "--checkpoint", help="Checkpoint from `phr train`."),
    store: Path | None = typer.Option(None, "--store", help="Store whose features are reused for known clips "
                                         "(default: the one the checkpoint was trained on)."),
    exclude_used: bool = typer.Option(False, "--exclude-used", help="Leave out hashtags the user has used before."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only (each suggestion with its reasons)."),
    explain: bool = typer.Option(False, "--explain", help="Say why each hashtag was suggested."),
    device: str = DeviceOption,
    weights_dir: Path | None = WeightsDirOption,
) -> None:
    """Rank hashtags for new clips, personalised to --user."""
    from phr_cli.data.posts import find_videos
    from phr_cli.devices import resolve_device
    from phr_cli.serving.recommend import Recommender

    _check_device(device)
    paths: list[Path] = []
    for clip in clips:
        paths.extend(find_videos(clip) if clip.is_dir() else [clip])
    if not paths:
        fail(f"no video files found in {', '.join(map(str, clips))}")
    if not checkpoint.is_file():
        fail(f"{printable(checkpoint)}: no checkpoint; run `phr train --checkpoint {printable(checkpoint)}` first")
    _quiet_libraries()
    try:
        recommender = Recommender(checkpoint, resolve_device(device), weights_dir, store)
        results = recommender.recommend(paths, user, caption, top, exclude_used, explain or as_json)
    except PhrError as error:
        fail(str(error))
    ranked = [result for result in results if not result.error]
    if ranked and not ranked[0].personalised:
        who = f"user {user!r} has no training posts" if user else "no --user given"
        close = recommender.closest_users(user) if user else []
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        err.print(f"{printable(who)}{printable(hint)}: content-based ranking for an average user", highlight=False,
                  soft_wrap=True)
    if recommender.random_weights:
        err.print("note: visual/acoustic encoders use random weights, as the training store did",
                  highlight=False)
    if as_json:
        print(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False))
    else:
        for result in results:
            if result.error:
                continue
            table = Table(title=printable(result.clip) + (f" — for {user}" if result.personalised else ""))
            columns: list[tuple[str, Literal["left", "center", "right"]]] = [
                ("rank", "right"), ("hashtag", "left"), ("score", "right"), ("used before", "center")]
            for column, justify in columns + ([("because", "left")] if explain else []):
                table.add_column(column, justify=justify)
            for s in result.suggestions:
                reason = (printable(describe(s.because)),) if explain and s.because else ()
                table.add_row(str(s.rank), f"#{s.hashtag}", f"{s.score:.3f}", "✓" if s.used_before else "", *reason)
            out.print(table)
    for result in results:
        if result.error:  # one line a failed clip: the error already carries its notice
            err.print(f"[bold red]error:[/] {printable(result.error)}", highlight=False, soft_wrap=True)
            continue
        for notice in result.notices:
            err.print(f"{printable(result.clip)}: {printable(notice)}", highlight=False, soft_wrap=True)
    if len(ranked) < len(results):
        raise typer.Exit(1)


@app.command()
def serve(
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, "--checkpoint", help="Checkpoint from `phr train`."),
    store: Path | None = typer.Option(None, "--store", help="Store the checkpoint was trained on (default: "
                                         "the one it records); its features and posts explain suggestions."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; beyond loopback needs --token."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    token: str | None = typer.Option(None, "--token", envvar="PHR_TOKEN",
                                        help="Bearer token every request must carry."),
    media_root: Path | None = typer.Option(None, "--media-root", help="Serve JSON `path` requests for "
                                              "files under this folder (off by default)."),
    max_upload_mb: float = typer.Option(100.0, "--max-upload-mb", help="Largest upload accepted, in MiB."),
    decode_workers: int = typer.Option(2, "--decode-workers", min=0, help="Decoding processes."),
    file_timeout: float = typer.Option(30.0, "--file-timeout", help="Seconds of decoding a clip gets."),
    batch_window_ms: float = typer.Option(10.0, "--batch-window-ms", help="How long a clip waits for "
                                          "others to share its encoder batch."),
    device: str = DeviceOption,
    weights_dir: Path | None = WeightsDirOption,
) -> None:
    """Serve suggestions over HTTP (POST /recommend, GET /health, GET /users/ID; docs at /docs)."""
    import logging

    from phr_cli.devices import resolve_device
    from phr_cli.serving.recommend import Recommender
    from phr_cli.serving.serve import ServeOptions, run

    _check_device(device)
    if not checkpoint.is_file():
        fail(f"{checkpoint}: no checkpoint; run `phr train --checkpoint {checkpoint}` first")
    _quiet_libraries()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        options = ServeOptions(host=host, port=port, token=token, media_root=media_root,
                               max_upload_bytes=int(max_upload_mb * (1 << 20)), decode_workers=decode_workers,
                               file_timeout=file_timeout, batch_window=batch_window_ms / 1000)
        with err.status("loading the checkpoint, encoders and store…"):
            recommender = Recommender(checkpoint, resolve_device(device), weights_dir, store)
            recommender.load_store(explain=True)
    except PhrError as error:
        fail(str(error))
    if recommender.random_weights:
        err.print("note: visual/acoustic encoders use random weights, as the training store did", highlight=False)
    if recommender.explain_problem:
        err.print(f"note: suggestions come without reasons: {recommender.explain_problem}", highlight=False)
    run(recommender, options, checkpoint)


def describe(because: Because) -> str:
    """A suggestion's reasons on a few short lines (`phr recommend --explain`)."""
    parts = ", ".join(f"{part.name} {part.share:+.0%}" for part in because.parts)
    lines = [f"score: {parts}", f"you used it {because.uses}×"]
    if because.own_videos:
        lines.append("your videos: " + ", ".join(f"{v.video} (α {v.weight:.2f})" for v in because.own_videos))
    if because.similar_videos:
        lines.append("similar: " + ", ".join(f"{v.video} ({v.weight:.2f})" for v in because.similar_videos))
    return "\n".join(lines)


@app.command()
def evaluate(
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="Feature store the checkpoint was trained on."),
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, "--checkpoint", help="Checkpoint from `phr train`."),
    protocol: Protocol = typer.Option(Protocol.both, "--protocol", help="sampled (the paper's: ground truth + 1,000 "
                                 "random hashtags), full (every known hashtag) or both."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also fit and score the baselines."),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Seed of the sampled negatives and tie-breaking."),
    device: str = DeviceOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    plot: Path | None = typer.Option(None, "--plot", metavar="FILE",
                                        help="Also draw the methods side by side into this PNG."),
    quiet: bool = QuietOption,
) -> None:
    """P@K, R@K and A@K (K = 5, 10) on the test split: GCN-PHR next to the baselines."""
    from phr_cli.devices import resolve_device
    from phr_cli.evaluation.plots import plot_comparison
    from phr_cli.training.comparison import BASELINES, evaluate_store

    if plot is not None and plot.suffix.lower() != ".png":
        fail(f"--plot {printable(plot)}: give a .png file name", code=2)
    _check_device(device)
    if not checkpoint.is_file():
        fail(f"{printable(checkpoint)}: no checkpoint; run `phr train --checkpoint {printable(checkpoint)}` first")
    phase = "fitting baselines and scoring the test split …"
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
    metrics = ("P@5", "R@5", "A@5", "P@10", "R@10", "A@10")
    protocols = ("sampled", "full") if protocol is Protocol.both else (protocol.value,)
    counts = comparison.counts
    known = counts.get("known_hashtags", 0)
    names = {"sampled": "paper protocol (ground truth + 1,000 sampled hashtags)" if known > 1000 else
             f"paper protocol (all {known} known hashtags: fewer than 1,000 to sample)",
             "full": "full ranking (every known hashtag)"}
    groups = ("all", "cold") if counts.get("cold_cases") else ("all",)
    for name in protocols:
        for group in groups:
            title = f"{names[name]}, {counts.get('cases', 0)} test cases" if group == "all" else \
                f"{names[name]}, cold users only ({counts['cold_cases']} cases)"
            table = Table(title=title)
            table.add_column("method")
            for metric in metrics:
                table.add_column(metric, justify="right")
            for method in comparison.methods:
                scores = method.metrics[name][group]
                table.add_row(method.name, *(f"{scores[m]:.4f}" if m in scores else "–" for m in metrics))
            out.print(table)
    for method in comparison.methods:
        if method.note:
            out.print(f"{method.name}: {method.note}", highlight=False)
    out.print(
        f"split {comparison.split['train']}/{comparison.split['validation']}/{comparison.split['test']} "
        f"(seed {comparison.split['seed']}, by {comparison.split['by']}); "
        f"{counts.get('dropped_hashtags', 0)} test hashtags unseen in training dropped, "
        f"{counts.get('dropped_cases', 0)} cases left empty dropped",
        highlight=False,
    )


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

    _check_device(device)
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
        err.print(f"best configuration, epoch {epoch}: {_epoch_scores(loss, metric, best, OBJECTIVE)}",
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
