"""Calibration of the default model's score parts on planted validation posts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phr_cli.data.cases import build_cases
from phr_cli.data.graph import PostData, build_graph
from phr_cli.model.config import ModelConfig, NetworkConfig
from phr_cli.model.phr import PHRModel
from phr_cli.ranking.calibration import calibrate
from phr_cli.ranking.scorer import ModelScorer
from phr_cli.ranking.validation import MIN_FIT_CASES

WIDTHS = {"visual": 6, "acoustic": 3, "textual": 4}
N_USERS = 30
N_COMMON = 6

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def planted_posts(n_posts: int, seed: int, with_common: bool) -> PostData:
    """Each user puts their own hashtag on every post; training posts also carry one of a
    few common hashtags, more popular than any user's own, which new posts never carry."""
    rng = np.random.default_rng(seed)
    users = rng.integers(N_USERS, size=n_posts)
    return PostData(
        users=[f"u{u}" for u in users],
        items=[f"v{seed}-{p}" for p in range(n_posts)],
        hashtags=[[f"own{u}"] + ([f"common{rng.integers(N_COMMON)}"] if with_common else []) for u in users],
        features={m: rng.normal(size=(n_posts, w)).astype(np.float32) for m, w in WIDTHS.items()},
        masks={m: np.ones(n_posts, dtype=bool) for m in WIDTHS},
    )


@pytest.fixture(scope="module")
def scorer_and_cases():
    graph = build_graph(planted_posts(1200, seed=0, with_common=True))
    torch.manual_seed(0)
    model = PHRModel.from_graph(ModelConfig(NetworkConfig(dim=8)), graph)
    model.eval()
    assert model.evidence is not None
    with torch.no_grad():  # a prior that trusts popularity far more than the user's history
        model.evidence.weights.copy_(torch.tensor([0.05, 1.0, 3.0, 1.0, 0.0, 0.0]))
    validation = planted_posts(2 * MIN_FIT_CASES, seed=1, with_common=False)
    scorer = ModelScorer(model, *model.network.propagate(), item_index=graph.item_index)
    return scorer, validation, graph


def test_calibration_raises_the_part_that_ranks_validation_posts(scorer_and_cases):
    scorer, validation, graph = scorer_and_cases
    cases = build_cases(validation, np.arange(len(validation)), graph)
    result = calibrate(scorer, validation, cases)
    assert result is not None and result.kept
    # Before, the common hashtags fill the top 5 and the user's own is below them; one
    # relevant hashtag a post makes 0.2 the best P@5 there is.
    assert result.held_out_before < 0.05 and result.held_out_after > 0.19
    assert result.scales["user history"] > 10 * result.scales["popularity"]
    assert scorer.model.part_scales.tolist() == pytest.approx(list(result.scales.values()))
    scores = scorer.score(cases.users, validation)
    top = scores.topk(5, dim=1).indices.tolist()
    assert np.mean([relevant[0] in columns for columns, relevant in zip(top, cases.relevant)]) > 0.95


def test_calibration_needs_enough_validation_cases(scorer_and_cases):
    scorer, validation, graph = scorer_and_cases
    few = validation.subset(np.arange(MIN_FIT_CASES - 1))
    assert calibrate(scorer, few, build_cases(few, np.arange(len(few)), graph)) is None
