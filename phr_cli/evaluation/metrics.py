"""Evaluation protocol (docs/evaluation.md): test cases, sampled and full ranking, the metrics.

A test case is one post: (user, item, ground-truth hashtags G). Hashtags never seen in
training cannot be recommended, so they are dropped from G and cases left empty are
dropped; both are counted. Two protocols:
- "sampled" (the paper's): rank G ∪ 1,000 hashtags drawn uniformly without replacement
  from the known hashtags not in G, drawn once from the seed so that every method ranks
  the same candidates;
- "full": rank every known hashtag.
Ties are broken uniformly at random, so a method gains nothing from constant scores.
Metrics at each K: P, R, A (hit rate), F1, nDCG, MAP and MRR, as trec_eval and ranx define
them for binary relevance (G relevant, every other hashtag not).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from phr_cli.data.cases import TestCases
from phr_cli.data.graph import PostData
from phr_cli.evaluation.measures import KS, NEGATIVES, metric_names

# Negatives are drawn per block of this many cases, each block from its own stream of the
# seed, so they do not depend on the batch size and need not be held for all cases at once.
NEGATIVE_BLOCK = 4096
# Random streams derived from the seed: one per purpose, so that "both" equals running
# "sampled" and "full" on their own.
_NEGATIVES_STREAM, _SAMPLED_TIES_STREAM, _FULL_TIES_STREAM, _STREAM_TIES_STREAM = 0, 1, 2, 3

# "stream": the full protocol, frozen and with the test posts folded in as they come (training/stream.py).
ProtocolName = Literal["sampled", "full", "both", "stream"]


class Scorer(Protocol):
    def score(self, users: np.ndarray, posts: PostData) -> np.ndarray | Tensor:
        """(len(posts), n_hashtags) scores; users[b] is the graph user index, -1 when cold.

        A tensor is ranked on its device: only each row's top crosses to the host.
        """
        ...






def _flatten(relevant: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sizes, row of each entry and the entries of a ragged list of index arrays."""
    sizes = np.asarray([len(r) for r in relevant], dtype=np.int64)
    row_of = np.repeat(np.arange(len(relevant), dtype=np.int64), sizes)
    flat = np.concatenate([np.asarray(r, dtype=np.int64) for r in relevant]) if len(relevant) else np.zeros(0, np.int64)
    return sizes, row_of, flat


