"""Pictures of a training run and of an evaluation, as PNG files.

Figures are drawn on matplotlib's Agg canvas directly (`Figure`, not pyplot), so that no
global backend or state is changed and no display is needed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from phr_cli.errors import PhrError
from phr_cli.evaluation.measures import KS, metric_names
from phr_cli.files import atomic_file

METRICS = tuple(metric_names(KS))
PROTOCOL_TITLES = {"sampled": "paper protocol (ground truth + up to 1,000 sampled)",
                   "full": "full ranking (every known hashtag)"}


class PlotError(PhrError):
    """A picture that cannot be written (its folder is missing or read-only)."""


def curve_path(checkpoint: Path) -> Path:
    """Where `phr train` draws the checkpoint's training curve: beside it."""
    return checkpoint.with_name(checkpoint.stem + "-curve.png")


def _save(figure: Any, path: Path) -> None:
    path = Path(path)
    try:
        with atomic_file(path) as temporary:
            figure.savefig(temporary, format="png", dpi=120)
    except OSError as error:
        raise PlotError(f"{path}: cannot write the picture: {error.strerror or error}") from None


def plot_training_curve(history: list[dict[str, float]], best_epoch: int, metric_name: str, path: Path) -> None:
    """`training_curve` as a PNG at path."""
    _save(training_curve(history, best_epoch, metric_name), path)


def training_curve(history: list[dict[str, float]], best_epoch: int, metric_name: str) -> Any:
    """Loss (left axis) and the validation metric (right axis) per epoch, the best epoch marked,
    as a matplotlib Figure. The legend lies below both axes: drawn inside either, the other
    axis's line passes over or under it."""
    from matplotlib.figure import Figure

    epochs = [int(row["epoch"]) for row in history]
    losses = [row["loss"] for row in history]
    metrics = [row["metric"] for row in history]
    figure = Figure(figsize=(7, 4), layout="constrained")
    loss_axis = figure.add_subplot()
    loss_axis.plot(epochs, losses, marker="o", color="tab:blue", label="training loss (BPR + λ‖Θ‖²)")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss", color="tab:blue")
    if epochs:
        loss_axis.set_xticks(epochs if len(epochs) <= 20 else loss_axis.get_xticks())
    handles = list(loss_axis.get_lines())
    has_metric = any(not math.isnan(m) for m in metrics)
    if has_metric:
        metric_axis = loss_axis.twinx()
        handles += metric_axis.plot(epochs, metrics, marker="s", color="tab:orange",
                                    label=f"validation {metric_name} (full ranking)")
        metric_axis.set_ylabel(f"validation {metric_name}", color="tab:orange")
    if best_epoch in epochs:
        handles.append(loss_axis.axvline(best_epoch, color="tab:green", linestyle="--",
                                         label=f"best epoch {best_epoch}"))
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small")
    title = "GCN-PHR training" + ("" if has_metric else " (no validation set: the last epoch is kept)")
    loss_axis.set_title(title)
    return figure


def plot_comparison(comparison: dict, path: Path) -> None:
    """One panel per protocol (sampled, full): every metric as grouped bars, one colour per method;
    a summary of several seeds (`comparison.SeedSummary.to_dict`) draws its means with ±1 standard
    deviation as error bars."""
    from matplotlib.figure import Figure

    methods = comparison["methods"]
    protocols = [name for name in ("sampled", "full", "stream") if methods and name in methods[0]["metrics"]]
    if not protocols:
        raise PlotError(f"{path}: nothing to draw (no method was evaluated)")
    figure = Figure(figsize=(8 + 1.5 * len(methods), 4.2 * len(protocols)), layout="constrained")
    axes = figure.subplots(len(protocols), 1, squeeze=False)[:, 0]
    width = 0.8 / len(methods)
    seeds = f", mean ± sd of {comparison['seeds']} seeds" if "seeds" in comparison else ""
    for axis, protocol in zip(axes, protocols):
        for index, method in enumerate(methods):
            scores = method["metrics"][protocol]["all"]
            values = [scores.get(metric, 0.0) for metric in METRICS]
            spread = method.get("std", {}).get(protocol, {}).get("all")
            errors = [spread.get(metric, 0.0) for metric in METRICS] if spread else None
            positions = [x + (index - (len(methods) - 1) / 2) * width for x in range(len(METRICS))]
            axis.bar(positions, values, width, yerr=errors, capsize=2 if errors else 0, label=method["name"])
        axis.set_xticks(range(len(METRICS)), METRICS, rotation=45, ha="right")
        axis.set_ylim(0, 1.05)  # a bar at 1.0 stays visible above the frame
        axis.set_ylabel("score")
        axis.set_title(PROTOCOL_TITLES[protocol] + f", {comparison['counts'].get('cases', 0)} test cases{seeds}")
        axis.grid(axis="y", alpha=0.3)
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    _save(figure, path)
