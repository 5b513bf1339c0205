"""`phr evaluate`: the trained model and every baseline, on the same split and candidates.

Baselines are fitted on the checkpoint's training split; β of the popularity mix is tuned
on its validation split; the content-only model (GCN-PHR's scorer without graph messages)
is trained with the checkpoint's own configuration. Every method is then scored on the
test split with the same sampled negatives and tie-breaking seed.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from phr_cli.data.dataset import Dataset, SplitPosts
from phr_cli.encoders.registry import random_weights_id
from phr_cli.errors import CheckpointError
from phr_cli.evaluation.baselines import (
    GlobalPopularity,
    ItemPopularity,
    PopularityMix,
    UserPopularity,
    fit_pitf_on_validation,
    tune_beta,
    tune_content_neighbours,
)
from phr_cli.evaluation.metrics import ProtocolName, Scorer, evaluate, small_data_notices
from phr_cli.model.pitf import PITF, PITFConfig
from phr_cli.training.checkpoint import Checkpoint, load_checkpoint

BASELINES = ("global popularity", "user popularity", "item popularity", "user+item popularity", "content kNN",
             "PITF", "content-only")


@dataclass
class MethodResult:
    name: str
    metrics: dict  # evaluate()'s result: per protocol, "all"/"warm"/"cold" groups
    note: str = ""
    seconds: float = 0.0  # fitting and evaluating


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

    def to_dict(self) -> dict:
        return asdict(self)


def compare(data: SplitPosts, checkpoint: Checkpoint, protocol: ProtocolName = "both",
            baselines: tuple[str, ...] = BASELINES, pitf: PITFConfig | None = None,
            device: torch.device = torch.device("cpu"), seed: int = 0) -> Comparison:
    """Evaluate the checkpoint's model and the named baselines on data's test cases."""
    posts, split, graph = data.posts, data.split, data.graph
    if graph.users != checkpoint.users or graph.hashtags != checkpoint.hashtags:
        raise CheckpointError("the posts differ from those the checkpoint was trained on; "
                         "evaluate with the store it was trained on, or retrain")
    test, validation = data.test, data.validation
    methods: list[MethodResult] = []

    def run(name: str, make_scorer, note: str | Callable[[Any], str] = "") -> None:
        """Time and evaluate one method; a callable note is given the scorer once it is made."""
        started = time.perf_counter()
        scorer: Scorer = make_scorer()
        metrics = evaluate(scorer, posts, test, protocol=protocol, seed=seed)
        methods.append(MethodResult(name, metrics, note(scorer) if callable(note) else note,
                                    time.perf_counter() - started))

    network = checkpoint.model_config.network
    run("GCN-PHR" if network.propagate else "GCN-PHR (content-only)", lambda: checkpoint.scorer(device),
        f"best epoch {checkpoint.best_epoch}, {network.variant.value}, fusion {network.fusion.value}"
        + (", re-ranked" if checkpoint.reranker is not None else ""))
    if "global popularity" in baselines:
        run("global popularity", lambda: GlobalPopularity(graph))
    if "user popularity" in baselines:
        run("user popularity", lambda: UserPopularity(graph))
    if "item popularity" in baselines:
        run("item popularity", lambda: ItemPopularity(graph))
    if "user+item popularity" in baselines:
        beta, _ = tune_beta(graph, posts, validation, seed=seed)
        run("user+item popularity", lambda: PopularityMix(graph, beta), f"β = {beta:.1f} (validation P@5)")
    if "content kNN" in baselines:
        neighbours, _ = tune_content_neighbours(graph, posts, validation, seed=seed)
        run("content kNN", lambda: neighbours,
            f"k = {neighbours.k}, β = {neighbours.beta:.1f} (validation P@5)")
    if "PITF" in baselines and pitf is None and checkpoint.pitf_epoch is not None \
            and checkpoint.train_config.seed == seed == PITFConfig().seed:
        # The model's factors are this very baseline, fitted by `phr train` on the same
        # graph, validation cases and seeds (`train.fit_pitf`): scored, not fitted again.
        run("PITF", lambda: checkpoint.factor_scorer(device),
            f"k = {PITFConfig().dim}, epoch {checkpoint.pitf_epoch} of at most {PITFConfig().epochs} "
            "(validation P@5; the checkpoint's own fit)")
    elif "PITF" in baselines:
        config = pitf or PITFConfig(device=device)

        run("PITF", lambda: fit_pitf_on_validation(PITF(graph, config), posts, validation, seed),
            lambda model: f"k = {config.dim}, epoch {model.best_epoch} of at most "
            f"{config.epochs} (validation P@5)")
    if "content-only" in baselines and checkpoint.model_config.network.propagate:
        run("content-only", lambda: _content_only(data, checkpoint, device),
            "GCN-PHR's scorer without graph messages, same training")
    counts = {**(methods[0].metrics["counts"] if methods else {}), "known_hashtags": graph.n_hashtags}
    return Comparison(
        methods=methods, counts=counts,
        split={"train": len(split.train), "validation": len(split.validation), "test": len(split.test),
               "seed": split.seed, "by": split.by},
        protocol=protocol, seed=seed,
        notices=small_data_notices({"validation": len(validation), "test": len(test)}, graph.n_hashtags,
                                   protocol),
    )


def _content_only(data: SplitPosts, checkpoint: Checkpoint, device: torch.device) -> Scorer:
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
                   pitf: PITFConfig | None = None) -> Comparison:
    """`phr evaluate`: the checkpoint's split of the store's posts, model against baselines."""
    checkpoint = load_checkpoint(checkpoint_path)
    dataset = Dataset.for_checkpoint(store_path, checkpoint.split, checkpoint.provenance, checkpoint_path)
    comparison = compare(dataset, checkpoint, protocol, baselines, pitf, device, seed)
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
