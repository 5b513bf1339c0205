"""`phr evaluate`: the trained model and every baseline, on the same split and candidates.

Baselines are fitted on the checkpoint's training split; β of the popularity mix is tuned
on its validation split; the content-only model (GCN-PHR's scorer without graph messages)
is trained with the checkpoint's own configuration. Every method is then scored on the
test split with the same sampled negatives and tie-breaking seed.
"""

from __future__ import annotations

import glob
import hashlib
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from phr_cli.data.dataset import Dataset, SplitPosts
from phr_cli.data.graph import Graph, PostData
from phr_cli.data.provenance import posts_fingerprint
from phr_cli.encoders.registry import random_weights_id
from phr_cli.errors import CheckpointError, ConfigError
from phr_cli.evaluation.baselines import (
    CaptionWords,
    GlobalPopularity,
    ItemPopularity,
    PopularityMix,
    UserPopularity,
    fit_pitf_on_validation,
    tune_beta,
    tune_content_neighbours,
)
from phr_cli.evaluation.measures import KS, NEGATIVES
from phr_cli.evaluation.metrics import (
    ProtocolName,
    RankedCases,
    Scorer,
    rank_cases,
    small_data_notices,
    summarise,
)
from phr_cli.evaluation.runs import query_ids, write_runs
from phr_cli.evaluation.segments import CaseGroups, case_groups, segment_metrics
from phr_cli.evaluation.significance import compare_to_model, tested_metrics
from phr_cli.model.pitf import PITF, PITFConfig
from phr_cli.ranking.scorer import ModelScorer
from phr_cli.training.checkpoint import Checkpoint, load_checkpoint
from phr_cli.training.stream import (
    FROZEN_NOTE,
    RefittedCounts,
    StreamingMethod,
    StreamingModel,
    grown_content_neighbours,
    stream_rank,
)
from phr_cli.training.unseen import evaluate_unseen

BASELINES = ("global popularity", "user popularity", "item popularity", "user+item popularity", "content kNN",
             "PITF", "content-only", "caption words")


@dataclass
class MethodResult:
    name: str
    metrics: dict  # evaluate()'s result: per protocol, "all"/"warm"/"cold" groups
    note: str = ""
    seconds: float = 0.0  # fitting and evaluating
    # protocol -> metric -> the paired tests against the model (`significance.compare_to_model`); {} for the model
    significance: dict = field(default_factory=dict)
    segments: dict = field(default_factory=dict)  # protocol -> `segments.segment_metrics`
    cases: dict[str, RankedCases] = field(default_factory=dict, repr=False)  # protocol -> per case; not in JSON


@dataclass
class Comparison:
    methods: list[MethodResult]
    counts: dict  # test cases, dropped hashtags and cases, cold cases
    split: dict  # sizes, seed and unit of the split
    protocol: str
    seed: int
    notices: list[str] = field(default_factory=list)  # what makes a figure less than it seems
    # What was evaluated: the checkpoint (path, sha256), the store, the encoders (`provenance`).
    provenance: dict[str, Any] = field(default_factory=dict)
    segments: dict = field(default_factory=dict)  # how the segments are cut (`segments.CaseGroups.describe`)
    unseen: dict = field(default_factory=dict)  # `unseen.UnseenHashtags.to_dict`, when asked for
    # What the run files need, not in JSON: each case's query id and ground truth, the hashtags by index.
    queries: list[str] = field(default_factory=list, repr=False)
    relevant: list[np.ndarray] = field(default_factory=list, repr=False)
    hashtags: list[str] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        kept = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_IN_JSON}
        kept["methods"] = [{f.name: getattr(m, f.name) for f in fields(m) if f.name not in _NOT_IN_JSON}
                           for m in self.methods]
        return kept

    def write_runs(self, folder: Path) -> list[Path]:
        """qrels.txt and a run file per method from the full ranking (`evaluation.runs`)."""
        if self.methods and "full" not in self.methods[0].cases:
            raise ConfigError("the run files hold the full ranking: evaluate with --protocol full or both")
        return write_runs(folder, self.queries, self.relevant,
                          {m.name: m.cases["full"].ranked for m in self.methods}, self.hashtags)


