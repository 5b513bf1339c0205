"""The pictures are PNG files with what they promise: curves per epoch, bars per method."""

from __future__ import annotations

import math

import matplotlib.image
import pytest

from phr_cli.evaluation.plots import (
    METRICS,
    PlotError,
    curve_path,
    plot_comparison,
    plot_training_curve,
    training_curve,
)


def test_the_curve_lies_beside_the_checkpoint(tmp_path):
    assert curve_path(tmp_path / "gcn-phr.pt") == tmp_path / "gcn-phr-curve.png"


@pytest.mark.parametrize("metric", [0.5, math.nan])  # with and without a validation set
def test_training_curve_is_a_png(tmp_path, metric):
    history = [{"epoch": e, "loss": 1 / e, "metric": metric} for e in range(1, 6)]
    path = tmp_path / "curve.png"
    plot_training_curve(history, 3, "R@10", path)
    height, width, _ = matplotlib.image.imread(path).shape
    assert width > 600 and height > 300


def test_comparison_has_a_panel_per_protocol(tmp_path):
    scores = {metric: 0.5 for metric in METRICS}
    methods = [{"name": name, "metrics": {"sampled": {"all": scores}, "full": {"all": scores}}}
               for name in ("GCN-PHR", "user popularity")]
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    plot_comparison({"methods": [{**m, "metrics": {"full": m["metrics"]["full"]}} for m in methods],
                     "counts": {"cases": 10}}, one)
    plot_comparison({"methods": methods, "counts": {"cases": 10}}, two)
    assert matplotlib.image.imread(two).shape[0] > 1.5 * matplotlib.image.imread(one).shape[0]


def test_an_unwritable_picture_is_a_phr_error(tmp_path):
    with pytest.raises(PlotError, match="cannot write the picture"):
        plot_training_curve([{"epoch": 1, "loss": 1.0, "metric": 0.1}], 1, "R@10", tmp_path / "no" / "c.png")


def test_the_curve_s_legend_names_both_lines_and_covers_neither_axis():
    history = [{"epoch": e, "loss": 1 / e, "metric": 0.1 * e} for e in range(1, 6)]
    figure = training_curve(history, 5, "P@5")
    figure.canvas.draw()
    [legend] = figure.legends  # one legend for both axes, the figure's own
    labels = [text.get_text() for text in legend.get_texts()]
    assert labels[0].startswith("training loss") and labels[1] == "validation P@5 (full ranking)"
    assert labels[2] == "best epoch 5"
    box = legend.get_window_extent()
    for axis in figure.axes:  # the loss axis and its twin
        assert not box.overlaps(axis.get_window_extent())
