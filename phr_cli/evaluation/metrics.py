"""Evaluation protocol (docs/evaluation.md): test cases, sampled and full ranking, P/R/A@K.

A test case is one post: (user, item, ground-truth hashtags G). Hashtags never seen in
training cannot be recommended, so they are dropped from G and cases left empty are
dropped; both are counted. Two protocols:
- "sampled" (the paper's): rank G ∪ 1,000 hashtags drawn uniformly without replacement
  from the known hashtags not in G, drawn once from the seed so that every method ranks
  the same candidates;
- "full": rank every known hashtag.
Ties are broken uniformly at random, so a method gains nothing from constant scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from phr_cli.data.cases import TestCases
from phr_cli.data.graph import PostData

# Negatives are drawn per block of this many cases, each block from its own stream of the
# seed, so they do not depend on the batch size and need not be held for all cases at once.
NEGATIVE_BLOCK = 4096
# Random streams derived from the seed: one per purpose, so that "both" equals running
# "sampled" and "full" on their own.
_NEGATIVES_STREAM, _SAMPLED_TIES_STREAM, _FULL_TIES_STREAM = 0, 1, 2

ProtocolName = Literal["sampled", "full", "both"]


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


def _ranked_hits(scores: np.ndarray | Tensor, relevant: Sequence[np.ndarray], depth: int,
                 rng: np.random.Generator) -> np.ndarray:
    """(B, min(depth, C)) bool: is the column ranked r-th in row b relevant.

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

    _, row_of, flat = _flatten(relevant)
    relevant_keys = row_of * n_columns + flat
    ranked_keys = np.arange(n_rows, dtype=np.int64)[:, None] * n_columns + ranked
    return np.isin(ranked_keys, relevant_keys)


