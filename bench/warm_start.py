"""`phr train --warm-start` against a full retrain on a grown store: Last.fm 2K, split by time.

    python bench/warm_start.py ../shared/datasets/lastfm-2k [--work DIR] [--cut 0.8] [--epochs N]
        [--patience N] [--seeds 0 1 2] [--with-steps] [--reuse] [--device cpu]

The posts (`lastfm_data.py`) sorted by time: an "old" store of the earliest `--cut` of them and
a "grown" store of all, each written by the product's own `extract` (so the grown store has its
own caption PCA, as a store that grew refits it). OLD is trained on the old store; then, on the
grown store, one after the other on the same machine: (a) a full retrain from scratch and (b)
`--warm-start OLD`, both split by time with the same seed. Each epoch's validation P@5 and the
wall time from the call's start to the epoch's end (reading the store, building the graph and,
for (b), loading OLD included) are recorded; (b) also validates the carried-over weights before
its first epoch (epoch 0). The figure: the time (b) needs to reach (a)'s best validation P@5, as
a share of the time (a) needed for it. With --reuse, stores and a finished OLD already in
--work are taken as they are.

The steps after the epochs (PITF's factors, calibration, re-ranker) change no epoch's validation
figure and are the same work in both runs; they are off unless --with-steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from lastfm_data import load_lastfm_captions, load_lastfm_posts

from phr_cli.extract import ExtractOptions, extract
from phr_cli.model.config import ModelConfig
from phr_cli.training.checkpoint import load_checkpoint
from phr_cli.training.config import TrainConfig
from phr_cli.training.train import StoreTraining, train_from_store

SPLIT = "time"


def write_posts(dataset: Path, folder: Path, cut: float) -> tuple[int, int]:
    """posts.jsonl manifests of the earliest `cut` of the posts (folder/old) and of all (folder/grown)."""
    posts = load_lastfm_posts(dataset)
    captions = load_lastfm_captions(dataset, posts)
    times = posts.times
    assert times is not None  # lastfm_data dates every post
    order = np.argsort(times, kind="stable")  # by time, ties in the dataset's order
    n_old = round(cut * len(order))
    for name, rows in (("old", np.sort(order[:n_old])), ("grown", order)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        with open(folder / name / "posts.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps({"user": posts.users[row], "caption": captions[row],
                                         "hashtags": posts.hashtags[row], "time": int(times[row])},
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


def curve(outcome: StoreTraining, ends: list[float]) -> list[tuple[int, float, float]]:
    """(epoch, validation metric, seconds since the call began) of each epoch, a warm start's
    epoch 0 first (it ended where epoch 1 began)."""
    history = outcome.result.history
    points = [(int(h["epoch"]), h["metric"], end) for h, end in zip(history, ends)]
    warm = outcome.result.warm_start
    if warm is not None and warm.validation_metric is not None and history:
        points.insert(0, (0, warm.validation_metric, ends[0] - history[0]["seconds"]))
    return points


def first_reaching(points: list[tuple[int, float, float]], target: float) -> tuple[int, float] | None:
    """(epoch, seconds) of the first point whose validation metric is at least target (None: none)."""
    return next(((epoch, seconds) for epoch, metric, seconds in points if metric >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="folder of the Last.fm 2K files")
    parser.add_argument("--work", type=Path, default=Path("bench_work/warm_start"))
    parser.add_argument("--cut", type=float, default=0.8, help="share of the posts (earliest first) in the old store")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=TrainConfig.patience)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="one full retrain and one warm start for each (OLD is trained with seed 0)")
    parser.add_argument("--with-steps", action="store_true", help="also run PITF's factors and the re-ranker")
    parser.add_argument("--reuse", action="store_true", help="take the stores and a finished OLD in --work as they are")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model_config = ModelConfig(factors=args.with_steps)
    config = TrainConfig(epochs=args.epochs, patience=args.patience, device=args.device, rerank=args.with_steps)

    n_old, n_all = write_posts(args.dataset, args.work / "posts", args.cut)
    stores = {name: args.work / f"{name}.h5" for name in ("old", "grown")}
    for name, store in stores.items():
        if not (args.reuse and store.exists()):
            report = extract(args.work / "posts" / name, store, ExtractOptions(device=args.device,
                                                                                random_weights=True))
            print(f"warm start: {name} store {store}, text features in {report.seconds:.1f} s")

    old = args.work / "old.pt"
    if not (args.reuse and old.exists() and load_checkpoint(old).completed):
        old_outcome, old_ends = timed_training(stores["old"], old, model_config, config)
        print(f"warm start: old: {old_outcome.n_posts} posts, validation {config.validation_metric} by epoch: "
              + ", ".join(f"{metric:.4f} @ {seconds:.0f} s" for _, metric, seconds in curve(old_outcome, old_ends)))
    shares = [race(stores["grown"], args.work, old, model_config, replace(config, seed=seed), f"seed={seed}",
                   n_old, n_all, args.cut) for seed in args.seeds]
    reached = sorted(share for share in shares if share is not None)
    median = (f"{statistics.median(shares):.0%}" if len(reached) == len(shares)
              else f"not reached in {len(shares) - len(reached)} of {len(shares)} seeds")
    print(f"warm start lastfm split={SPLIT} cut={args.cut:.0%}: time to the full retrain's best validation "
          f"{config.validation_metric}, as a share of the retrain's, by seed: "
          + ", ".join("not reached" if share is None else f"{share:.0%}" for share in shares)
          + f"; median {median} (target ≤ 25 %)")


def race(store: Path, work: Path, old: Path, model_config: ModelConfig, config: TrainConfig, name: str,
         n_old: int, n_all: int, cut: float) -> float | None:
    """(a) and (b) of the module docstring with config's seed; prints both curves and returns
    (b)'s time to (a)'s best as a share of (a)'s (None: not reached)."""
    full, full_ends = timed_training(store, work / f"full-{config.seed}.pt", model_config, config)
    warm, warm_ends = timed_training(store, work / f"warm-{config.seed}.pt", model_config, config, warm_start=old)
    metric = config.validation_metric
    full_curve, warm_curve = curve(full, full_ends), curve(warm, warm_ends)
    for label, outcome, points in (("full retrain", full, full_curve), ("warm start", warm, warm_curve)):
        print(f"warm start {name}: {label}: {outcome.n_posts} posts, validation {metric} by epoch: "
              + ", ".join(f"{epoch}: {value:.4f} @ {seconds:.0f} s" for epoch, value, seconds in points))
    assert warm.result.warm_start is not None
    target, best_epoch = full.result.best_metric, full.result.best_epoch
    full_seconds = full_ends[best_epoch - 1]
    reached = first_reaching(warm_curve, target)
    trained = first_reaching([point for point in warm_curve if point[0] > 0], target)
    reach = (f"at epoch {reached[0]} after {reached[1]:.0f} s: {reached[1] / full_seconds:.0%} of the time"
             if reached else f"not within {len(warm.result.history)} epochs (best {warm.result.best_metric:.4f})")
    after_training = (f"by a trained epoch: epoch {trained[0]}, {trained[1] / full_seconds:.0%}" if trained
                      else "no trained epoch reaches it")
    print(f"warm start {name} lastfm split={SPLIT} cut={cut:.0%} ({n_old} of {n_all} posts): full retrain best "
          f"validation {metric} {target:.4f} at epoch {best_epoch} after {full_seconds:.0f} s; warm start reaches it "
          f"{reach} (target ≤ 25 %; {after_training}); its best {warm.result.best_metric:.4f} at epoch "
          f"{warm.result.best_epoch}, {len(warm.result.history)} epochs run; {warm.result.warm_start.summary()}")
    return reached[1] / full_seconds if reached else None


if __name__ == "__main__":
    main()
