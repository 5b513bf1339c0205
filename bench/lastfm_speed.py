"""A Last.fm training epoch and `phr evaluate` with every baseline, before vs after the speed work, in one run.

    python bench/lastfm_speed.py                       # the store at /work/scratch/lastfm/features.h5
    python bench/lastfm_speed.py --store STORE --repeats 2 --pitf-validation

"before" is the former code path, still selectable: GCN-PHR with gather + `index_add_`
aggregation (NetworkConfig.aggregation "index_add") and parameters for every modality of the
store (modalities "all"), Adam one tensor at a time (TrainConfig.adam "single"), PITF's
content map over every modality (PITFConfig.modalities "all"). "after" is the default.
Both train through `phr train`'s code path (`train_from_store`, the random-post split,
seed 0) for `--epochs` epochs at batch 4,096, alternating `--repeats` times; the fastest
training pass of each counts (a shared machine disturbs some). Then `phr evaluate`'s own
function (`evaluate_store`, both protocols, every baseline) runs on each checkpoint; its
content-only baseline retrains with the checkpoint's configuration, so it runs `--epochs`
epochs too. With `--pitf-validation`, PITF before and after are also fitted alone and
compared on the validation split (full ranking P@5), the check that the faster PITF
learns the same. `--steps N` first times N single training steps of each kind, alternating,
in wall and in process CPU time (with one thread, the CPU time is the work done, whatever
else the machine runs). Prints one summary line per figure.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from phr_cli.data.cases import build_cases
from phr_cli.data.graph import Graph, build_graph, posts_from_store, split_posts
from phr_cli.data.store import load_store
from phr_cli.evaluation.metrics import evaluate
from phr_cli.model.config import ModelConfig, NetworkConfig
from phr_cli.model.network import bpr_loss
from phr_cli.model.phr import PHRModel
from phr_cli.model.pitf import PITF, PITFConfig
from phr_cli.training.comparison import evaluate_store
from phr_cli.training.config import TrainConfig
from phr_cli.training.train import BatchScores, NegativeSampler, train_from_store

KINDS = {
    "before": (ModelConfig(NetworkConfig(aggregation="index_add", modalities="all")), {"adam": "single"},
               PITFConfig(modalities="all")),
    "after": (ModelConfig(), {}, PITFConfig()),
}


def time_steps(graph: Graph, batch_size: int, n_steps: int) -> dict[str, tuple[float, float]]:
    """Fastest (wall, CPU) seconds of one training step of each kind on the same batch, alternating."""
    rng = np.random.default_rng(0)
    sampler = NegativeSampler(graph.triples, graph.n_hashtags)
    rows = sampler.trainable[rng.permutation(len(sampler.trainable))[:batch_size]]
    batch = torch.as_tensor(graph.triples[rows])
    users, items = batch[:, 0], batch[:, 2]
    hashtags = torch.cat([batch[:, 1:2], torch.as_tensor(sampler.sample(rows, 1, rng))], dim=1)
    steps = {}
    for kind, (model_config, train_options, _) in KINDS.items():
        config = TrainConfig(batch_size=batch_size, device="cpu", **train_options)
        torch.manual_seed(0)
        model = PHRModel.from_graph(model_config, graph)
        if model.evidence is not None:
            model.evidence.prepare_training()
        scores = BatchScores(model, config.step_propagation, item_id_dropout=0.5)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, fused=config.adam == "fused",
                                     foreach=config.adam == "foreach")

        def step(model=model, scores=scores, optimizer=optimizer, config=config) -> None:
            result = scores(users, items, hashtags)
            loss = bpr_loss(result[:, 0], result[:, 1:]) + config.l2 * model.network.embedding_l2(users, hashtags)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        step()  # warm-up
        steps[kind] = step
    best = {kind: (math.inf, math.inf) for kind in KINDS}
    for _ in range(n_steps):
        for kind, step in steps.items():
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[kind] = (min(wall, best[kind][0]), min(cpu, best[kind][1]))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("/work/scratch/lastfm/features.h5"))
    parser.add_argument("--work", type=Path, default=Path("bench_work/lastfm_speed"), help="checkpoints go here")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="train each kind this many times, alternating")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--steps", type=int, default=0, help="first time this many single steps of each kind")
    parser.add_argument("--no-train", action="store_true", help="skip the epochs (and the evaluation)")
    parser.add_argument("--no-evaluate", action="store_true", help="time the training epochs only")
    parser.add_argument("--pitf-validation", action="store_true",
                        help="also fit PITF before and after alone and compare validation P@5")
    parser.add_argument("--pitf-epochs", type=int, help="PITF epochs for --pitf-validation (default PITF's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tag = f"batch={args.batch_size} threads={torch.get_num_threads()} load={os.getloadavg()[0]:.1f}"

    posts = posts_from_store(load_store(args.store)).posts
    split = split_posts(posts, seed=0, by="post")
    graph = build_graph(posts.subset(split.train))
    print(f"lastfm {tag}: {len(posts)} posts; training graph {graph.n_users} users, {graph.n_hashtags} "
          f"hashtags, {graph.n_items} items, {len(graph.triples)} triples, "
          f"{math.ceil(len(graph.triples) / args.batch_size)} steps/epoch")
    for kind, (model_config, _, _) in KINDS.items():
        model = PHRModel.from_graph(model_config, graph)
        print(f"parameters {kind}: {sum(p.numel() for p in model.parameters()):,} "
              f"(modalities {', '.join(model.network.item_encoder.widths)})")

    if args.steps:
        best = time_steps(graph, args.batch_size, args.steps)
        (wall_before, cpu_before), (wall_after, cpu_after) = best["before"], best["after"]
        print(f"train step {tag}: fastest of {args.steps} alternating: before {wall_before:.3f} s wall / "
              f"{cpu_before:.3f} s CPU, after {wall_after:.3f} s wall / {cpu_after:.3f} s CPU; "
              f"{wall_before / wall_after:.2f}x faster in wall time, {cpu_before / cpu_after:.2f}x in CPU time")
    seconds: dict[str, float] = {}
    losses: dict[str, list[float]] = {}
    for kind in [] if args.no_train else list(KINDS) * args.repeats:
        model_config, train_options, _ = KINDS[kind]
        outcome = train_from_store(
            args.store, args.work / f"{kind}.pt", model_config,
            TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device="cpu", patience=args.epochs,
                        **train_options),
            resume=False)
        history = outcome.result.history
        fastest = min(h["train_seconds"] for h in history)
        seconds[kind] = min(fastest, seconds.get(kind, math.inf))
        losses[kind] = [h["loss"] for h in history]
        print(f"train {kind} {tag}: {fastest:.2f} s fastest training pass of {len(history)} epoch(s) "
              f"(+ {history[0]['seconds'] - history[0]['train_seconds']:.2f} s validation and checkpoint); "
              f"losses {', '.join(f'{x:.5f}' for x in losses[kind])}")
    if seconds:
        print(f"train speed-up {tag}: an epoch {seconds['before'] / seconds['after']:.2f}x faster "
              f"({seconds['after']:.2f} s vs {seconds['before']:.2f} s, fastest of the same run)")

    if args.pitf_validation:
        validation = build_cases(posts, split.validation, graph)
        for kind, (_, _, pitf_config) in KINDS.items():
            pitf_config = replace(pitf_config, epochs=args.pitf_epochs or pitf_config.epochs)
            wall, cpu = time.perf_counter(), time.process_time()
            pitf = PITF(graph, pitf_config)
            pitf.fit()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            metrics = evaluate(pitf, posts, validation, protocol="full", ks=(5,))["full"]["all"]
            print(f"PITF {kind} {tag}: {pitf_config.epochs} epochs in {wall:.1f} s wall, {cpu:.1f} s CPU; "
                  f"validation P@5 {metrics['P@5']:.4f}, R@5 {metrics['R@5']:.4f} ({len(validation)} cases, "
                  "full ranking)")

    if args.no_evaluate or args.no_train:
        return
    walls: dict[str, float] = {}
    for kind, (_, _, pitf_config) in KINDS.items():
        started = time.perf_counter()
        comparison = evaluate_store(args.store, args.work / f"{kind}.pt", "both", pitf=pitf_config)
        walls[kind] = time.perf_counter() - started
        methods = "; ".join(f"{m.name} {m.seconds:.1f} s (full P@5 {m.metrics['full']['all']['P@5']:.3f})"
                            for m in comparison.methods)
        print(f"evaluate {kind} {tag}: {walls[kind]:.1f} s for {comparison.counts['cases']} test cases; {methods}")
    print(f"evaluate speed-up {tag}: {walls['before'] / walls['after']:.2f}x faster "
          f"({walls['after']:.1f} s vs {walls['before']:.1f} s, same run)")


if __name__ == "__main__":
    main()
