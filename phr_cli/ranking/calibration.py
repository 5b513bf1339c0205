"""Calibration of the default model's score parts on the validation posts.

Training learns the evidence weights and the graph gate on training posts, scored as if
each were new (counts leave the post out). How much each part should count at deployment
depends on what the held-out posts look like, which training posts cannot show: a time
split brings many users with no history, an item split only new videos. The popularity
baselines get this from validation (β of the mix is tuned there); the model gets it the
same way, with one scale per score part chosen on validation posts.

The scales maximise the validation metric itself (P@5 by default), by coordinate search
over multiplicative steps on one half of the validation cases; they are kept only if the
other half's metric rises too, and only with enough validation cases for that to mean
something. A smooth surrogate (a listwise softmax loss, convex in the scales) was tried
first: on Last.fm's time split it chose scales whose P@5 was 12 % below the search's,
because the likelihood spreads weight over every hashtag while P@5 only asks for the
right five on top, which can hinge on a part that merely breaks ties (popularity).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from phr_cli.data.cases import TestCases
from phr_cli.data.graph import PostData
from phr_cli.evaluation.metrics import ranking_metrics
from phr_cli.ranking.scorer import ModelScorer
from phr_cli.ranking.validation import MIN_FIT_CASES, validation_halves

# Validation cases read for the search (each costs parts x hashtags floats); the fewest
# worth searching on is `validation.MIN_FIT_CASES`.
MAX_CASES = 4096
# Each round tries every part's scale times each step (a scale at 0 tries each step as a
# value instead); a step is taken when the metric rises. Three rounds settle on Last.fm.
STEPS = (0.0, 0.1, 0.3, 0.6, 1.5, 3.0, 10.0)
ROUNDS = 3


@dataclass
class Calibration:
    scales: dict[str, float]
    held_out_before: float  # the metric on the held-out half before
    held_out_after: float  # and with the chosen scales
    kept: bool
    metric: str = "P@5"


def _parts(scorer: ModelScorer, posts: PostData, cases: TestCases, rows: np.ndarray) -> dict[str, Tensor]:
    """Each score part (cases, hashtags) of the chosen validation cases."""
    chunks = list(scorer.parts(cases.users[rows], posts.subset(cases.rows[rows])))
    return {name: torch.cat([chunk[name] for chunk in chunks]) for name in chunks[0]}


def _metric(parts: Tensor, scales: Tensor, relevant: list[np.ndarray], metric: str, seed: int) -> float:
    scores = torch.einsum("p,pch->ch", scales, parts)
    k = int(metric.split("@")[1])
    return ranking_metrics(scores, relevant, ks=(k,), rng=np.random.default_rng(seed))[metric]


def _search(parts: Tensor, relevant: list[np.ndarray], metric: str, seed: int, start: Tensor) -> Tensor:
    """Scales (parts,) that maximise the metric on these cases, from `start`."""
    scales = start.clone()
    best = _metric(parts, scales, relevant, metric, seed)
    for _ in range(ROUNDS):
        for part in range(len(parts)):
            for step in STEPS:
                trial = scales.clone()
                trial[part] = scales[part] * step if scales[part] != 0 else step
                value = _metric(parts, trial, relevant, metric, seed)
                if value > best:
                    best, scales = value, trial
    return scales


def calibrate(scorer: ModelScorer, posts: PostData, cases: TestCases, metric: str = "P@5",
              seed: int = 0, on_start: Callable[[], None] | None = None) -> Calibration | None:
    """Choose the scorer's `model.part_scales` on validation cases (see the module
    docstring), starting from the model as trained (`PHRModel.trained_part_scales`: PITF's
    factors, fitted beside it, at 0); None when the model has a single part or fewer than
    MIN_FIT_CASES cases, and then the model keeps its trained scales. on_start() is called
    when the search begins."""
    model = scorer.model
    start = model.trained_part_scales()
    model.part_scales.copy_(start)
    if model.evidence is None or len(cases) < MIN_FIT_CASES:
        return None
    if on_start is not None:
        on_start()
    fit_rows, check_rows = validation_halves(len(cases), seed, MAX_CASES)
    model.part_scales.fill_(1.0)  # the parts as they are, each scaled below
    fit_parts = _parts(scorer, posts, cases, fit_rows)
    scales = _search(torch.stack(list(fit_parts.values())), [cases.relevant[r] for r in fit_rows], metric, seed,
                     start)
    check_parts = torch.stack(list(_parts(scorer, posts, cases, check_rows).values()))
    check_relevant = [cases.relevant[r] for r in check_rows]
    before = _metric(check_parts, start, check_relevant, metric, seed)
    after = _metric(check_parts, scales, check_relevant, metric, seed)
    kept = after > before
    model.part_scales.copy_(scales if kept else start)
    return Calibration(dict(zip(fit_parts, scales.tolist())), before, after, kept, metric)
