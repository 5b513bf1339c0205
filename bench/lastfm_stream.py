"""The stream protocol on Last.fm's time split: every method frozen and with each test post
folded in once scored (`phr evaluate --protocol stream`), side by side.

    python bench/lastfm_stream.py [--work DIR] [--content-only] [--json-out FILE]

Reads the store and the time-split checkpoint that `bench/lastfm.py --splits time --work DIR`
wrote (it trains them). Prints, per method, full-ranking P@5 and R@5 frozen and folded in and
the ratio; then the model folded in against itself frozen and against the best baseline
folded in (the targets: ≥ 1.04× and ≥ 1.10×). The content-only model is a second training:
left out unless --content-only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from phr_cli.data.provenance import select_trained_posts
from phr_cli.data.store import load_store
from phr_cli.training.checkpoint import load_checkpoint
from phr_cli.training.comparison import BASELINES, evaluate_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("bench_work/lastfm"))
    parser.add_argument("--content-only", action="store_true", help="also the content-only model (a training)")
    parser.add_argument("--json-out", type=Path, help="write `phr evaluate --json`'s result here too")
    args = parser.parse_args()
    store, checkpoint = args.work / "features.h5", args.work / "gcn-phr-time.pt"
    baselines = BASELINES if args.content_only else tuple(b for b in BASELINES if b != "content-only")
    started = time.perf_counter()
    comparison = evaluate_store(store, checkpoint, "stream", baselines=baselines)
    seconds = time.perf_counter() - started
    trained = load_checkpoint(checkpoint)
    selected, _ = select_trained_posts(load_store(store), trained.provenance)
    assert selected.posts.times is not None
    moments = len(np.unique(selected.posts.times[trained.split.test]))
    # Posts of one time are scored before any of them is folded in: the history advances this often.
    print(f"lastfm stream split=time: {comparison.counts['cases']} test cases over {moments} distinct post times; "
          f"{seconds:.0f} s")
    print(f"{'method':<24} {'P@5 frozen':>10} {'P@5 stream':>10} {'ratio':>6} {'R@5 frozen':>10} {'R@5 stream':>10}")
    figures = {}
    for method in comparison.methods:
        full, stream = method.metrics["full"]["all"], method.metrics["stream"]["all"]
        figures[method.name] = (full["P@5"], stream["P@5"])
        print(f"{method.name:<24} {full['P@5']:>10.4f} {stream['P@5']:>10.4f} {stream['P@5'] / full['P@5']:>6.3f} "
              f"{full['R@5']:>10.4f} {stream['R@5']:>10.4f}" + (f"  ({method.note})" if "frozen" in method.note
                                                                  else ""))
    model, others = comparison.methods[0].name, [m.name for m in comparison.methods[1:]]
    best = max(others, key=lambda name: figures[name][1])
    frozen, folded = figures[model]
    print(f"{model} folded in / itself frozen: {folded / frozen:.3f} (target ≥ 1.04); / the best baseline folded in "
          f"({best}, {figures[best][1]:.4f}): {folded / figures[best][1]:.3f} (target ≥ 1.10)")
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(comparison.to_dict(), indent=2))


if __name__ == "__main__":
    main()
