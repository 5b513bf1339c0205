"""Printing results: the rich tables and summary lines of each command (what `inspect`
shows of a store, checkpoint or manifest; `extract`'s statuses; `train`'s outcome;
`recommend`'s suggestions and their explanations; `evaluate`'s comparison)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rich.table import Table

from phr_cli.cli.app import err, out, printable

if TYPE_CHECKING:
    from phr_cli.data.folders import FolderPosts
    from phr_cli.extract import ExtractReport
    from phr_cli.serving.explain import Because
    from phr_cli.serving.recommend import ClipRecommendation
    from phr_cli.training.comparison import Comparison
    from phr_cli.training.train import StoreTraining


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


def show_inspection(summary: dict) -> None:
    """`phr inspect`: a store, a checkpoint or a manifest, as `summary["kind"]` says."""
    {"store": show_store, "checkpoint": show_checkpoint, "manifest": show_manifest}[summary["kind"]](summary)


def show_store(summary: dict) -> None:
    """A store's fields, files, users and hashtags; with --failures only its failed files."""
    if summary["failures_only"]:
        _files(summary, f"failed files of {printable(summary['store'])}")
        if not summary["files"]:
            out.print(f"no failed files in {printable(summary['store'])}", highlight=False)
        return
    rows = [(name, summary[name]) for name in ("phr_version", "updated", "videos", "posts", "users", "hashtags",
                                               "text_only_posts", "unmerged_segments") if name in summary]
    rows += [(name, ", ".join(f"{k} {v}" for k, v in summary[name].items()))
             for name in ("video_statuses", "post_statuses") if name in summary]
    rows += [(f"{modality} encoder", f"{e['name']} ({e['version']}); weights {e['weights']}")
             for modality, e in summary["encoders"].items()]
    rows += [("folder", f"{folder}: {count} posts") for folder, count in summary.get("folders", [])]
    _fields(f"phr store {printable(summary['store'])}", rows)
    _files(summary, "files")
    _counts(summary.get("top_users", []), summary.get("users", 0), ("user", "posts"))
    _counts(summary.get("top_hashtags", []), summary.get("hashtags", 0), ("hashtag", "posts"))
    if summary["failed_files"]:
        out.print(f"{summary['failed_files']} file(s) failed (`phr inspect --failures` lists only those)",
                  highlight=False)


def _files(summary: dict, title: str) -> None:
    """The files table: folder, file (relative to it), status, reason."""
    files = summary["files"]
    if not files:
        return
    table = Table(title=f"{title} (first {len(files)} of {summary['files_listed']})"
                  if summary["files_listed"] > len(files) else title)
    for column in ("folder", "file", "status", "reason"):
        table.add_column(column)
    for file in files:
        table.add_row(printable(file["folder"]), printable(file["file"]), file["status"], printable(file["reason"]))
    out.print(table)


def show_checkpoint(summary: dict) -> None:
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


def show_manifest(summary: dict) -> None:
    _fields(f"posts manifest {summary['manifest']}",
            [(name, summary[name]) for name in ("posts", "text_only_posts", "users", "hashtags") if name in summary])
    _counts(summary.get("top_users", []), summary.get("users", 0), ("user", "posts"))
    _counts(summary.get("top_hashtags", []), summary.get("hashtags", 0), ("hashtag", "posts"))
    problems = summary["problems"]
    for problem in problems:
        err.print(f"[yellow]problem:[/] {printable(problem)}", highlight=False, soft_wrap=True)
    if summary.get("problem_count", len(problems)) > len(problems):
        err.print(f"… and {summary['problem_count'] - len(problems)} more problems", highlight=False)


def show_folders(store: Path, folders: list[FolderPosts]) -> None:
    """`phr store folders`: a folder a row, with its posts, their statuses and whether it is still there."""
    from phr_cli.data.folders import UNRECORDED

    if not folders:
        out.print(f"{printable(store)} has no posts", highlight=False)
        return
    table = Table(title=f"folders of {printable(store)}")
    table.add_column("folder")
    table.add_column("posts", justify="right")
    table.add_column("statuses")
    table.add_column("there")
    for each in folders:
        table.add_row(printable(each.folder or UNRECORDED), str(each.posts),
                      ", ".join(f"{status} {count}" for status, count in each.statuses.items()),
                      "yes" if each.exists else "[yellow]no[/]")
    out.print(table)
    if not all(each.exists for each in folders):
        out.print("a folder that is not there: `phr store rename OLD NEW` once its videos are in NEW, "
                  "or `phr store drop FOLDER`", highlight=False, soft_wrap=True)


