"""The re-ranker: trees fitted on validation candidates learn what the calibrated sum cannot."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_train import planted_posts

from phr_cli.data.cases import TestCases
from phr_cli.data.dataset import SplitPosts
from phr_cli.data.graph import split_posts
from phr_cli.model.config import ModelConfig, NetworkConfig
from phr_cli.model.evidence import TagEvidence
from phr_cli.ranking.rerank import (
    CANDIDATES,
    CONTEXT,
    CountsOfTraining,
    Reranker,
    candidate_table,
    fit_reranker,
    fit_trees,
)
from phr_cli.ranking.validation import MIN_FIT_CASES
from phr_cli.training.checkpoint import load_checkpoint, read_checkpoint_file
from phr_cli.training.config import TrainConfig
from phr_cli.training.train import CALIBRATING, RERANKING, train

N_USERS, N_HASHTAGS, N_ITEMS = 40, 80, 60
HABIT_POSTS = 12  # users 0-19 post this often, users 20-39 once

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def training_graph() -> SimpleNamespace:
    rng = np.random.default_rng(0)
    triples = [(user, int(rng.integers(N_HASHTAGS)), (user * 7 + post) % N_ITEMS)
               for user in range(N_USERS) for post in range(HABIT_POSTS if user < N_USERS // 2 else 1)]
    return SimpleNamespace(triples=np.array(triples), n_users=N_USERS, n_hashtags=N_HASHTAGS, n_items=N_ITEMS)


class PlantedScorer:
    """Two score parts of which the right one depends on the user: a frequent poster's
    hashtag tops "user history", an occasional poster's tops "item history". Their sum,
    the calibrated total, picks the right one only when it happens to be the larger."""

    def __init__(self, graph: SimpleNamespace, n_cases: int, seed: int) -> None:
        triples = torch.as_tensor(graph.triples)
        evidence = TagEvidence.fit(triples, N_USERS, N_ITEMS, N_HASHTAGS, torch.randn(N_ITEMS, 4), neighbours=2)
        self.model = SimpleNamespace(evidence=evidence)
        rng = np.random.default_rng(seed)
        self.users = rng.integers(N_USERS, size=n_cases)
        self.items = np.full(n_cases, -1)
        self.parts = {name: torch.as_tensor(rng.normal(size=(n_cases, N_HASHTAGS)), dtype=torch.float32)
                      for name in ("user history", "item history")}
        self.relevant = [np.array([int(self.parts["user history" if user < N_USERS // 2 else "item history"][case]
                                       .argmax())]) for case, user in enumerate(self.users)]

    def cases(self) -> TestCases:
        return TestCases(np.arange(len(self.users)), self.users, self.relevant, len(self.users), 0, 0)

    def scored_chunks(self, users: np.ndarray, posts: object):
        total = self.parts["user history"] + self.parts["item history"]
        chunk = SimpleNamespace(users=torch.as_tensor(self.users), items=torch.as_tensor(self.items))
        yield chunk, self.parts, total


def top_hit_rate(scores: torch.Tensor, relevant: list[np.ndarray]) -> float:
    return float(np.mean([scores[case].argmax().item() in rel for case, rel in enumerate(relevant)]))


def test_the_trees_learn_which_part_to_trust_for_whom_and_survive_a_round_trip():
    graph = training_graph()
    validation = PlantedScorer(graph, n_cases=600, seed=1)
    posts = SimpleNamespace(subset=lambda rows: None)
    reranker, record = fit_reranker(validation, posts, validation.cases(), graph, metric="P@1")
    assert record is not None and record.kept and record.cases == 600
    assert record.held_out_before < 0.8 and record.held_out_after > record.held_out_before + 0.15
    assert reranker is not None and reranker.features == ["user history", "item history", *CONTEXT]

    fresh = PlantedScorer(graph, n_cases=400, seed=2)
    chunk, parts, total = next(fresh.scored_chunks(fresh.users, None))
    rescored = reranker.rescore(fresh.model, parts, total, chunk.users, chunk.items)
    assert top_hit_rate(rescored, fresh.relevant) > top_hit_rate(total, fresh.relevant) + 0.15
    # The candidates (the calibrated top 50) are re-ordered above every other hashtag.
    candidates = total.topk(CANDIDATES, dim=1).indices
    lowest_candidate = rescored.gather(1, candidates).min(dim=1).values
    others = rescored.scatter(1, candidates, -torch.inf).max(dim=1).values
    assert (lowest_candidate > others).all()
    assert torch.equal(others, total.scatter(1, candidates, -torch.inf).max(dim=1).values)

    again = Reranker.from_dict(reranker.to_dict())
    assert torch.equal(again.rescore(fresh.model, parts, total, chunk.users, chunk.items), rescored)


def test_no_trees_without_enough_cases_or_when_the_held_out_half_does_not_rise():
    graph = training_graph()
    few = PlantedScorer(graph, n_cases=150, seed=1)
    assert fit_reranker(few, None, few.cases(), graph) == (None, None)
    # The calibrated total already ranks every relevant hashtag first: the trees cannot do
    # better on the held-out half, so they are not kept.
    solved = PlantedScorer(graph, n_cases=400, seed=3)
    total = solved.parts["user history"] + solved.parts["item history"]
    solved.relevant = [np.array([int(row.argmax())]) for row in total]
    reranker, record = fit_reranker(solved, SimpleNamespace(subset=lambda rows: None), solved.cases(), graph,
                                    metric="P@1")
    assert record is not None and record.held_out_before == 1.0 and not record.kept and reranker is None


def test_training_records_the_reranker_and_a_checkpoint_scores_with_the_one_it_holds(tmp_path):
    posts = planted_posts(n_users=80, posts_per_user=25)
    data = SplitPosts(posts, split_posts(posts, seed=0))
    assert len(data.validation) >= MIN_FIT_CASES
    config = TrainConfig(epochs=2, batch_size=256, patience=2, device="cpu")
    steps: list[str] = []
    path = tmp_path / "model.pt"
    result = train(data, ModelConfig(NetworkConfig(dim=8)), config, path, finishing=lambda step, *_: steps.append(step))
    assert steps[-2:] == [CALIBRATING, RERANKING]
    # The trees are kept exactly when they raised the held-out half's P@5.
    raw = read_checkpoint_file(path)
    record = raw["reranking"]
    assert record["cases"] == len(data.validation) and result.reranking == record
    assert record["kept"] == (record["held_out_after"] > record["held_out_before"])
    assert (raw["reranker"] is not None) == record["kept"]
    checkpoint = load_checkpoint(path)
    assert (checkpoint.reranker is not None) == record["kept"]
    users, rows = data.test.users, posts.subset(data.test.rows)
    plain = checkpoint.scorer()
    plain.reranker = None
    calibrated = plain.score(users, rows)

    # A checkpoint holding trees scores with them: its candidates re-ordered, above the rest.
    scorer = checkpoint.scorer()
    counts = CountsOfTraining.of_graph(data.graph)
    table = candidate_table(scorer, posts, data.validation, counts)
    reranker = Reranker(fit_trees(table.features, table.hits, seed=0).model_to_string(), table.names, counts)
    raw["reranker"] = reranker.to_dict()
    torch.save(raw, path)
    reranked = load_checkpoint(path).scorer().score(users, rows)
    n = min(CANDIDATES, data.graph.n_hashtags)
    assert torch.equal(reranked.topk(n, dim=1).indices.sort(dim=1).values,
                       calibrated.topk(n, dim=1).indices.sort(dim=1).values)
    assert not torch.equal(reranked.argsort(dim=1, descending=True), calibrated.argsort(dim=1, descending=True))
    scorer.reranker = reranker
    assert torch.equal(scorer.score(users, rows), reranked)

    train(data, ModelConfig(NetworkConfig(dim=8)), replace(config, rerank=False), tmp_path / "plain.pt")
    assert load_checkpoint(tmp_path / "plain.pt").reranker is None
    assert read_checkpoint_file(tmp_path / "plain.pt")["reranking"] is None
