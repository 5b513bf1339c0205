"""GCN-PHR against the baselines on real personalised tagging data: HetRec 2011 Last.fm 2K.

    python bench/lastfm.py ../shared/datasets/lastfm-2k [--work DIR] [--epochs N] [--patience N]
        [--splits post item time] [--variant paper] [--set NAME=VALUE ...] [--seeds N] [--json-out DIR]

Each (user, artist) pair becomes a text-only post (caption = the artist's name, hashtags =
the user's tags for it) written to a posts.jsonl manifest; then the product's own code
path runs: `extract` (MiniLM + PCA text features; no video, so visual and acoustic are
masked and the random ResNet50/VGGish weights are never applied), `train`, `evaluate`.
Three splits: random posts, artists held out (the analogue of a new micro-video), and by
time (each post dated by the user's latest tagging of the artist; the latest 10 % tested).
Prints one summary line per method, split and protocol; with --seeds N, N checkpoints per split
(seeds 0 … N−1, each its own split and initialisation) and each figure as mean ± standard deviation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from lastfm_data import load_lastfm_captions, load_lastfm_posts

from phr_cli.data.graph import SPLITS
from phr_cli.devices import resolve_device
from phr_cli.extract import ExtractOptions, extract
from phr_cli.model.config import ModelConfig, NetworkConfig
from phr_cli.model.pitf import PITFConfig
from phr_cli.training.comparison import evaluate_checkpoints, summarise_seeds
from phr_cli.training.config import TrainConfig, settings, with_settings
from phr_cli.training.seeds import seed_checkpoint, train_seeds


def write_manifest(dataset: Path, folder: Path, min_count: int = 5) -> int:
    """posts.jsonl of the dataset's posts after the min_count-core (1: every post); returns how many."""
    posts = load_lastfm_posts(dataset, min_count)
    captions = load_lastfm_captions(dataset, posts)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "posts.jsonl", "w", encoding="utf-8") as handle:
        for user, caption, tags, time in zip(posts.users, captions, posts.hashtags, posts.times):
            handle.write(json.dumps({"user": user, "caption": caption, "hashtags": tags, "time": int(time)},
                                    ensure_ascii=False) + "\n")
    return len(posts)


