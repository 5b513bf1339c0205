"""Seconds per training epoch and test-split evaluation time at the paper's YFCC100M size.

    python bench/train_speed.py --scale 1.0 --device cuda
    python bench/train_speed.py --scale 0.25 --device cpu --epochs 2 --repeats 2
    python bench/train_speed.py --scale 1.0 --checkpoint CHECKPOINT   # evaluation alone

Trains through `phr train`'s own code path (`train_from_store` on a synthetic store from
bench/synthetic_store.py, written first when missing) once per step kind: "full" is the
plain reference step (the whole graph propagated every step), "batch" the default (the
batch's receptive field only); both in one run, alternating `--repeats` times, and the
fastest epoch of each counts, so that their ratio survives a noisy shared machine.
Then evaluates the last checkpoint on the whole test split with each protocol (1,000
sampled negatives, full ranking), as `phr evaluate` does for the model. Prints one
summary line per figure: seconds per epoch (training pass; validation and checkpointing
separately), steps/s, peak host RSS and, on CUDA, peak GPU memory.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from synthetic_store import default_store_path, write_synthetic_store

from phr_cli.data.dataset import SplitPosts
from phr_cli.data.graph import build_graph, posts_from_store
from phr_cli.data.store import load_store
from phr_cli.devices import resolve_device
from phr_cli.model.config import ModelConfig
from phr_cli.training.checkpoint import load_checkpoint
from phr_cli.training.comparison import compare
from phr_cli.training.config import StepPropagation, TrainConfig
from phr_cli.training.train import NegativeSampler, train_from_store


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def gpu_memory(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    return f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"


def reset_gpu_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of YFCC100M's size")
    parser.add_argument("--store", type=Path,
                        help="default bench_work/synthetic/features-SCALE.h5 (written if missing)")
    parser.add_argument("--work", type=Path, default=Path("bench_work/train_speed"), help="checkpoints go here")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--epochs", type=int, default=2, help="per step kind; the first includes warm-up")
    parser.add_argument("--batch-size", type=int, default=4096)
    kinds = [s.value for s in StepPropagation]
    parser.add_argument("--steps", nargs="+", default=kinds, choices=kinds,
                        help="step kinds to time (TrainConfig.step_propagation)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="train each step kind this many times, alternating kinds; the fastest epoch counts "
                             "(on a shared machine, the least disturbed one)")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the test-split evaluation")
    parser.add_argument("--checkpoint", type=Path, help="evaluate this checkpoint of the store, without training")
    args = parser.parse_args()
    device = resolve_device(args.device)
    tag = f"scale={args.scale:g} device={device.type} batch={args.batch_size}"

    store = args.store or default_store_path(args.scale)
    if not store.exists():
        s = write_synthetic_store(store, args.scale)
        print(f"synthetic store {tag}: {s.posts} posts, {s.users} users, {s.hashtags_used} hashtags written "
              f"in {s.seconds:.1f} s -> {store}")

    per_epoch: dict[str, float] = {}
    losses: dict[str, list[float]] = {}
    checkpoint = args.checkpoint
    for step in [] if args.checkpoint else args.steps * args.repeats:
        checkpoint = args.work / f"scale-{args.scale:g}-{step}.pt"
        reset_gpu_peak(device)
        started = time.perf_counter()
        outcome = train_from_store(
            store, checkpoint, ModelConfig(),
            TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=str(device), step_propagation=step,
                        patience=args.epochs),
            resume=False)
        total = time.perf_counter() - started
        history = outcome.result.history
        timed = history[1:] or history  # the first epoch pays for warm-up (allocator, CUDA kernels)
        seconds = min(h["train_seconds"] for h in timed)
        per_epoch[step] = min(seconds, per_epoch.get(step, math.inf))
        rest = min(h["seconds"] - h["train_seconds"] for h in timed)
        losses[step] = [h["loss"] for h in history]
        which = "fastest epoch after the first" if len(history) > 1 else "one epoch"
        print(f"train step={step} {tag}: {seconds:.2f} s/epoch training pass ({which}, "
              f"first {history[0]['train_seconds']:.2f} s), + {rest:.2f} s validation and checkpoint per epoch; "
              f"{args.epochs} epochs and {total - sum(h['seconds'] for h in history):.1f} s of loading in "
              f"{total:.1f} s; {outcome.n_posts} posts; peak host RSS so far {peak_rss_gib():.2f} GiB"
              f"{gpu_memory(device)}; losses {', '.join(f'{x:.5f}' for x in losses[step])}")

    if args.no_evaluate and len(per_epoch) < 2:
        return
    posts = posts_from_store(load_store(store)).posts
    saved = load_checkpoint(checkpoint)
    graph = build_graph(posts.subset(saved.split.train))
    steps_per_epoch = math.ceil(len(NegativeSampler(graph.triples, graph.n_hashtags).trainable) / args.batch_size)
    print(f"graph {tag}: {graph.n_users} users, {graph.n_hashtags} hashtags, {graph.n_items} items, "
          f"{len(graph.triples)} training triples, {steps_per_epoch} steps/epoch; "
          + "; ".join(f"step={s} {steps_per_epoch / t:.1f} steps/s" for s, t in per_epoch.items()))
    if len(per_epoch) == 2:
        gap = max(abs(a - b) / abs(b) for a, b in zip(losses["batch"], losses["full"]))
        print(f"train speed-up {tag}: batch step {per_epoch['full'] / per_epoch['batch']:.2f}x faster than "
              f"the full-graph step (fastest epochs of the same run: {per_epoch['batch']:.2f} s vs "
              f"{per_epoch['full']:.2f} s); epoch losses agree within {gap:.1e} (relative)")
    if args.no_evaluate:
        return
    for protocol in ("sampled", "full"):
        reset_gpu_peak(device)
        comparison = compare(SplitPosts(posts, saved.split), saved, protocol=protocol, baselines=(), device=device)
        model = comparison.methods[0]
        metrics = model.metrics[protocol]["all"]
        print(f"evaluate protocol={protocol} {tag}: {comparison.counts['cases']} test cases in "
              f"{model.seconds:.2f} s (P@5 {metrics['P@5']:.4f}, R@5 {metrics['R@5']:.4f}, "
              f"A@5 {metrics['A@5']:.4f}); peak host RSS so far {peak_rss_gib():.2f} GiB{gpu_memory(device)}")


if __name__ == "__main__":
    main()
