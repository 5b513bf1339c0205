"""Printing results: the rich tables and summary lines of each command (what `inspect`
shows of a store, checkpoint, manifest or tune study; `extract`'s statuses; `train`'s outcome;
`recommend`'s suggestions and their explanations; `evaluate`'s comparison)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rich.table import Table

from phr_cli.cli.app import err, out, printable
from phr_cli.evaluation.measures import METRICS

if TYPE_CHECKING:
    from phr_cli.data.folders import FolderPosts
    from phr_cli.extract import ExtractReport
    from phr_cli.serving.explain import Because
    from phr_cli.serving.recommend import ClipRecommendation
    from phr_cli.training.comparison import Comparison, SeedSummary
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
    """`phr inspect`: a store, a checkpoint, a manifest or a tune study, as `summary["kind"]` says."""
    {"store": show_store, "checkpoint": show_checkpoint, "manifest": show_manifest,
     "study": show_study}[summary["kind"]](summary)


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
        *summary["stages"].items(),
        *([("warm-started from", f"{warm['path']} (sha256 {warm['sha256'][:12]}…)")]
          if (warm := summary.get("warm_start")) else []),
        *([("refreshed", f"{done['posts']} post(s) folded in from {done['store']}"
                         + (f" and the journal {done['journal']}" if done["journal"] else "") + f", {done['at']}")]
          if (done := summary.get("refreshed")) else []),
        ("trained on", provenance["store"] or "posts from no store"),
    ]
    if provenance["store"]:
        found = provenance["store_found"]
        rows.append(("store", f"{found} (found)" if found else "not found beside the checkpoint"
                     + (f" ({provenance['store_relative']})" if provenance["store_relative"] else "")
                     + " nor where it was: recommend and serve explain nothing without --store"))
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


def parameters(params: dict[str, Any]) -> str:
    """A trial's parameters on one line: `lr=0.00312 network.dim=64`."""
    return " ".join(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}"
                    for name, value in sorted(params.items()))