def option_changes(assignments: list[str], model: ModelConfig, training: TrainConfig) -> dict[str, object]:
    """NAME=VALUE pairs as `config.settings` names, each value parsed as its option's type. A
    name may be short where it is not ambiguous: a part for its switch ("evidence" for
    "evidence.enabled"), a field of one part ("recency" for "evidence.recency")."""
    options = settings(model, training)
    changes: dict[str, object] = {}
    for assignment in assignments:
        name, _, text = assignment.partition("=")
        matches = [name] if name in options else (
            [f"{name}.enabled"] if f"{name}.enabled" in options
            else [option for option in options if option.endswith(f".{name}")])
        if len(matches) != 1:
            raise SystemExit(f"--set {assignment}: no single option {name!r}; options: {', '.join(options)}")
        current = options[matches[0]]
        if isinstance(current, bool):
            value: object = text.lower() in ("1", "true", "yes", "on")
        elif isinstance(current, int):
            value = int(text)
        elif isinstance(current, float) or current is None:
            value = None if text.lower() == "none" else float(text)
        else:
            value = text
        changes[matches[0]] = value
    return changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="folder of the Last.fm 2K files")
    parser.add_argument("--work", type=Path, default=Path("bench_work/lastfm"))
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--patience", type=int, default=5, help="epochs without a validation gain before stopping")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--variant", default="full", help="full (the default model), paper, or an attention "
                        "ablation (no_attention, no_user_guidance, no_hashtag_guidance)")
    parser.add_argument("--pitf-epochs", type=int, default=200, help="at most; PITF stops when validation P@5 "
                        "stops rising")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", dest="changes", action="append", default=[], metavar="NAME=VALUE",
                        help="change one option (an ablation), e.g. factors=false, recency=false, "
                        "rerank=false, network.residual=false; repeatable")
    parser.add_argument("--seeds", type=int, default=1, help="checkpoints per split, seeds 0 … N-1")
    parser.add_argument("--json-out", type=Path, help="also write each split's figures (`phr evaluate --json` of its "
                        "checkpoints) to DIR/lastfm-SPLIT.json, which docs/results.md is built from")
    args = parser.parse_args()
    network = NetworkConfig(dim=args.dim) if args.variant == "paper" else NetworkConfig(dim=args.dim,
                                                                                        variant=args.variant)
    base_model = ModelConfig.paper(network) if args.variant == "paper" else ModelConfig(network)
    base_training = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                                device=args.device)
    model_config, train_config = with_settings(base_model, base_training,
                                               option_changes(args.changes, base_model, base_training))

    posts_dir, store = args.work / "posts", args.work / "features.h5"
    started = time.perf_counter()
    n_posts = write_manifest(args.dataset, posts_dir)
    report = extract(posts_dir, store, ExtractOptions(device=args.device, random_weights=True))
    print(f"lastfm extract: {n_posts} posts, text features in {report.seconds:.1f} s")

    seeds = list(range(args.seeds))
    for split_by in args.splits:
        checkpoint = args.work / f"gcn-phr-{split_by}.pt"
        outcomes = train_seeds(store, checkpoint, model_config, train_config, seeds, split_by=split_by)
        for seed, outcome in zip(seeds, outcomes):
            history = outcome.result.history
            per_epoch = sum(h["seconds"] for h in history) / max(len(history), 1)
            print(f"lastfm train split={split_by} seed={seed}: {len(history)} epochs, {per_epoch:.2f} s/epoch on "
                  f"{outcome.result.device}, best epoch {outcome.result.best_epoch} "
                  f"(validation {TrainConfig().validation_metric} {outcome.result.best_metric:.4f})")
        comparisons = evaluate_checkpoints(store, [seed_checkpoint(checkpoint, seed) for seed in seeds], "both",
                                           device=resolve_device(args.device),
                                           pitf=PITFConfig(epochs=args.pitf_epochs, device=args.device))
        for comparison in comparisons:
            counts = comparison.counts
            print(f"lastfm split={split_by} seed={comparison.split['seed']}: {counts['cases']} test cases, "
                  f"{counts['cold_cases']} cold, {counts['dropped_hashtags']} unseen test hashtags dropped, "
                  f"{counts['dropped_cases']} cases dropped")
        summary = summarise_seeds(comparisons)
        if args.json_out is not None:
            args.json_out.mkdir(parents=True, exist_ok=True)
            (args.json_out / f"lastfm-{split_by}.json").write_text(json.dumps(summary.to_dict(), indent=1))
        for method in summary.methods:
            note = next((m.note for m in comparisons[0].methods if m.name == method["name"]), "")
            for protocol in ("sampled", "full"):
                means, spread = method["metrics"][protocol]["all"], method["std"][protocol]["all"]
                figures = " ".join(f"{name} {means[name]:.3f}" + (f"±{spread[name]:.3f}" if len(seeds) > 1 else "")
                                   for name in ("P@5", "R@5", "A@5", "F1@5", "nDCG@5", "MAP@5", "MRR@5",
                                                "P@10", "R@10", "A@10"))
                marks = [c.methods[i].significance.get(protocol, {}).get("P@5", {}).get("mark", "")
                         for c in comparisons for i, m in enumerate(c.methods) if m.name == method["name"]]
                print(f"lastfm split={split_by} {protocol:7s} {method['name']:22s} {figures}"
                      + (f"  P@5 vs GCN-PHR per seed: {' '.join(mark or 'ns' for mark in marks)}"
                         if any(c.methods[0].name != method["name"] for c in comparisons) else "")
                      + (f"  ({note})" if note and protocol == "full" else ""))
    print(f"lastfm total: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