def show_extract(report: ExtractReport, random_weights: bool, replace: bool) -> None:
    """`phr extract`'s notices, missing files, table of statuses and summary lines."""
    from phr_cli.data.statuses import Status

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
    table.add_row("retried (failed before)", str(report.retried))
    out.print(table)
    out.print(extract_summary(report, random_weights), highlight=False, soft_wrap=True)
    if report.retried:
        out.print(f"retried {report.retried} file(s) that had failed: {report.retried_ok} now succeeded, "
                  f"{report.retried_failed} failed again", highlight=False, soft_wrap=True)
    if not report.stopped_early:
        changes = report.post_changes
        out.print(f"posts: {changes.added} added, {changes.updated} updated, "
                  f"{changes.unchanged} unchanged, {changes.removed} removed (this folder); "
                  f"{changes.kept} kept (other folders)" + (" — started over (--replace)" if replace else ""),
                  highlight=False, soft_wrap=True)


def extract_summary(report: ExtractReport, random_weights: bool) -> str:
    """What was extracted and how fast: a rate only over videos extracted, and only the time
    the encoders took when they were loaded."""
    done = f"{report.posts} posts, {report.videos} videos: {report.extracted} extracted, {report.reused} reused"
    if not report.extracted:
        loaded = f", {report.load_seconds:.1f} s loading the encoders" if report.encoders_loaded else \
            "; nothing to encode, encoders not loaded"
        return f"{done} in {report.seconds:.1f} s{loaded}"
    return (f"{done} in {report.seconds:.1f} s ({report.videos_per_second:.2f} videos/s after "
            f"{report.load_seconds:.1f} s loading the encoders)"
            + (" with RANDOM encoder weights" if random_weights else ""))


def epoch_scores(loss: float, metric: float, best: float, metric_name: str) -> str:
    """An epoch's loss and validation metric as progress shows them."""
    validation = "no validation set" if math.isnan(metric) else f"val {metric_name} {metric:.4f}  best {best:.4f}"
    return f"loss {loss:.4f}  {validation}"


def show_training(outcome: StoreTraining, metric_name: str, curve: Path) -> None:
    """`phr train`'s summary: the split, the best epoch, the curve, the re-ranker's verdict, warnings."""
    result = outcome.result
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
    out.print(f"training curve → {printable(curve)}", highlight=False, soft_wrap=True)
    reranking = result.reranking
    if reranking is not None:
        verdict = "kept" if reranking["kept"] else "left out (the calibrated model ranks as well)"
        out.print(f"re-ranker: {verdict}; held-out validation {reranking['metric']} "
                  f"{reranking['held_out_before']:.4f} → {reranking['held_out_after']:.4f}", highlight=False)
    for notice in outcome.notices:
        err.print(f"[yellow]warning:[/] {printable(notice)}", highlight=False, soft_wrap=True)


def describe(because: Because) -> str:
    """A suggestion's reasons on a few short lines (`phr recommend --explain`)."""
    parts = ", ".join(f"{part.name} {part.share:+.0%}" for part in because.parts)
    lines = [f"score: {parts}", f"you used it {because.uses}×"]
    if because.own_videos:
        lines.append("your videos: " + ", ".join(f"{v.video} (α {v.weight:.2f})" for v in because.own_videos))
    if because.similar_videos:
        lines.append("similar: " + ", ".join(f"{v.video} ({v.weight:.2f})" for v in because.similar_videos))
    return "\n".join(lines)


def show_recommendations(results: list[ClipRecommendation], user: str | None, explain: bool) -> None:
    """One table a ranked clip: rank, hashtag, score, whether the user used it (and, with
    `explain`, why it was suggested)."""
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


def show_clip_problems(results: list[ClipRecommendation]) -> None:
    """Each clip's notices, and one error line a clip that could not be ranked."""
    for result in results:
        if result.error:  # one line a failed clip: the error already carries its notice
            err.print(f"[bold red]error:[/] {printable(result.error)}", highlight=False, soft_wrap=True)
            continue
        for notice in result.notices:
            err.print(f"{printable(result.clip)}: {printable(notice)}", highlight=False, soft_wrap=True)


METRICS = ("P@5", "R@5", "A@5", "P@10", "R@10", "A@10")


def show_comparison(comparison: Comparison, protocols: tuple[str, ...]) -> None:
    """`phr evaluate`'s tables (a protocol and a group of users each), method notes and split."""
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
            for metric in METRICS:
                table.add_column(metric, justify="right")
            for method in comparison.methods:
                scores = method.metrics[name][group]
                table.add_row(method.name, *(f"{scores[m]:.4f}" if m in scores else "–" for m in METRICS))
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
