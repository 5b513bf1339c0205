"""Calibration of the default model's score parts on the validation posts.

Training learns the evidence weights and the graph gate on training posts, scored as if
each were new (counts leave the post out). How much each part should count at deployment
depends on what the held-out posts look like, which training posts cannot show: a time
split brings many users with no history, an item split only new videos. The popularity
baselines get this from validation (β of the mix is tuned there); the model gets it the
same way, with one scale per score part fitted to validation posts.

The fit is a listwise softmax loss over every known hashtag, convex in the scales, on one
half of the validation cases; the scales are kept only if the other half's P@5 rises, and
only with enough validation cases for that to mean something. Five numbers fitted on
thousands of cases: the validation figures stay meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from phr_cli.checkpoint import ModelScorer
from phr_cli.evaluate import TestCases, ranking_metrics
from phr_cli.graph import PostData

# Validation cases read for the fit (each costs parts x hashtags floats), and the fewest
# worth fitting on: each half then holds 100 cases, enough for P@5 to tell a change from noise.
MAX_CASES = 4096
MIN_CASES = 200
FIT_STEPS = 200


@dataclass
class Calibration:
    scales: dict[str, float]
    held_out_before: float  # P@5 of the held-out half before
    held_out_after: float  # and with the fitted scales
    kept: bool


def _parts(scorer: ModelScorer, posts: PostData, cases: TestCases, rows: np.ndarray) -> dict[str, Tensor]:
    """Each score part (cases, hashtags) of the chosen validation cases."""
    chunks = list(scorer.parts(cases.users[rows], posts.subset(cases.rows[rows])))
    return {name: torch.cat([chunk[name] for chunk in chunks]) for name in chunks[0]}


def _precision(parts: dict[str, Tensor], scales: Tensor, relevant: list[np.ndarray], seed: int) -> float:
    scores = sum(scale * part for scale, part in zip(scales, parts.values()))
    return ranking_metrics(scores, relevant, ks=(5,), rng=np.random.default_rng(seed))["P@5"]


def calibrate(scorer: ModelScorer, posts: PostData, cases: TestCases, seed: int = 0) -> Calibration | None:
    """Fit the scorer's `model.part_scales` on validation cases (see the module docstring); None when the
    model has a single part or fewer than MIN_CASES validation cases."""
    model = scorer.model
    if model.evidence is None or len(cases) < MIN_CASES:
        return None
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(cases))[:MAX_CASES]
    fit_rows, check_rows = chosen[: len(chosen) // 2], chosen[len(chosen) // 2:]
    model.part_scales.fill_(1.0)
    fit_parts = _parts(scorer, posts, cases, fit_rows)
    check_parts = _parts(scorer, posts, cases, check_rows)
    stacked = torch.stack(list(fit_parts.values()))  # (parts, cases, hashtags)
    targets = torch.zeros(stacked.shape[1:], device=stacked.device)
    for row, relevant in enumerate(cases.relevant[r] for r in fit_rows):
        targets[row, torch.as_tensor(relevant, device=stacked.device)] = 1.0 / len(relevant)

    scales = torch.ones(len(fit_parts), device=stacked.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([scales], lr=0.5, max_iter=FIT_STEPS, line_search_fn="strong_wolfe")

    def loss() -> Tensor:
        optimizer.zero_grad()
        logits = torch.einsum("p,pch->ch", scales, stacked)
        value = -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
        value.backward()
        return value

    optimizer.step(loss)
    fitted = scales.detach()
    check_relevant = [cases.relevant[r] for r in check_rows]
    before = _precision(check_parts, torch.ones_like(fitted), check_relevant, seed)
    after = _precision(check_parts, fitted, check_relevant, seed)
    kept = bool(torch.isfinite(fitted).all()) and after > before
    if kept:
        model.part_scales.copy_(fitted)
    return Calibration(dict(zip(fit_parts, fitted.tolist())), before, after, kept)
