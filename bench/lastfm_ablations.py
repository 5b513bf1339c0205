"""Does each evidence term matter? The default model against itself without one part, paired.

    python bench/lastfm_ablations.py --work DIR --split time [--seed 0] [--json-out DIR] [--parts NAME ...]

Uses the store (and, when there, the default checkpoint) that `bench/lastfm.py --work DIR
--splits SPLIT` wrote; trains the default model once more without each part below (same seed,
so the same split and initialisation), scores every checkpoint on the same test cases (full
ranking) and tests each ablation against the default model with the paired tests of `phr
evaluate` (Student's t and Fisher's randomisation on P@5 and nDCG@5, Holm-corrected over the
ablations). Writes DIR/lastfm-ablations-SPLIT.json for bench/lastfm_results.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from lastfm import option_changes

from phr_cli.devices import resolve_device
from phr_cli.evaluation.measures import KS
from phr_cli.evaluation.significance import compare_to_model, tested_metrics
from phr_cli.model.config import ModelConfig
from phr_cli.training.comparison import evaluate_store
from phr_cli.training.config import TrainConfig, with_settings
from phr_cli.training.seeds import seed_checkpoint
from phr_cli.training.train import train_from_store

# One part of the default model switched off each (`--set` names of bench/lastfm.py).
ABLATIONS = {
    "without recency": ["recency=false"],
    "without similar own posts": ["similar_posts=false"],
    "without the count evidence": ["evidence=false"],
    "without PITF's factors": ["factors=false"],
    "without the re-ranker": ["rerank=false"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="bench/lastfm.py's --work folder")
    parser.add_argument("--split", default="time", choices=("post", "item", "time"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json-out", type=Path, help="write DIR/lastfm-ablations-SPLIT.json")
    parser.add_argument("--parts", nargs="+", choices=list(ABLATIONS), default=list(ABLATIONS),
                        help="the ablations to run (default: all)")
    args = parser.parse_args()
    store = args.work / "features.h5"
    base_model, base_training = ModelConfig(), replace(TrainConfig(device=args.device), seed=args.seed)
    default = seed_checkpoint(args.work / f"gcn-phr-{args.split}.pt", args.seed)
    train_from_store(store, default, base_model, base_training, split_by=args.split)  # kept when already there
    checkpoints = {"default model": default}
    for name in args.parts:
        changes = ABLATIONS[name]
        model, training = with_settings(base_model, base_training, option_changes(changes, base_model, base_training))
        path = args.work / f"ablation-{args.split}-{changes[0].split('=')[0]}-seed{args.seed}.pt"
        outcome = train_from_store(store, path, model, training, split_by=args.split)
        print(f"lastfm ablation split={args.split} {name}: best epoch {outcome.result.best_epoch}", flush=True)
        checkpoints[name] = path
    device = resolve_device(args.device)
    results = {name: evaluate_store(store, path, "full", baselines=(), device=device, seed=0).methods[0]
               for name, path in checkpoints.items()}
    metrics = tested_metrics(list(KS))
    model = results.pop("default model")
    tests = compare_to_model(model.cases["full"].metrics, {n: r.cases["full"].metrics for n, r in results.items()},
                             metrics, seed=0)
    rows = [{"name": "default model", "metrics": model.metrics["full"]["all"], "tests": {}}]
    rows += [{"name": name, "metrics": result.metrics["full"]["all"], "tests": tests[name]}
             for name, result in results.items()]
    for row in rows:
        figures = " ".join(f"{m} {row['metrics'][m]:.4f}" for m in metrics)
        p_values = " ".join(f"p({m}) {row['tests'][m]['student_holm']:.2g}/{row['tests'][m]['fisher_holm']:.2g}"
                            for m in row["tests"])
        print(f"lastfm ablation split={args.split} {row['name']:28s} {figures} {p_values}")
    if args.json_out is not None:
        args.json_out.mkdir(parents=True, exist_ok=True)
        (args.json_out / f"lastfm-ablations-{args.split}.json").write_text(
            json.dumps({"split": args.split, "seed": args.seed, "ablations": {n: ABLATIONS[n] for n in args.parts},
                        "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