def _row_metrics(scores: np.ndarray | Tensor, relevant: Sequence[np.ndarray], ks: Sequence[int],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    if scores.ndim != 2 or scores.shape[0] != len(relevant):
        raise ValueError(f"scores {scores.shape} do not match {len(relevant)} ground-truth rows")
    sizes = np.asarray([len(r) for r in relevant], dtype=np.float64)
    if np.any(sizes == 0):
        raise ValueError("a row has no relevant column: drop empty cases first")
    hits = np.cumsum(_ranked_hits(scores, relevant, max(ks), rng), axis=1)
    metrics = {}
    for k in ks:
        found = hits[:, min(k, hits.shape[1]) - 1].astype(np.float64)
        metrics[f"P@{k}"] = found / k
        metrics[f"R@{k}"] = found / sizes
        metrics[f"A@{k}"] = (found > 0).astype(np.float64)
    return metrics


def ranking_metrics(scores: np.ndarray | Tensor, relevant: list[np.ndarray], ks: Sequence[int] = (5, 10),
                    rng: np.random.Generator | None = None) -> dict[str, float]:
    """P@K, R@K, A@K averaged over rows; scores (B, C), relevant[b] = row b's relevant columns.

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


def sample_candidates(cases: TestCases, n_hashtags: int, n_negatives: int = 1000, seed: int = 0) -> np.ndarray:
    """The sampled protocol's negatives, (n_cases, min(n_negatives, n_hashtags)), -1 padded.

    A case's candidates are its ground truth plus its row here; the same seed gives the
    same negatives whichever method is evaluated.
    """
    n_blocks = -(-len(cases) // NEGATIVE_BLOCK)
    blocks = [_negatives_for_block(cases, b, n_hashtags, n_negatives, seed) for b in range(n_blocks)]
    return np.concatenate(blocks) if blocks else np.zeros((0, min(n_negatives, n_hashtags)), np.int64)


def _candidate_scores(scores: np.ndarray | Tensor, relevant: Sequence[np.ndarray],
                      negatives: np.ndarray) -> tuple[Tensor, list[np.ndarray]]:
    """Scores of G (first) and the negatives per row, gathered where the scores are; padding scores -inf."""
    sizes, row_of, flat = _flatten(relevant)
    ground_truth = np.full((len(relevant), int(sizes.max())), -1, dtype=np.int64)
    ground_truth[row_of, np.arange(len(flat)) - (np.cumsum(sizes) - sizes)[row_of]] = flat
    columns = np.concatenate([ground_truth, negatives], axis=1)
    scores = torch.as_tensor(scores)
    gathered = scores.gather(1, torch.as_tensor(np.maximum(columns, 0), device=scores.device))
    candidate_scores = gathered.to(torch.float64)
    candidate_scores[torch.as_tensor(columns < 0, device=scores.device)] = -math.inf
    return candidate_scores, [np.arange(s) for s in sizes]


# protocol -> "warm" | "cold" -> metric name -> its sum over the group's cases
_MetricSums = dict[str, dict[str, dict[str, float]]]


def evaluate(scorer: Scorer, posts: PostData, cases: TestCases, protocol: ProtocolName = "both",
             ks: Sequence[int] = (5, 10), seed: int = 0, batch_size: int = 512,
             n_negatives: int = 1000) -> dict:
    """Metrics per protocol, over all cases and split into warm and cold users, with counts.

    posts is the PostData that cases.rows index. Scores are computed batch by batch, so
    no (cases × hashtags) matrix is ever held whole. Returns {"seed", "ks", "negatives",
    "counts": {posts, cases, warm_cases, cold_cases, dropped_hashtags, dropped_cases},
    protocol: {"all" | "warm" | "cold": {"cases": n, "P@5": …, "R@5": …, "A@5": …, …}}};
    a group without cases holds only "cases": 0.
    """
    protocols = ("sampled", "full") if protocol == "both" else (protocol,)
    if any(p not in ("sampled", "full") for p in protocols):
        raise ValueError(f"unknown protocol {protocol!r}: use 'sampled', 'full' or 'both'")
    tie_rngs = {"sampled": np.random.default_rng([seed, _SAMPLED_TIES_STREAM]),
                "full": np.random.default_rng([seed, _FULL_TIES_STREAM])}
    sums: _MetricSums = {p: {"warm": {}, "cold": {}} for p in protocols}
    n_hashtags: int | None = None

    for block_start in range(0, len(cases), NEGATIVE_BLOCK):
        block_stop = min(block_start + NEGATIVE_BLOCK, len(cases))
        negatives: np.ndarray | None = None
        for start in range(block_start, block_stop, batch_size):
            stop = min(start + batch_size, block_stop)
            scores = _batch_scores(scorer, posts, cases, start, stop, n_hashtags)
            n_hashtags = int(scores.shape[1])
            relevant = cases.relevant[start:stop]
            for p in protocols:
                if p == "full":
                    per_row = _row_metrics(scores, relevant, ks, tie_rngs[p])
                else:
                    if negatives is None:
                        negatives = _negatives_for_block(cases, block_start // NEGATIVE_BLOCK,
                                                         n_hashtags, n_negatives, seed)
                    offset = start - block_start
                    candidate_scores, positions = _candidate_scores(
                        scores, relevant, negatives[offset : offset + stop - start])
                    per_row = _row_metrics(candidate_scores, positions, ks, tie_rngs[p])
                _add_to_sums(sums[p], per_row, warm=cases.users[start:stop] >= 0)

    n_cold = cases.n_cold
    group_sizes = {"all": len(cases), "warm": len(cases) - n_cold, "cold": n_cold}
    result: dict = {
        "seed": seed,
        "ks": list(ks),
        "negatives": n_negatives,
        "counts": {
            "posts": cases.n_posts,
            "cases": len(cases),
            "warm_cases": group_sizes["warm"],
            "cold_cases": n_cold,
            "dropped_hashtags": cases.n_dropped_hashtags,
            "dropped_cases": cases.n_dropped_cases,
        },
    }
    for p in protocols:
        result[p] = _group_means(sums[p], group_sizes)
    return result


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


def _add_to_sums(sums: dict[str, dict[str, float]], per_row: dict[str, np.ndarray], warm: np.ndarray) -> None:
    """Adds a batch's per-case metrics to the warm and cold sums (warm: the rows of warm users)."""
    for group, mask in (("warm", warm), ("cold", ~warm)):
        for name, values in per_row.items():
            sums[group][name] = sums[group].get(name, 0.0) + float(values[mask].sum())


def _group_means(sums: dict[str, dict[str, float]], group_sizes: dict[str, int]) -> dict[str, dict[str, float]]:
    """{"all" | "warm" | "cold": {"cases": n, metric: mean, …}}; a group without cases holds only "cases"."""
    names = sums["warm"].keys()
    groups: dict[str, dict[str, float]] = {}
    for group, size in group_sizes.items():
        totals = {n: sums["warm"][n] + sums["cold"][n] for n in names} if group == "all" else sums[group]
        groups[group] = {"cases": size, **({n: totals[n] / size for n in names} if size else {})}
    return groups


MIN_RELIABLE_CASES = 30  # below this a metric moves by ≥ 1/30 with one case: not a figure to compare




def small_data_notices(cases: dict[str, int], n_hashtags: int | None = None, protocol: ProtocolName = "both",
                       n_negatives: int = 1000) -> list[str]:
    """Warnings for figures that mean little: `cases` maps a set's name ("validation",
    "test") to its number of cases; the sampled protocol with fewer hashtags than its
    negatives ranks every hashtag, like the full one."""
    notices = [f"only {count} {name} case(s): its metrics are too noisy to compare methods or epochs "
               f"(fewer than {MIN_RELIABLE_CASES}); add posts"
               for name, count in cases.items() if count < MIN_RELIABLE_CASES]
    if n_hashtags is not None and protocol != "full" and n_hashtags <= n_negatives:
        notices.append(f"only {n_hashtags} known hashtags, not more than the {n_negatives:,} sampled "
                       "negatives: the paper protocol ranks all of them (the same as the full ranking)")
    return notices
