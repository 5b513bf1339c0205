"""docs/results.md from the JSON that `bench/lastfm.py --seeds N --json-out DIR` writes.

    python bench/lastfm_results.py DIR > docs/results.md

Reads DIR/lastfm-{post,item,time}.json (each `phr evaluate --json` of the split's checkpoints,
one a seed) and writes the page: the full-ranking table of every method as mean ± standard
deviation over the seeds with each baseline's paired tests against GCN-PHR, the lead over the
best baseline, the paper's sampled protocol, and the figures by segment. Every number on the
page comes from those files; the prose around them states no figure of its own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

MODEL = "GCN-PHR"
CONTENT_ONLY = "content-only"  # the same model without graph messages: retrained by `phr evaluate`
SPLITS = {
    "post": "random posts (`--split-by post`)",
    "item": "artists held out (`--split-by item`, the analogue of a new video)",
    "time": "time (`--split-by time`, the latest 10 % of posts tested)",
}
TABLE_METRICS = ("P@5", "R@5", "F1@5", "nDCG@5", "MAP@5", "MRR@5", "P@10", "nDCG@10")
TESTED = ("P@5", "nDCG@5")  # the metrics `phr evaluate` tests for significance
SEGMENT_METRIC = "R@5"


def spread(mean: float, std: float, seeds: int) -> str:
    return f"{mean:.3f} ± {std:.3f}" if seeds > 1 else f"{mean:.3f}"


def worst_p(result: dict, name: str, protocol: str, metric: str, test: str) -> float | None:
    """The largest Holm-corrected p-value of `name` against the model over the seeds: significant
    on every seed when it is small."""
    values = []
    for comparison in result["comparisons"]:
        method = next((m for m in comparison["methods"] if m["name"] == name), None)
        tested = (method or {}).get("significance", {}).get(protocol, {}).get(metric)
        if tested is None:
            return None
        values.append(tested[f"{test}_holm"])
    return max(values) if values else None


def p_text(p: float | None) -> str:
    if p is None:
        return "–"
    mark = "**" if p < 0.01 else "*" if p < 0.05 else ""
    if p == 0:  # below the smallest double: scipy's t-test underflows
        return f"< 1e-300{mark}"
    return f"{p:.0e}{mark}" if p < 1e-3 else f"{p:.3f}{mark}"


def method_table(result: dict, protocol: str) -> list[str]:
    seeds = result["seeds"]
    header = ["method", *TABLE_METRICS, "p (t, P@5)", "p (t, nDCG@5)", "p (Fisher, P@5)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in result["methods"]:
        means, stds = method["metrics"][protocol]["all"], method["std"][protocol]["all"]
        cells = [spread(means[m], stds[m], seeds) for m in TABLE_METRICS]
        if method["name"] == MODEL:
            cells = [f"**{cell}**" for cell in cells]
            tests = ["", "", ""]
        else:
            tests = [p_text(worst_p(result, method["name"], protocol, metric, test))
                     for metric, test in (("P@5", "student"), ("nDCG@5", "student"), ("P@5", "fisher"))]
        lines.append("| " + " | ".join([method["name"], *cells, *tests]) + " |")
    return lines


def lead(result: dict, protocol: str = "full", metric: str = "P@5") -> tuple[str, float, float]:
    """The best baseline by mean `metric` (content-only is the model's ablation, not a baseline)."""
    means = {m["name"]: m["metrics"][protocol]["all"][metric] for m in result["methods"]}
    baselines = {name: value for name, value in means.items() if name not in (MODEL, CONTENT_ONLY)}
    best = max(baselines, key=baselines.__getitem__)
    return best, baselines[best], means[MODEL]


def segment_table(result: dict, names: list[str]) -> list[str]:
    seeds = result["seeds"]
    first = next(m for m in result["methods"] if m["name"] == MODEL)["segments"]["full"]
    columns = [(kind, segment) for kind in ("user activity", "hashtag frequency", "item") for segment in first[kind]]
    coverage = next(key for key in first if key.startswith("coverage@"))
    header = ["method", *(f"{segment} video" if kind == "item" else segment for kind, segment in columns), coverage]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.append("| cases | " + " | ".join(f"{first[kind][segment]['cases']:.0f}" for kind, segment in columns)
                 + " | |")
    for method in result["methods"]:
        if method["name"] not in names:
            continue
        values, stds = method["segments"]["full"], method["segments_std"]["full"]
        cells = [spread(values[k][s][SEGMENT_METRIC], stds[k][s][SEGMENT_METRIC], seeds)
                 if SEGMENT_METRIC in values[k][s] else "–" for k, s in columns]
        lines.append("| " + " | ".join([method["name"], *cells, spread(values[coverage], stds[coverage], seeds)])
                     + " |")
    return lines


def ablation_section(ablations: dict) -> list[str]:
    """bench/lastfm_ablations.py's rows: the default model without one part, paired against it."""
    rows = ablations["rows"]
    tested = list(rows[1]["tests"]) if len(rows) > 1 else []
    header = ["model", *(f"{m}" for m in TABLE_METRICS),
              *(f"p ({test}, {m})" for m in tested for test in ("t", "Fisher"))]
    lines = [f"## Does each evidence term matter? ({SPLITS[ablations['split']].split(' (')[0]} split, seed "
             f"{ablations['seed']})", "",
             "The default model trained again without one part, same seed (same split and initialisation), "
             "all scored", "on the same test cases; each row's paired tests against the default model, "
             "Holm-corrected over the rows:", "",
             "    python bench/lastfm_ablations.py --work bench_work/lastfm --split time --json-out "
             "bench_work/lastfm/json", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        tests = [p_text(row["tests"][m][f"{test}_holm"]) if row["tests"] else ""
                 for m in tested for test in ("student", "fisher")]
        lines.append("| " + " | ".join([row["name"], *(f"{row['metrics'][m]:.3f}" for m in TABLE_METRICS), *tests])
                     + " |")
    return [*lines, ""]


def page(results: dict[str, dict], ablations: list[dict], recorded: str = "") -> str:
    out = ["# Results on real data", "",
           "GCN-PHR (phr's default model, as `phr train` writes it) against every baseline of `phr evaluate`",
           "on HetRec 2011 Last.fm 2K: each (user, artist) pair a text-only post, the artist's name its",
           "caption, the user's tags its hashtags (`bench/lastfm_data.py`; 59,849 posts, 1,348 users,",
           "2,132 tags after the 5-core). docs/evaluation.md defines the protocol, the metrics, the paired",
           "tests and the segments. A demo store (fewer than 30 test cases) measures nothing; these do.", "",
           "Every figure is the mean ± standard deviation over the split's seeds (the tables say how",
           "many; each seed is its own split and initialisation; on the time split a seed only orders the",
           "posts of equal dates, which are month-grained, so its splits differ a little). The p-values are",
           "each baseline's paired test against GCN-PHR over the test cases, Holm-corrected over the",
           "baselines, and the largest of the seeds: `**` p < 0.01 and `*` p < 0.05 on every seed. The",
           "randomisation test's 10,000 draws cannot go below p = 1/10,001 (times the Holm factor).", "",
           *([recorded, ""] if recorded else []),
           "## How this page is rebuilt", "",
           "    OMP_NUM_THREADS=1 python bench/lastfm.py ../shared/datasets/lastfm-2k --seeds 3 \\",
           "        --json-out bench_work/lastfm/json      # --splits post (or item, time) to run them apart",
           "    python bench/lastfm_results.py bench_work/lastfm/json > docs/results.md", "",
           "The same through the CLI, for one split:", "",
           "    phr train --store bench_work/lastfm/features.h5 --checkpoint models/lastfm.pt --seeds 3",
           "    phr evaluate --store bench_work/lastfm/features.h5 --checkpoint 'models/lastfm*.pt' --segments",
           "", "## The lead over the best baseline (full ranking, P@5)", "",
           "| split | seeds | GCN-PHR | best baseline | ratio | largest p (t-test, Holm) | content-only | p, GCN-PHR "
           "against content-only |", "|---|---|---|---|---|---|---|---|"]
    for split, result in results.items():
        best, best_value, model = lead(result)
        model_std = next(m for m in result["methods"] if m["name"] == MODEL)["std"]["full"]["all"]["P@5"]
        content = next((m for m in result["methods"] if m["name"] == CONTENT_ONLY), None)
        content_text = spread(content["metrics"]["full"]["all"]["P@5"], content["std"]["full"]["all"]["P@5"],
                              result["seeds"]) if content else "–"
        model_text = spread(model, model_std, result["seeds"])
        out.append(f"| {SPLITS[split].split(' (')[0]} | {result['seeds']} | **{model_text}** | "
                   f"{best} {best_value:.3f} | {model / best_value:.2f}× | "
                   f"{p_text(worst_p(result, best, 'full', 'P@5', 'student'))} | {content_text} | "
                   f"{p_text(worst_p(result, CONTENT_ONLY, 'full', 'P@5', 'student'))} |")
    out += ["", "Content-only is GCN-PHR's scorer, evidence and training without the graph's messages: its",
            "row answers whether the graph adds anything on this data. The p-values are two-sided: a",
            "ratio below 1× with a small p is a baseline that is better.", ""]
    for ablation in ablations:
        out += ablation_section(ablation)
    for split, result in results.items():
        counts = result["comparisons"][0]["counts"]
        out += [f"## {SPLITS[split]}", "",
                f"{counts.get('cases', 0)} test cases ({counts.get('cold_cases', 0)} by users without a training "
                f"post) on seed 0. Full ranking (every hashtag known to training):", ""]
        out += method_table(result, "full")
        out += ["", "The paper's sampled protocol (the ground truth among 1,000 random hashtags):", ""]
        out += method_table(result, "sampled")
        best, _, _ = lead(result)
        shown = [MODEL, best] + ([CONTENT_ONLY] if any(m["name"] == CONTENT_ONLY for m in result["methods"]) else [])
        out += ["", f"By segment ({SEGMENT_METRIC}, full ranking; users by training posts, hashtags by training "
                "frequency, head to tail, thirds of the uses; the test post's video seen in training or new) and "
                "the share of all hashtags that appear in at least one top 5:", ""]
        out += segment_table(result, shown)
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where bench/lastfm.py --json-out wrote lastfm-SPLIT.json")
    parser.add_argument("--recorded", default="", help="when, where and with which code the figures were made")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    ablations = []
    for split in SPLITS:
        path = args.folder / f"lastfm-{split}.json"
        if path.is_file():
            results[split] = json.loads(path.read_text())
        path = args.folder / f"lastfm-ablations-{split}.json"
        if path.is_file():
            ablations.append(json.loads(path.read_text()))
    if not results:
        raise SystemExit(f"{args.folder}: no lastfm-SPLIT.json; run bench/lastfm.py --json-out {args.folder}")
    print(page(results, ablations, args.recorded))


if __name__ == "__main__":
    main()
