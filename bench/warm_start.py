"""`phr train --warm-start` against a full retrain on a grown store: Last.fm 2K, split by time.

    python bench/warm_start.py ../shared/datasets/lastfm-2k [--work DIR] [--cut 0.8] [--epochs N]
        [--patience N] [--with-steps] [--device cpu]

The posts (`lastfm_data.py`) sorted by time: an "old" store of the earliest `--cut` of them and
a "grown" store of all, each written by the product's own `extract` (so the grown store has its
own caption PCA, as a store that grew refits it). OLD is trained on the old store; then, on the
grown store, one after the other on the same machine: (a) a full retrain from scratch and (b)
`--warm-start OLD`, both split by time with the same seed. Each epoch's validation P@5 and the
wall time from the call's start to the epoch's end (reading the store, building the graph and,
for (b), loading OLD included) are recorded. The figure: the time (b) needs to reach (a)'s best
validation P@5, as a share of the time (a) needed for it. Also printed: the warm-started model's
validation P@5 before its first epoch (the carried-over weights alone).

The steps after the epochs (PITF's factors, calibration, re-ranker) change no epoch's validation
figure and are the same work in both runs; they are off unless --with-steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from lastfm_data import load_lastfm_captions, load_lastfm_posts

from phr_cli.data.dataset import Dataset
from phr_cli.devices import resolve_device
from phr_cli.evaluation.metrics import evaluate
from phr_cli.extract import ExtractOptions, extract
from phr_cli.model.config import ModelConfig
from phr_cli.model.phr import PHRModel
from phr_cli.ranking.scorer import ModelScorer
from phr_cli.training.config import TrainConfig
from phr_cli.training.train import StoreTraining, train_from_store
from phr_cli.training.warm_start import carry_over, load_origin

SPLIT = "time"


def write_posts(dataset: Path, folder: Path, cut: float) -> tuple[int, int]:
    """posts.jsonl manifests of the earliest `cut` of the posts (folder/old) and of all (folder/grown)."""
    posts = load_lastfm_posts(dataset)
    captions = load_lastfm_captions(dataset, posts)
    order = np.argsort(posts.times, kind="stable")  # by time, ties in the dataset's order
    n_old = round(cut * len(order))
    for name, rows in (("old", np.sort(order[:n_old])), ("grown", order)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        with open(folder / name / "posts.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps({"user": posts.users[row], "caption": captions[row],
                                         "hashtags": posts.hashtags[row], "time": int(posts.times[row])},
                                        ensure_ascii=False) + "\n")
    return n_old, len(order)


def timed_training(store: Path, checkpoint: Path, model: ModelConfig, config: TrainConfig,
                   warm_start: Path | None = None) -> tuple[StoreTraining, list[float]]:
    """A training from scratch (resume off) and each epoch's end in seconds since the call began."""
    started = time.perf_counter()
    ends: list[float] = []
    outcome = train_from_store(store, checkpoint, model, config, SPLIT, resume=False, overwrite=True,
                               progress=lambda epoch, loss, metric, best: ends.append(time.perf_counter() - started),
                               warm_start=warm_start)
    return outcome, ends


def carried_over_metric(store: Path, old: Path, model_config: ModelConfig, config: TrainConfig) -> float:
    """Validation P@5 of the warm-started model before any epoch, as `train` validates an epoch."""
    dataset = Dataset.from_store(store, SPLIT, config.seed)
    provenance = dataset.provenance()
    origin = load_origin(old, model_config, config, provenance)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = PHRModel.from_graph(model_config, dataset.graph).to(resolve_device(config.device))
    carry_over(origin, model, dataset.graph, provenance)
    model.eval()
    with torch.no_grad():
        scorer = ModelScorer(model, *model.network.propagate(), dataset.graph.item_index)
        metrics = evaluate(scorer, dataset.posts, dataset.validation, protocol="full", ks=(5, 10), seed=config.seed)
    return float(metrics["full"]["all"][config.validation_metric])


def first_reaching(history: list[dict[str, float]], ends: list[float], target: float) -> tuple[int, float] | None:
    """(epoch, seconds) of the first epoch whose validation metric is at least target (None: none)."""
    return next(((int(h["epoch"]), end) for h, end in zip(history, ends) if h["metric"] >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="folder of the Last.fm 2K files")
    parser.add_argument("--work", type=Path, default=Path("bench_work/warm_start"))
    parser.add_argument("--cut", type=float, default=0.8, help="share of the posts (earliest first) in the old store")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=TrainConfig.patience)
    parser.add_argument("--with-steps", action="store_true", help="also run PITF's factors and the re-ranker")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model_config = ModelConfig(factors=args.with_steps)
    config = TrainConfig(epochs=args.epochs, patience=args.patience, device=args.device, rerank=args.with_steps)

    n_old, n_all = write_posts(args.dataset, args.work / "posts", args.cut)
    stores = {name: args.work / f"{name}.h5" for name in ("old", "grown")}
    for name, store in stores.items():
        report = extract(args.work / "posts" / name, store, ExtractOptions(device=args.device, random_weights=True))
        print(f"warm start: {name} store {store}, text features in {report.seconds:.1f} s")

    old = args.work / "old.pt"
    old_outcome, old_ends = timed_training(stores["old"], old, model_config, config)
    full, full_ends = timed_training(stores["grown"], args.work / "full.pt", model_config, config)
    warm, warm_ends = timed_training(stores["grown"], args.work / "warm.pt", model_config, config, warm_start=old)
    before = carried_over_metric(stores["grown"], old, model_config, config)

    metric = config.validation_metric
    for name, outcome, ends in (("old", old_outcome, old_ends), ("full retrain", full, full_ends),
                                ("warm start", warm, warm_ends)):
        curve = ", ".join(f"{h['metric']:.4f} @ {end:.0f} s" for h, end in zip(outcome.result.history, ends))
        print(f"warm start: {name}: {outcome.n_posts} posts, validation {metric} by epoch: {curve}")
    assert warm.result.warm_start is not None
    target, best_epoch = full.result.best_metric, full.result.best_epoch
    full_seconds = full_ends[best_epoch - 1]
    reached = first_reaching(warm.result.history, warm_ends, target)
    reach = (f"at epoch {reached[0]} after {reached[1]:.0f} s: {reached[1] / full_seconds:.0%} of the time"
             if reached else f"not within {len(warm.result.history)} epochs (best {warm.result.best_metric:.4f})")
    print(f"warm start lastfm split={SPLIT} cut={args.cut:.0%} ({n_old} of {n_all} posts): full retrain best "
          f"validation {metric} {target:.4f} at epoch {best_epoch} after {full_seconds:.0f} s; warm start reaches it "
          f"{reach} (target ≤ 25 %); before its first epoch {before:.4f}; "
          f"{warm.result.warm_start.summary()}")


if __name__ == "__main__":
    main()