_NOT_IN_JSON = ("cases", "queries", "relevant", "hashtags")
# Fitted baselines by (split fingerprint, protocol, seed and PITF configuration; name): checkpoints of one
# split share them (`evaluate_checkpoints`).
BaselineCache = dict[tuple[str, str], MethodResult]


def split_fingerprint(data: SplitPosts) -> str:
    """The posts and their split: what a baseline's fit and its test cases depend on."""
    digest = hashlib.sha256(posts_fingerprint(data.posts).encode())
    digest.update(data.split.by.encode())
    for part in (data.split.train, data.split.validation, data.split.test):
        digest.update(np.asarray(part, dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()


def compare(data: SplitPosts, checkpoint: Checkpoint, protocol: ProtocolName = "both",
            baselines: tuple[str, ...] = BASELINES, pitf: PITFConfig | None = None,
            device: torch.device = torch.device("cpu"), seed: int = 0,
            cache: BaselineCache | None = None, unseen_hashtags: bool = False) -> Comparison:
    """Evaluate the checkpoint's model and the named baselines on data's test cases; a baseline
    already in `cache` for this split, protocol, seed and PITF configuration is taken from it,
    one fitted here is added to it. `unseen_hashtags`: also rank the test hashtags training
    never saw (`training.unseen`)."""
    posts, split, graph = data.posts, data.split, data.graph
    if graph.users != checkpoint.trained_users or graph.hashtags != checkpoint.trained_hashtags:
        raise CheckpointError("the posts differ from those the checkpoint was trained on; "
                         "evaluate with the store it was trained on, or retrain")
    test, validation = data.test, data.validation
    stream, ranked_protocol = _stream_protocol(protocol, split.by)
    train_posts = posts.subset(split.train)  # what the stream's count baselines start from
    methods: list[MethodResult] = []
    cache = {} if cache is None else cache
    task = f"{split_fingerprint(data)} {protocol} {seed} {pitf!r}"  # what a cached result depends on

    def run(name: str, make_scorer, note: str | Callable[[Any], str] = "", shared: bool = True,
            streaming: Callable[[Any], StreamingMethod] | None = None) -> None:
        """Time and evaluate one method; a callable note is given the scorer once it is made.
        A shared method's result depends only on the task: cached. With the stream protocol,
        `streaming` makes the method that folds posts in from the scorer, once it has ranked
        the frozen protocol (None: it stays frozen)."""
        if shared and (task, name) in cache:
            methods.append(cache[task, name])
            return
        started = time.perf_counter()
        scorer: Scorer = make_scorer()
        outcome = rank_cases(scorer, posts, test, protocol=ranked_protocol, ks=KS, seed=seed, n_negatives=NEGATIVES)
        text = note(scorer) if callable(note) else note
        text = _add_stream(stream, outcome, streaming, scorer, data, seed, text)
        methods.append(MethodResult(name, summarise(outcome, test, KS, seed, NEGATIVES), text,
                                    time.perf_counter() - started, cases=outcome))
        if shared:
            cache[task, name] = methods[-1]

    network = checkpoint.model_config.network
    run("GCN-PHR" if network.propagate else "GCN-PHR (content-only)", lambda: checkpoint.scorer(device),
        f"best epoch {checkpoint.best_epoch}, {network.variant.value}, fusion {network.fusion.value}"
        + (", re-ranked" if checkpoint.reranker is not None else ""), shared=False, streaming=_live(graph))
    popularity: dict[str, Callable[[Graph], Scorer]] = {
        "global popularity": GlobalPopularity, "user popularity": UserPopularity, "item popularity": ItemPopularity,
        "caption words": CaptionWords.from_graph}  # its popularity breaks its ties
    for name in (name for name in popularity if name in baselines):
        run(name, lambda make=popularity[name]: make(graph), streaming=_refitted(popularity[name], train_posts))
    if "user+item popularity" in baselines:
        def mix() -> PopularityMix:
            beta, _ = tune_beta(graph, posts, validation, seed=seed)
            return PopularityMix(graph, beta)

        run("user+item popularity", mix, lambda scorer: f"β = {scorer.beta:.1f} (validation P@5)",
            streaming=lambda scorer: RefittedCounts(lambda grown: PopularityMix(grown, scorer.beta), train_posts))
    if "content kNN" in baselines:
        run("content kNN", lambda: tune_content_neighbours(graph, posts, validation, seed=seed)[0],
            lambda scorer: f"k = {scorer.k}, β = {scorer.beta:.1f} (validation P@5)",
            streaming=lambda scorer: RefittedCounts(grown_content_neighbours(scorer), train_posts))
    if "PITF" in baselines and pitf is None and checkpoint.pitf_epoch is not None \
            and checkpoint.train_config.seed == seed == PITFConfig().seed:
        # The model's factors are this very baseline, fitted by `phr train` on the same
        # graph, validation cases and seeds (`train.fit_pitf`): scored, not fitted again.
        run("PITF", lambda: checkpoint.factor_scorer(device),
            f"k = {PITFConfig().dim}, epoch {checkpoint.pitf_epoch} of at most {PITFConfig().epochs} "
            "(validation P@5; the checkpoint's own fit)", shared=False)
    elif "PITF" in baselines:
        config = pitf or PITFConfig(device=device)

        run("PITF", lambda: fit_pitf_on_validation(PITF(graph, config), posts, validation, seed),
            lambda model: f"k = {config.dim}, epoch {model.best_epoch} of at most "
            f"{config.epochs} (validation P@5)")
    if "content-only" in baselines and checkpoint.model_config.network.propagate:
        run("content-only", lambda: _content_only(data, checkpoint, device),
            "GCN-PHR's scorer without graph messages, same training", shared=False, streaming=_live(graph))
    methods = [replace(m) for m in methods]  # a cached result's tests and segments are this model's
    groups = case_groups(data)
    _add_tests_and_segments(methods, groups, test.relevant, seed)
    counts = {**(methods[0].metrics["counts"] if methods else {}), "known_hashtags": graph.n_hashtags}
    names = data.names if isinstance(data, Dataset) else [f"post{row + 1}" for row in range(len(posts))]
    return Comparison(
        methods=methods, counts=counts,
        split={"train": len(split.train), "validation": len(split.validation), "test": len(split.test),
               "seed": split.seed, "by": split.by},
        protocol=protocol, seed=seed,
        notices=small_data_notices({"validation": len(validation), "test": len(test)}, graph.n_hashtags,
                                   protocol, evaluating=True),
        segments=groups.describe(), queries=query_ids([names[row] for row in test.rows.tolist()]),
        relevant=test.relevant, hashtags=graph.hashtags,
        unseen=evaluate_unseen(data, checkpoint, device, seed).to_dict() if unseen_hashtags else {},
    )


def _stream_protocol(protocol: ProtocolName, split_by: str) -> tuple[bool, ProtocolName]:
    """Whether the stream protocol is asked for, and the frozen protocol ranked beside it."""
    if protocol != "stream":
        return False, protocol
    if split_by != "time":
        raise ConfigError(f"--protocol stream scores the test posts in time order: it needs a time split, and "
                          f"this checkpoint's is by {split_by} (train it with --split-by time)")
    return True, "full"


def _live(graph: Graph) -> Callable[[Any], StreamingMethod]:
    """A trained model's stream method, from its scorer once it has ranked the frozen protocol
    (so the scorer may change)."""
    return lambda scorer: StreamingModel(scorer, graph.users, graph.hashtags)


def _refitted(make: Callable[[Graph], Scorer], train: PostData) -> Callable[[Any], StreamingMethod]:
    """A count baseline's stream method: made again from the training posts and those folded in."""
    return lambda _: RefittedCounts(make, train)


def _add_stream(stream: bool, outcome: dict[str, RankedCases], streaming: Callable[[Any], StreamingMethod] | None,
                scorer: Scorer, data: SplitPosts, seed: int, note: str) -> str:
    """With the stream protocol, its ranking added to a method's outcome (its frozen full
    ranking when it cannot take posts, `streaming` None); the method's note, which says so."""
    if not stream:
        return note
    if streaming is None:
        outcome["stream"] = outcome["full"]
        return "; ".join(filter(None, [note, FROZEN_NOTE]))
    outcome["stream"] = stream_rank(streaming(scorer), data.posts, data.test, data.split.test,
                                    data.graph.n_hashtags, KS, seed)
    return note


def _add_tests_and_segments(methods: list[MethodResult], groups: CaseGroups, relevant: list[np.ndarray],
                            seed: int) -> None:
    """Each baseline's paired tests against the model (methods[0]); every method's segments."""
    if not methods:
        return
    model, others = methods[0], methods[1:]
    for method in others:
        method.significance = {}
    for protocol, outcome in model.cases.items():
        tests = compare_to_model(outcome.metrics, {m.name: m.cases[protocol].metrics for m in others},
                                 tested_metrics(list(KS)), seed)
        for method in others:
            method.significance[protocol] = tests[method.name]
    for method in methods:
        method.segments = {protocol: segment_metrics(outcome, relevant, groups, KS)
                           for protocol, outcome in method.cases.items()}


def _content_only(data: SplitPosts, checkpoint: Checkpoint, device: torch.device) -> ModelScorer:
    # This baseline is a training run (the checkpoint's own configuration, no graph
    # messages): the one place evaluation needs the training loop, imported only here.
    from phr_cli.training.train import train

    model_config = replace(checkpoint.model_config, network=replace(checkpoint.model_config.network, propagate=False))
    train_config = replace(checkpoint.train_config, device=str(device))  # the config holds a name
    with tempfile.TemporaryDirectory(prefix="phr-content-only-") as scratch:
        path = Path(scratch) / "content-only.pt"
        # The checkpoint's PITF fit is on these posts with this seed: taken, not fitted again.
        train(data, model_config, train_config, path, resume=False, factors=checkpoint.fitted_factors())
        return load_checkpoint(path).scorer(device)


def evaluate_store(store_path: Path, checkpoint_path: Path, protocol: ProtocolName = "both",
                   baselines: tuple[str, ...] = BASELINES, device: torch.device = torch.device("cpu"), seed: int = 0,
                   pitf: PITFConfig | None = None, cache: BaselineCache | None = None,
                   unseen_hashtags: bool = False) -> Comparison:
    """`phr evaluate`: the checkpoint's split of the store's posts, model against baselines."""
    checkpoint = load_checkpoint(checkpoint_path)
    dataset = Dataset.for_checkpoint(store_path, checkpoint.split, checkpoint.provenance, checkpoint_path)
    comparison = compare(dataset, checkpoint, protocol, baselines, pitf, device, seed, cache, unseen_hashtags)
    comparison.notices[:0] = dataset.notices
    comparison.provenance = provenance(checkpoint_path, checkpoint, store_path)
    return comparison


def provenance(checkpoint_path: Path, checkpoint: Checkpoint, store_path: Path) -> dict[str, Any]:
    """Which figures these are: the checkpoint file (and its sha256), the store evaluated on and
    the one trained on, the encoders that made the features, whether their weights were random."""
    digest = hashlib.sha256()
    with open(checkpoint_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):  # hashlib.file_digest: Python 3.11
            digest.update(block)
    encoders = checkpoint.provenance.encoders
    return {
        "checkpoint": str(checkpoint_path), "checkpoint_sha256": digest.hexdigest(), "store": str(store_path),
        "trained_on": checkpoint.provenance.store,
        "encoders": {modality: {"name": e["spec"]["name"], "version": e["spec"]["version"], "weights": e["weights"]}
                     for modality, e in encoders.items()},
        "random_weights": any(e["weights"] == random_weights_id() for e in encoders.values()),
    }


def expand_checkpoints(paths: Sequence[Path]) -> list[Path]:
    """The checkpoints named, a glob pattern (`models/gcn-phr*.pt`) standing for the files it matches, sorted;
    each file once."""
    found: list[Path] = []
    for path in paths:
        if glob.has_magic(str(path)) and not Path(path).is_file():  # a file named `a[1].pt` is itself
            matches = sorted(Path(match) for match in glob.glob(str(path)))
            if not matches:
                raise CheckpointError(f"{path}: no checkpoint matches the pattern")
            found += matches
        else:
            found.append(Path(path))
    return list(dict.fromkeys(found))


@dataclass
class SeedSummary:
    """Several checkpoints (one a seed: its own split and initialisation) evaluated alike: each
    comparison, and per method the mean and sample standard deviation over the checkpoints of
    every metric and segment figure (`methods`: {"name", "seeds", "metrics", "std", "segments",
    "segments_std"}, metrics shaped as a comparison's)."""

    comparisons: list[Comparison]
    methods: list[dict]

    def to_dict(self) -> dict:
        cases = [c.counts.get("cases", 0) for c in self.comparisons]
        return {"seeds": len(self.comparisons), "checkpoints": [c.provenance["checkpoint"] for c in self.comparisons],
                "counts": {"cases": round(float(np.mean(cases))) if cases else 0, "cases_per_seed": cases},
                "methods": self.methods, "comparisons": [c.to_dict() for c in self.comparisons]}


def _spread(values: list[Any]) -> tuple[Any, Any]:
    """Mean and sample standard deviation (0 for one value) of numbers, key by key through
    nested dicts; keys some values lack (a group without cases) are left out."""
    if isinstance(values[0], dict):
        pairs = {key: _spread([v[key] for v in values]) for key in values[0] if all(key in v for v in values)}
        return {k: mean for k, (mean, _) in pairs.items()}, {k: std for k, (_, std) in pairs.items()}
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def summarise_seeds(comparisons: list[Comparison]) -> SeedSummary:
    """Every method found in each comparison, its figures as mean ± standard deviation."""
    names = [m.name for m in comparisons[0].methods
             if all(any(other.name == m.name for other in c.methods) for c in comparisons)]
    methods = []
    for name in names:
        results = [next(m for m in c.methods if m.name == name) for c in comparisons]
        protocols = [p for p in ("sampled", "full") if p in results[0].metrics]
        metrics, std = _spread([{p: r.metrics[p] for p in protocols} for r in results])
        segments, segments_std = _spread([r.segments for r in results])
        methods.append({"name": name, "seeds": len(results), "metrics": metrics, "std": std,
                        "segments": segments, "segments_std": segments_std})
    return SeedSummary(comparisons, methods)


def write_all_runs(comparisons: Sequence[Comparison], folder: Path) -> list[Path]:
    """Each comparison's TREC files (`Comparison.write_runs`): in the folder for one, in a subfolder
    named after its checkpoint for several."""
    if len(comparisons) == 1:
        return comparisons[0].write_runs(folder)
    return [path for c in comparisons for path in c.write_runs(Path(folder) / Path(c.provenance["checkpoint"]).stem)]


def evaluate_checkpoints(store_path: Path, checkpoints: Sequence[Path], protocol: ProtocolName = "both",
                         baselines: tuple[str, ...] = BASELINES, device: torch.device = torch.device("cpu"),
                         seed: int = 0, pitf: PITFConfig | None = None,
                         unseen_hashtags: bool = False) -> list[Comparison]:
    """evaluate_store for each checkpoint, the baselines fitted once per distinct split."""
    cache: BaselineCache = {}
    return [evaluate_store(store_path, path, protocol, baselines, device, seed, pitf, cache, unseen_hashtags)
            for path in checkpoints]
