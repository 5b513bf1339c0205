"""The `phr` command line: parse options, call into phr_cli, print the result.

Heavy modules (torch, the encoders) are imported inside the commands so that
`phr --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from phr_cli.errors import PhrError

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
    err.print(f"[bold red]error:[/] {printable(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def printable(path: Path | str) -> str:
    """A file name on one line: control characters (a newline in a name) escaped, and
    rich markup characters escaped."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))
    return escape(text)


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
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding processes (default: one per core; 0 decodes in-process). With --ray: at most this many decode tasks at once (default: as the cluster's CPUs allow)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Frames per encoder batch."),
    weights_dir: Optional[Path] = WeightsDirOption,
    random_weights: bool = RandomWeightsOption,
    float16: bool = typer.Option(False, "--float16", help="Store visual/acoustic features as float16."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first file that fails (what is finished is kept)."),
    file_timeout: float = typer.Option(300.0, "--file-timeout", help="Seconds a decoding worker may spend on one file before it is stopped."),
    precision: str = typer.Option("fp32", "--precision", help="Autocast of ResNet50 and VGGish: fp32 (exact), bf16 or fp16 (GPU tensor cores; recorded in the store)."),
    ray: bool = typer.Option(False, "--ray", help="Decode and encode on a Ray cluster (pip install 'phr\\[ray]'); the store is the same."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="ADDRESS", help="With --ray: the cluster to join (host:port, ray://host:port); default $RAY_ADDRESS, else a local cluster."),
    ray_encoders: Optional[int] = typer.Option(None, "--ray-encoders", min=1, help="With --ray: encoder actors (default: one per GPU of the cluster, else 1)."),
) -> None:
    """Decode videos and encode them (ResNet50, VGGish, MiniLM) into an HDF5 feature store."""
    if (ray_address or ray_encoders) and not ray:
        fail("--ray-address and --ray-encoders need --ray", code=2)
    if ray:
        try:
            import ray.data  # noqa: F401 - only to say how to install it when missing
        except ImportError:
            fail("--ray needs Ray: pip install 'phr[ray]'", code=2)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from phr_cli.decode import DecodeLimits
    from phr_cli.encoders.registry import PRECISIONS
    from phr_cli.extract import ExtractOptions, extract as run_extract
    from phr_cli.statuses import FAILED_STATUSES, Status

    if file_timeout <= 0:
        fail("--file-timeout must be positive", code=2)
    if precision not in PRECISIONS:
        fail(f"--precision {precision!r}: use {', '.join(PRECISIONS)}", code=2)
    _quiet_libraries()
    options = ExtractOptions(device=device, workers=workers, batch_size=batch_size,
                             weights_dir=weights_dir, random_weights=random_weights,
                             feature_dtype="float16" if float16 else "float32", strict=strict,
                             limits=DecodeLimits(seconds_per_file=file_timeout), precision=precision,
                             replace=replace,
                             ray=ray, ray_address=ray_address, ray_encoders=ray_encoders)
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
        if outcome.status in FAILED_STATUSES:
            progress.console.print(f"[yellow]{printable(outcome.path)}[/]: {outcome.status}: "
                                   f"{printable(outcome.reason)}", highlight=False, soft_wrap=True)

    try:
        with progress:
            report = run_extract(videos, store, options, on_progress)
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
    path: Optional[Path] = typer.Argument(None, help="A feature store, a checkpoint or a posts.csv / "
                                          "posts.jsonl manifest (default: --store)."),
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="The HDF5 feature store (when no PATH is given)."),
    failures: bool = typer.Option(False, "--failures", help="List only the files that failed."),
    limit: int = typer.Option(20, "--limit", min=1, help="Rows a list shows (files, users, hashtags)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """Show what a store, checkpoint or manifest holds: files with status and reason, users, hashtags."""
    from phr_cli.inspection import inspect_path

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
    _fields(f"phr store {summary['store']}", rows)
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
    rows: list[tuple[str, object]] = [
        ("model", ", ".join(f"{k} {v}" for k, v in summary["model_config"].items())),
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
    dim: int = typer.Option(64, help="Latent dimension."),
    layers: int = typer.Option(1, help="Stacked propagation layers."),
    fusion: str = typer.Option("concat", help="concat (Eq. 7) or sum (Eq. 8)."),
    variant: str = typer.Option("full", help="full, no_attention (Variant-I), no_user_guidance "
                                "(Variant-II) or no_hashtag_guidance (Variant-III)."),
    content_only: bool = typer.Option(False, "--content-only", help="Drop graph messages (ablation)."),
    residual: bool = typer.Option(False, "--residual/--no-residual", help="Keep each node's own embedding "
                                  "beside its messages (a self-loop); the paper's layer has none."),
    video_messages: str = typer.Option("mean", "--video-messages", help="mean (default: Eq. 6's sum divided "
                                       "by the node's number of groups) or sum (Eq. 6 as printed)."),
    epochs: int = typer.Option(50, help="Maximum epochs."),
    batch_size: int = typer.Option(1024, "--batch-size", help="BPR triples per step."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    l2: float = typer.Option(1e-4, help="λ of Eq. 11 on the batch's ID embeddings."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", help="Adam weight decay (the paper's code used 0.1)."),
    negatives: int = typer.Option(1, help="Negative hashtags per positive."),
    patience: int = typer.Option(5, help="Epochs without validation gain before stopping."),
    seed: int = typer.Option(0, help="Seed of the split, initialisation and sampling."),
    split_by: str = typer.Option("post", "--split-by", help="post: random posts; item: whole videos held out."),
    resume: bool = typer.Option(True, "--resume/--restart", help="Continue an interrupted checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished checkpoint trained with "
                                   "other settings (refused without it)."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Training processes on this machine (torchrun, "
                              "DistributedDataParallel: gloo on CPU, NCCL with one GPU each)."),
) -> None:
    """Train GCN-PHR on the store's posts (8:1:1 split) and write a checkpoint."""
    if nproc > 1:
        from phr_cli.distributed import launch

        arguments = sys.argv[sys.argv.index("train") + 1:]
        raise typer.Exit(launch(nproc, ["train", *_without_option(arguments, "--nproc")]))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from phr_cli.config import TrainConfig
    from phr_cli.distributed import launched_rank
    from phr_cli.model import ModelConfig
    from phr_cli.train import train_from_store

    other_rank = launched_rank() != 0  # under torchrun only rank 0 reports; errors print on every rank
    out.quiet = other_rank

    try:
        model_config = ModelConfig(dim=dim, layers=layers, fusion=fusion, variant=variant,
                                   propagate=not content_only, residual=residual,
                                   video_messages=video_messages)
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, l2=l2,
                             weight_decay=weight_decay, negatives=negatives, patience=patience,
                             seed=seed, device=device)
    except PhrError as error:
        fail(str(error), code=2)
    if not other_rank:
        err.print(f"training on {store}; checkpoint {checkpoint}", highlight=False)
    progress = Progress(
        TextColumn("epoch"), MofNCompleteColumn(), BarColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  val {task.fields[metric]:.4f}  best {task.fields[best]:.4f}"),
        TimeElapsedColumn(), console=err, disable=other_rank,
    )
    task = progress.add_task("train", total=epochs, loss=float("nan"), metric=float("nan"), best=float("nan"))

    def on_epoch(epoch: int, loss: float, metric: float, best: float) -> None:
        progress.update(task, completed=epoch, loss=loss, metric=metric, best=best)

    try:
        with progress:
            outcome = train_from_store(store, checkpoint, model_config, config, split_by, on_epoch, resume,
                                       overwrite)
    except PhrError as error:
        fail(str(error))
    result = outcome.result
    train_size, val_size, test_size = outcome.split_sizes
    out.print(
        f"{outcome.n_posts} posts (train {train_size}, validation {val_size}, test {test_size}); "
        f"left out: {', '.join(f'{k} {v}' for k, v in outcome.skipped.items() if v) or 'none'}",
        highlight=False,
    )
    resumed = f", resumed after epoch {result.resumed_from_epoch}" if result.resumed_from_epoch else ""
    stopped = ", stopped early" if result.stopped_early else ""
    out.print(
        f"best epoch {result.best_epoch}: validation {config.validation_metric} {result.best_metric:.4f} "
        f"on {result.device}{resumed}{stopped} → {result.checkpoint_path}",
        highlight=False,
    )
    for notice in outcome.notices:
        err.print(f"[yellow]warning:[/] {printable(notice)}", highlight=False, soft_wrap=True)