def _ranked_columns(scores: np.ndarray | Tensor, depth: int, rng: np.random.Generator) -> np.ndarray:
    """(B, min(depth, C)): the column ranked r-th in row b.

    Exact random tie-breaking in O(C) per row: every column scoring at least the row's
    depth-th largest score is a contender (all of the top, plus whatever ties with its
    last place); only the contenders are sorted, by score and then by a random key.
    NaN scores rank last. The contenders are found where the scores are (a tensor's
    device); only they are sorted on the host.
    """
    scores = torch.as_tensor(scores)
    n_rows, n_columns = scores.shape
    depth = min(depth, n_columns)
    if scores.is_floating_point() and bool(scores.isnan().any()):
        scores = scores.nan_to_num(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    threshold = scores.topk(depth, dim=1).values[:, -1:]  # each row's depth-th largest score
    rows_t, columns_t = torch.nonzero(scores >= threshold, as_tuple=True)  # row-major, as numpy's
    values = scores[rows_t, columns_t].cpu().numpy()
    rows, columns = rows_t.cpu().numpy(), columns_t.cpu().numpy()
    order = np.lexsort((rng.random(len(rows)), -values, rows))
    rows, columns = rows[order], columns[order]
    row_starts = np.searchsorted(rows, np.arange(n_rows))
    place = np.arange(len(rows)) - row_starts[rows]
    in_top = place < depth
    ranked = np.empty((n_rows, depth), dtype=np.int64)
    ranked[rows[in_top], place[in_top]] = columns[in_top]
    return ranked


def stream_ranking(depth: int, seed: int) -> Callable[[np.ndarray | Tensor], np.ndarray]:
    """Ranks rows of scores batch after batch (the stream protocol's): each row's top depth
    columns, ties broken by one random stream of the seed."""
    rng = np.random.default_rng([seed, _STREAM_TIES_STREAM])
    return lambda scores: _ranked_columns(scores, depth, rng)


def ranked_hits(ranked: np.ndarray, relevant: Sequence[np.ndarray]) -> np.ndarray:
    """(B, D) bool: is ranked[b, r] in relevant[b]; -1 (a padding candidate) never is."""
    _, row_of, flat = _flatten(relevant)
    width = int(max(ranked.max(initial=-1), flat.max(initial=-1))) + 2
    relevant_keys = row_of * width + flat + 1
    ranked_keys = np.arange(len(ranked), dtype=np.int64)[:, None] * width + ranked + 1
    return np.isin(ranked_keys, relevant_keys)


def case_metrics(ranked: np.ndarray, relevant: Sequence[np.ndarray], ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Each case's metrics (docs/evaluation.md) from its ranking: ranked[b] the ids ranked
    first, at least min(max(ks), candidates) of them; relevant[b] the ids that count (G)."""
    sizes = np.asarray([len(r) for r in relevant], dtype=np.float64)
    if np.any(sizes == 0):
        raise ValueError("a row has no relevant column: drop empty cases first")
    hits = ranked_hits(ranked[:, : max(ks)], relevant).astype(np.float64)
    found_by_rank = np.cumsum(hits, axis=1)
    discounts = 1.0 / np.log2(np.arange(2, max(ks) + 2))
    ideal = np.cumsum(discounts)  # DCG of r relevant ids ranked first
    precision_at_hits = hits * found_by_rank / np.arange(1, hits.shape[1] + 1)
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1), hits.shape[1])
    metrics = {}
    for k in ks:
        depth = min(k, hits.shape[1])  # fewer candidates than K: still divided by K
        found = found_by_rank[:, depth - 1]
        metrics[f"P@{k}"] = found / k
        metrics[f"R@{k}"] = found / sizes
        metrics[f"A@{k}"] = (found > 0).astype(np.float64)
        metrics[f"F1@{k}"] = 2 * found / (k + sizes)  # 2PR / (P + R), 0 without a hit
        metrics[f"nDCG@{k}"] = hits[:, :depth] @ discounts[:depth] / ideal[np.minimum(sizes, k).astype(np.int64) - 1]
        metrics[f"MAP@{k}"] = precision_at_hits[:, :depth].sum(axis=1) / sizes
        metrics[f"MRR@{k}"] = np.where(first_hit < depth, 1.0 / (first_hit + 1), 0.0)
    return {name: metrics[name] for name in metric_names(ks)}


def _row_metrics(scores: np.ndarray | Tensor, relevant: Sequence[np.ndarray], ks: Sequence[int],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    if scores.ndim != 2 or scores.shape[0] != len(relevant):
        raise ValueError(f"scores {scores.shape} do not match {len(relevant)} ground-truth rows")
    return case_metrics(_ranked_columns(scores, max(ks), rng), relevant, ks)


def ranking_metrics(scores: np.ndarray | Tensor, relevant: list[np.ndarray], ks: Sequence[int] = KS,
                    rng: np.random.Generator | None = None) -> dict[str, float]:
    """Every metric of `metric_names(ks)` averaged over rows; scores (B, C), relevant[b] = row b's relevant columns.

    Ties are broken uniformly at random with rng (a fixed default when None).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    return {name: float(values.mean()) for name, values in _row_metrics(scores, relevant, ks, rng).items()}


def _negatives_by_keys(relevant: Sequence[np.ndarray], n_hashtags: int, width: int,
                       rng: np.random.Generator) -> np.ndarray:
    """For rows with few hashtags besides G: the width smallest of one random key per
    hashtag, G's keys pushed past the end (-1 where those are reached)."""
    _, row_of, flat = _flatten(relevant)
    keys = rng.random((len(relevant), n_hashtags))
    keys[row_of, flat] = 2.0
    if width < n_hashtags:
        chosen = np.argpartition(keys, width - 1, axis=1)[:, :width]
    else:
        chosen = np.tile(np.arange(n_hashtags), (len(relevant), 1))
    chosen[np.take_along_axis(keys, chosen, axis=1) > 1.0] = -1
    return chosen


def _negatives_by_rejection(relevant: Sequence[np.ndarray], n_hashtags: int, width: int,
                            rng: np.random.Generator) -> np.ndarray:
    """For rows with at least 2·width hashtags besides G: ranks among those hashtags drawn
    with replacement, duplicates redrawn until distinct (the procedure treats every rank
    alike, so each subset is equally likely), then mapped to hashtag indices."""
    sizes, row_of, flat = _flatten(relevant)
    available = n_hashtags - sizes
    ranks = rng.integers(0, available[:, None], size=(len(relevant), width))
    while True:
        ranks.sort(axis=1)
        duplicate = np.zeros(ranks.shape, dtype=bool)
        duplicate[:, 1:] = ranks[:, 1:] == ranks[:, :-1]
        if not duplicate.any():
            break
        ranks[duplicate] = rng.integers(0, available[np.nonzero(duplicate)[0]])
    # Rank x among the non-G hashtags is hashtag x + #{j : g_j - j <= x} (g sorted): one
    # searchsorted over all rows at once, each row offset into its own range.
    row_starts = np.cumsum(sizes) - sizes
    shifted = row_of * n_hashtags + flat - (np.arange(len(flat)) - row_starts[row_of])
    queries = np.arange(len(relevant), dtype=np.int64)[:, None] * n_hashtags + ranks
    return ranks + np.searchsorted(shifted, queries, side="right") - row_starts[:, None]


def _sample_negatives(relevant: Sequence[np.ndarray], n_hashtags: int, n_negatives: int,
                      rng: np.random.Generator) -> np.ndarray:
    """(B, min(n_negatives, n_hashtags)) hashtags not in each row's G (sorted, distinct),
    uniform without replacement; -1 pads a row that has fewer such hashtags."""
    width = min(n_negatives, n_hashtags)
    negatives = np.full((len(relevant), width), -1, dtype=np.int64)
    if width == 0:
        return negatives
    few_left = np.asarray([n_hashtags - len(r) < 2 * width for r in relevant], dtype=bool)
    for rows, sampler in ((np.flatnonzero(few_left), _negatives_by_keys),
                          (np.flatnonzero(~few_left), _negatives_by_rejection)):
        if len(rows):
            negatives[rows] = sampler([relevant[r] for r in rows.tolist()], n_hashtags, width, rng)
    return negatives


def _negatives_for_block(cases: TestCases, block: int, n_hashtags: int, n_negatives: int, seed: int) -> np.ndarray:
    start = block * NEGATIVE_BLOCK
    rng = np.random.default_rng([seed, _NEGATIVES_STREAM, block])
    return _sample_negatives(cases.relevant[start : start + NEGATIVE_BLOCK], n_hashtags, n_negatives, rng)


def sample_candidates(cases: TestCases, n_hashtags: int, n_negatives: int = NEGATIVES, seed: int = 0) -> np.ndarray:
    """The sampled protocol's negatives, (n_cases, min(n_negatives, n_hashtags)), -1 padded.

    A case's candidates are its ground truth plus its row here; the same seed gives the
    same negatives whichever method is evaluated.
    """
    n_blocks = -(-len(cases) // NEGATIVE_BLOCK)
    blocks = [_negatives_for_block(cases, b, n_hashtags, n_negatives, seed) for b in range(n_blocks)]
    return np.concatenate(blocks) if blocks else np.zeros((0, min(n_negatives, n_hashtags)), np.int64)


def _candidate_scores(scores: np.ndarray | Tensor, relevant: Sequence[np.ndarray],
                      negatives: np.ndarray) -> tuple[Tensor, np.ndarray]:
    """Scores of G (first) and the negatives per row, gathered where the scores are, and the
    hashtag of each candidate (-1 for padding, which scores -inf)."""
    sizes, row_of, flat = _flatten(relevant)
    ground_truth = np.full((len(relevant), int(sizes.max())), -1, dtype=np.int64)
    ground_truth[row_of, np.arange(len(flat)) - (np.cumsum(sizes) - sizes)[row_of]] = flat
    columns = np.concatenate([ground_truth, negatives], axis=1)
    scores = torch.as_tensor(scores)
    gathered = scores.gather(1, torch.as_tensor(np.maximum(columns, 0), device=scores.device))
    candidate_scores = gathered.to(torch.float64)
    candidate_scores[torch.as_tensor(columns < 0, device=scores.device)] = -math.inf
    return candidate_scores, columns


@dataclass
class RankedCases:
    """One protocol's outcome case by case: what the run files, the significance tests and
    the segments are made of (evaluate() keeps only the means)."""

    ranked: np.ndarray  # (cases, min(max K, candidates)) hashtag ranked r-th; -1 a padding candidate
    metrics: dict[str, np.ndarray]  # metric name -> (cases,) its value for each case


def rank_cases(scorer: Scorer, posts: PostData, cases: TestCases, protocol: ProtocolName = "both",
               ks: Sequence[int] = KS, seed: int = 0, batch_size: int = 512,
               n_negatives: int = NEGATIVES) -> dict[str, RankedCases]:
    """Each case's top max(ks) hashtags and metrics, per protocol ("sampled", "full").

    posts is the PostData that cases.rows index. Scores are computed batch by batch, so
    no (cases × hashtags) matrix is ever held whole.
    """
    protocols = ("sampled", "full") if protocol == "both" else (protocol,)
    if any(p not in ("sampled", "full") for p in protocols):
        raise ValueError(f"unknown protocol {protocol!r}: use 'sampled', 'full' or 'both'")
    tie_rngs = {"sampled": np.random.default_rng([seed, _SAMPLED_TIES_STREAM]),
                "full": np.random.default_rng([seed, _FULL_TIES_STREAM])}
    batches: dict[str, list[np.ndarray]] = {p: [] for p in protocols}
    n_hashtags: int | None = None

    for block_start in range(0, len(cases), NEGATIVE_BLOCK):
        block_stop = min(block_start + NEGATIVE_BLOCK, len(cases))
        negatives: np.ndarray | None = None
        for start in range(block_start, block_stop, batch_size):
            stop = min(start + batch_size, block_stop)
            scores = _batch_scores(scorer, posts, cases, start, stop, n_hashtags)
            n_hashtags = int(scores.shape[1])
            for p in protocols:
                if p == "full":
                    batches[p].append(_ranked_columns(scores, max(ks), tie_rngs[p]))
                    continue
                if negatives is None:
                    negatives = _negatives_for_block(cases, block_start // NEGATIVE_BLOCK,
                                                     n_hashtags, n_negatives, seed)
                offset = start - block_start
                candidate_scores, columns = _candidate_scores(
                    scores, cases.relevant[start:stop], negatives[offset : offset + stop - start])
                positions = _ranked_columns(candidate_scores, max(ks), tie_rngs[p])
                batches[p].append(np.take_along_axis(columns, positions, axis=1))
    outcome = {}
    for p in protocols:
        # A batch ranks fewer than max(ks) when it has fewer candidates (few hashtags, few
        # negatives): its rows are padded with -1, which never counts as a hit.
        ranked = np.concatenate([np.pad(rows, ((0, 0), (0, max(0, max(ks) - rows.shape[1]))), constant_values=-1)
                                 for rows in batches[p]]) if batches[p] else np.zeros((0, max(ks)), np.int64)
        outcome[p] = RankedCases(ranked, case_metrics(ranked, cases.relevant, ks))
    return outcome


def evaluate(scorer: Scorer, posts: PostData, cases: TestCases, protocol: ProtocolName = "both",
             ks: Sequence[int] = KS, seed: int = 0, batch_size: int = 512,
             n_negatives: int = NEGATIVES) -> dict:
    """Metrics per protocol, over all cases and split into warm and cold users, with counts.

    rank_cases() averaged: returns {"seed", "ks", "negatives", "counts": {posts, cases,
    warm_cases, cold_cases, dropped_hashtags, dropped_cases}, protocol: {"all" | "warm" |
    "cold": {"cases": n, "P@5": …, "R@5": …, "A@5": …, …}}}; a group without cases holds
    only "cases": 0.
    """
    return summarise(rank_cases(scorer, posts, cases, protocol, ks, seed, batch_size, n_negatives),
                     cases, ks, seed, n_negatives)


def summarise(outcome: dict[str, RankedCases], cases: TestCases, ks: Sequence[int], seed: int,
              n_negatives: int) -> dict:
    """evaluate()'s result from rank_cases()'s."""
    warm = cases.users >= 0
    result: dict = {
        "seed": seed,
        "ks": list(ks),
        "negatives": n_negatives,
        "counts": {
            "posts": cases.n_posts,
            "cases": len(cases),
            "warm_cases": int(warm.sum()),
            "cold_cases": cases.n_cold,
            "dropped_hashtags": cases.n_dropped_hashtags,
            "dropped_cases": cases.n_dropped_cases,
        },
    }
    for p, ranked in outcome.items():
        result[p] = {group: mean_metrics(ranked.metrics, mask)
                     for group, mask in (("all", np.ones_like(warm)), ("warm", warm), ("cold", ~warm))}
    return result


def mean_metrics(metrics: dict[str, np.ndarray], cases: np.ndarray) -> dict[str, float]:
    """{"cases": n, metric: its mean over the cases selected by the mask, …}; only "cases" when none is."""
    size = int(np.count_nonzero(cases))
    return {"cases": size, **({name: float(values[cases].mean()) for name, values in metrics.items()}
                              if size else {})}


def _batch_scores(scorer: Scorer, posts: PostData, cases: TestCases, start: int, stop: int,
                  n_hashtags: int | None) -> np.ndarray | Tensor:
    """The scorer's (stop - start, n_hashtags) scores for cases[start:stop]; n_hashtags None
    takes the first batch's width, which every later batch must then have."""
    scores = scorer.score(cases.users[start:stop], posts.subset(cases.rows[start:stop]))
    scores = scores if isinstance(scores, Tensor) else np.asarray(scores)
    expected = (stop - start, scores.shape[1] if n_hashtags is None else n_hashtags)
    if scores.shape != expected:
        raise ValueError(f"scorer returned {scores.shape}, expected {expected}")
    return scores


MIN_RELIABLE_CASES = 30  # below this a metric moves by ≥ 1/30 with one case: not a figure to compare
RESULTS_PAGE = "docs/results.md"  # figures on real data, where a small evaluation points


def small_data_notices(cases: dict[str, int], n_hashtags: int | None = None, protocol: ProtocolName = "both",
                       n_negatives: int = NEGATIVES, evaluating: bool = False) -> list[str]:
    """Warnings for figures that mean little: `cases` maps a set's name ("validation",
    "test") to its number of cases; the sampled protocol with fewer hashtags than its
    negatives ranks every hashtag, like the full one. `evaluating`: the test set's warning
    is `phr evaluate`'s, which points to figures that do measure something."""
    notices = []
    for name, count in cases.items():
        if count >= MIN_RELIABLE_CASES:
            continue
        if evaluating and name == "test":
            notices.append(f"only {count} test case(s) (fewer than {MIN_RELIABLE_CASES}): so few test cases "
                           f"measure nothing; see {RESULTS_PAGE} for figures on real data")
        else:
            notices.append(f"only {count} {name} case(s): its metrics are too noisy to compare methods or epochs "
                           f"(fewer than {MIN_RELIABLE_CASES}); add posts")
    if n_hashtags is not None and protocol != "full" and n_hashtags <= n_negatives:
        notices.append(f"only {n_hashtags} known hashtags, not more than the {n_negatives:,} sampled "
                       "negatives: the paper protocol ranks all of them (the same as the full ranking)")
    return notices