def show_study(summary: dict) -> None:
    """A `phr tune` study (`tune.read_study`): its task, its trials, the best, what was trained."""
    task, best, trained = summary["task"] or {}, summary["best"], summary["trained"]
    rows: list[tuple[str, object]] = [
        ("objective", summary["objective"]),
        ("task", ", ".join(f"{k} {v}" for k, v in task.items()) or "not recorded"),
        ("trials", f"{len(summary['trials'])}: " + ", ".join(f"{n} {s}" for s, n in summary["states"].items())
         if summary["trials"] else "none"),
        ("best trial", "none complete" if best is None else f"{best['trial']}: {best['value']:.4f}"),
    ]
    if trained is not None:
        rows.append(("trained", f"trial {trained.get('trial')} → {trained.get('checkpoint', 'its checkpoint')}"))
    _fields(f"phr tune study {printable(summary['study'])}", rows)
    if not summary["trials"]:
        return
    table = Table()
    table.add_column("trial", justify="right")
    table.add_column("state")
    table.add_column("value", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("parameters")
    for trial in summary["trials"]:
        table.add_row(str(trial["number"]), trial["state"],
                      "–" if trial["value"] is None else f"{trial['value']:.4f}",
                      "–" if trial["seconds"] is None else f"{trial['seconds']:.1f}",
                      printable(parameters(trial["params"])),
                      style="bold" if best is not None and trial["number"] == best["trial"] else None)
    out.print(table)


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
    """What was extracted and how fast: a rate only over videos extracted without a failure,
    and only the time the encoders took when they were loaded."""
    failed = f", {report.extract_failed} failed" if report.extract_failed else ""
    done = f"{report.posts} posts, {report.videos} videos: {report.succeeded} extracted{failed}, {report.reused} reused"
    if not report.succeeded:
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
    """`phr train`'s summary: the split, what the run did (fresh, resumed, extended or nothing),
    the best epoch, the curve, a line for each step after the epochs, warnings."""
    from phr_cli.training.train import Start

    result = outcome.result
    train_size, val_size, test_size = outcome.split_sizes
    out.print(
        f"{outcome.n_posts} posts (train {train_size}, validation {val_size}, test {test_size}); "
        f"left out: {', '.join(f'{k} {v}' for k, v in outcome.skipped.items() if v) or 'none'}",
        highlight=False,
    )
    run = len(result.history)
    if result.start is Start.FINISHED:
        how = "stopped early" if result.stopped_early else "all its epochs run"
        out.print(f"already finished after epoch {run} of {result.epochs} ({how}); nothing to do: pass --epochs "
                  f"above {result.epochs} to extend it", highlight=False, soft_wrap=True)
    else:
        first = (result.resumed_from_epoch or 0) + 1
        head = {Start.FRESH: "trained", Start.RESUMED: f"resumed after epoch {first - 1}:",
                Start.EXTENDED: f"extended after epoch {first - 1}:"}[result.start]
        tail = " (patience counted afresh, Adam's moments anew)" if result.start is Start.EXTENDED else ""
        out.print(f"{head} epochs {first}–{run} of at most {result.epochs}"
                  + (", stopped early" if result.stopped_early else "") + tail, highlight=False, soft_wrap=True)
    warm = result.warm_start
    if warm is not None:
        before = "" if warm.validation_metric is None or math.isnan(warm.validation_metric) else \
            f"; validation {metric_name} {warm.validation_metric:.4f} before the first epoch (epoch 0)"
        out.print(f"warm-started from {printable(warm.path)}: {warm.summary()}{before}", highlight=False,
                  soft_wrap=True)
    validation = "no validation set: the last epoch is kept" if math.isnan(result.best_metric) else \
        f"validation {metric_name} {result.best_metric:.4f}"
    out.print(
        f"best epoch {result.best_epoch}{' (the warm start, no epoch beat it)' if result.best_epoch == 0 else ''}: "
        f"{validation} on {result.device} → {printable(result.checkpoint_path)}",
        highlight=False, soft_wrap=True,  # a path broken over two lines cannot be copied
    )
    out.print(f"training curve → {printable(curve)}", highlight=False, soft_wrap=True)
    for stage, verdict in result.stages.items():
        out.print(f"{stage}: {verdict}", highlight=False, soft_wrap=True)
    for notice in outcome.notices:
        err.print(f"[yellow]warning:[/] {printable(notice)}", highlight=False, soft_wrap=True)


def describe(because: Because) -> str:
    """A suggestion's reasons in plain sentences, one a line (`phr recommend --explain`).

    Each sentence is escaped on its own (`printable` turns control characters such as a
    newline in a file name into visible escapes) and the lines are joined after, so that the
    cell breaks between sentences and nowhere else."""
    return "\n".join(printable(sentence) for sentence in because.sentences)


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
            reason = (describe(s.because),) if explain and s.because else ()
            table.add_row(str(s.rank), f"#{s.hashtag}", f"{s.score:.3f}", "✓" if s.used_before else "", *reason)
        out.print(table)


def show_clip_problems(results: list[ClipRecommendation], shown: str = "") -> None:
    """Each clip's notices (but `shown`, already said once for all), and one error line a clip
    that could not be ranked."""
    for result in results:
        if result.error:  # one line a failed clip: the error already carries its notice
            err.print(f"[bold red]error:[/] {printable(result.error)}", highlight=False, soft_wrap=True)
            continue
        for notice in result.notices:
            if notice == shown:
                continue
            err.print(f"{printable(result.clip)}: {printable(notice)}", highlight=False, soft_wrap=True)


SEGMENT_METRIC = "R"  # the --segments table's metric, at the smallest K (every metric is in --json)


def _metrics_table(title: str, ks: list[int], rows: list[tuple[str, Callable[[str], str]]]) -> None:
    """Methods as rows, one a K, METRICS as columns; cell(metric name) is a cell's text."""
    table = Table(title=title)
    table.add_column("method")
    table.add_column("K", justify="right")
    for metric in METRICS:
        table.add_column(metric, justify="right")
    for name, cell in rows:
        for index, k in enumerate(ks):
            table.add_row(name if index == 0 else "", str(k), *(cell(f"{m}@{k}") for m in METRICS),
                          end_section=index == len(ks) - 1)
    out.print(table)


def _value(scores: dict, tests: dict) -> Callable[[str], str]:
    """A method's mean, with its mark when its paired test against the model is significant."""
    return lambda m: f"{scores[m]:.4f}{tests.get(m, {}).get('mark', '')}" if m in scores else "–"


def _spread(means: dict, std: dict) -> Callable[[str], str]:
    return lambda m: f"{means[m]:.3f}±{std[m]:.3f}" if m in means else "–"


def _protocol_names(known: int) -> dict[str, str]:
    return {"sampled": "paper protocol (ground truth + 1,000 sampled hashtags)" if known > 1000 else
            f"paper protocol (all {known} known hashtags: fewer than 1,000 to sample)",
            "full": "full ranking (every known hashtag)",
            "stream": "stream (full ranking, each test post folded in once scored, in time order)"}


def show_comparison(comparison: Comparison, protocols: tuple[str, ...], segments: bool = False) -> None:
    """`phr evaluate`'s tables (a protocol and a group of users each), significance, method notes and split;
    with `segments`, the segments' table too."""
    counts = comparison.counts
    names = _protocol_names(counts.get("known_hashtags", 0))
    ks = comparison.methods[0].metrics["ks"] if comparison.methods else []
    groups = ("all", "cold") if counts.get("cold_cases") else ("all",)
    for name in protocols:
        for group in groups:
            title = f"{names[name]}, {counts.get('cases', 0)} test cases" if group == "all" else \
                f"{names[name]}, cold users only ({counts['cold_cases']} cases)"
            _metrics_table(title, ks, [(m.name, _value(m.metrics[name][group],
                                                        m.significance.get(name, {}) if group == "all" else {}))
                                       for m in comparison.methods])
    tested = next((list(m.significance[p]) for m in comparison.methods[1:] for p in m.significance), [])
    if tested:
        out.print(f"* p < 0.05, ** p < 0.01: differs from {comparison.methods[0].name} on {', '.join(tested)} "
                  f"(paired t-test and Fisher's randomisation test, both Holm-corrected for "
                  f"{len(comparison.methods) - 1} baselines; p-values in --json)", highlight=False, soft_wrap=True)
    if segments:
        _segments_table(ks, names[protocols[-1]], [(m.name, m.segments[protocols[-1]]) for m in comparison.methods])
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
    source = comparison.provenance
    if source:
        out.print(f"checkpoint {printable(source['checkpoint'])} (sha256 {source['checkpoint_sha256'][:12]}…) on "
                  f"{printable(source['store'])}"
                  + ("; RANDOM encoder weights (the store's)" if source["random_weights"] else ""),
                  highlight=False, soft_wrap=True)


def show_unseen(unseen: dict) -> None:
    """`phr evaluate --unseen-hashtags`: each method's figures on the unseen and on the seen test hashtags."""
    counts = unseen["counts"]
    table = Table(title=f"hashtags unseen in training: {counts['unseen_hashtags']} new among the candidates, "
                        f"{counts['unseen_cases']} test posts with one")
    table.add_column("method")
    figures = list(next(iter(unseen["methods"].values()), {}))
    for figure in figures:
        table.add_column(figure, justify="right")
    for name, values in unseen["methods"].items():
        table.add_row(name, *(f"{values[f]:.4f}" for f in figures))
    out.print(table)
    for name, note in unseen["notes"].items():
        out.print(f"{name}: {note}", highlight=False)


def show_seed_summary(summary: SeedSummary, protocols: tuple[str, ...], segments: bool = False) -> None:
    """`phr evaluate` of several checkpoints: mean ± standard deviation over them, a table a protocol."""
    first = summary.comparisons[0]
    names = _protocol_names(first.counts.get("known_hashtags", 0))
    ks = first.methods[0].metrics["ks"] if first.methods else []
    seeds = len(summary.comparisons)
    for name in protocols:
        _metrics_table(f"{names[name]}: mean ± standard deviation over {seeds} checkpoints (seeds "
                       f"{', '.join(str(c.split['seed']) for c in summary.comparisons)})", ks,
                       [(m["name"], _spread(m["metrics"][name]["all"], m["std"][name]["all"]))
                        for m in summary.methods])
    if segments:
        _segments_table(ks, f"{names[protocols[-1]]}, mean of {seeds} checkpoints",
                        [(m["name"], m["segments"][protocols[-1]]) for m in summary.methods])
    out.print("standard deviations of the segments, and each checkpoint's own figures, paired tests and "
              "segments: --json", highlight=False)


def _segments_table(ks: list[int], title: str, rows: list[tuple[str, dict]]) -> None:
    """One metric by segment (columns) for each method (rows), with the catalogue coverage."""
    metric = f"{SEGMENT_METRIC}@{min(ks)}"
    first = rows[0][1]
    columns = [(kind, segment) for kind in ("user activity", "hashtag frequency", "item") for segment in first[kind]]
    coverage = next(key for key in first if key.startswith("coverage@"))
    table = Table(title=f"{title}: {metric} by segment (user's training posts; hashtag frequency; video); "
                  f"{coverage} of all hashtags")
    table.add_column("method")
    for kind, segment in columns:
        table.add_column(f"{segment} video" if kind == "item" else segment, justify="right")
    table.add_column(coverage, justify="right")
    table.add_row("cases", *(f"{first[kind][segment]['cases']:g}" for kind, segment in columns), "", end_section=True)
    for name, values in rows:
        table.add_row(name, *(f"{values[kind][segment][metric]:.4f}" if metric in values[kind][segment] else "–"
                              for kind, segment in columns), f"{values[coverage]:.4f}")
    out.print(table)