@app.command()
def recommend(
    clips: list[Path] = typer.Argument(..., help="Video files, or folders of videos."),
    user: Optional[str] = typer.Option(None, "--user", "-u", help="Who posts the clip (as in the training posts)."),
    caption: str = typer.Option("", "--caption", help="The clip's description; its hashtags are never suggested."),
    top: int = typer.Option(10, "--top", "-k", min=1, help="How many hashtags."),
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, "--checkpoint", help="Checkpoint from `phr train`."),
    store: Optional[Path] = typer.Option(None, "--store", help="Store whose features are reused for known clips "
                                         "(default: the one the checkpoint was trained on)."),
    exclude_used: bool = typer.Option(False, "--exclude-used", help="Leave out hashtags the user has used before."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    device: str = DeviceOption,
    weights_dir: Optional[Path] = WeightsDirOption,
) -> None:
    """Rank hashtags for new clips, personalised to --user."""
    from phr_cli.devices import resolve_device
    from phr_cli.posts import find_videos
    from phr_cli.recommend import Recommender

    paths: list[Path] = []
    for clip in clips:
        paths.extend(find_videos(clip) if clip.is_dir() else [clip])
    if not paths:
        fail(f"no video files found in {', '.join(map(str, clips))}")
    if not checkpoint.is_file():
        fail(f"{checkpoint}: no checkpoint; run `phr train --checkpoint {checkpoint}` first")
    _quiet_libraries()
    try:
        recommender = Recommender(checkpoint, resolve_device(device), weights_dir, store)
        results = recommender.recommend(paths, user, caption, top, exclude_used)
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
            for column, justify in (("rank", "right"), ("hashtag", "left"), ("score", "right"),
                                    ("used before", "center")):
                table.add_column(column, justify=justify)
            for s in result.suggestions:
                table.add_row(str(s.rank), f"#{s.hashtag}", f"{s.score:.3f}", "✓" if s.used_before else "")
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
def evaluate(
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="Feature store the checkpoint was trained on."),
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, "--checkpoint", help="Checkpoint from `phr train`."),
    protocol: str = typer.Option("both", "--protocol", help="sampled (the paper's: ground truth + 1,000 "
                                 "random hashtags), full (every known hashtag) or both."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also fit and score the baselines."),
    seed: int = typer.Option(0, help="Seed of the sampled negatives and tie-breaking."),
    device: str = DeviceOption,
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """P@K, R@K and A@K (K = 5, 10) on the test split: GCN-PHR next to the baselines."""
    from phr_cli.comparison import BASELINES, evaluate_store
    from phr_cli.devices import resolve_device

    if protocol not in ("sampled", "full", "both"):
        fail(f"--protocol must be sampled, full or both, not {protocol!r}", code=2)
    if not checkpoint.is_file():
        fail(f"{checkpoint}: no checkpoint; run `phr train --checkpoint {checkpoint}` first")
    try:
        with err.status("fitting baselines and scoring the test split…"):
            comparison = evaluate_store(store, checkpoint, protocol, BASELINES if baselines else (),
                                        resolve_device(device), seed)
    except PhrError as error:
        fail(str(error))
    for notice in comparison.notices:
        err.print(f"[yellow]warning:[/] {printable(notice)}", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps(comparison.to_dict(), indent=2))
        return
    metrics = ("P@5", "R@5", "A@5", "P@10", "R@10", "A@10")
    protocols = ("sampled", "full") if protocol == "both" else (protocol,)
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
