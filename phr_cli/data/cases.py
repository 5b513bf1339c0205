"""The test cases of a split: one per post, its ground truth as known hashtags."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from phr_cli.data.graph import Graph, PostData


@dataclass
class TestCases:
    """One case per evaluated post whose ground truth keeps at least one known hashtag."""

    __test__ = False  # a data class, not a pytest test class

    rows: np.ndarray  # (n,) row of the case's post in the evaluated PostData
    users: np.ndarray  # (n,) graph user index, -1 for a user with no training post
    relevant: list[np.ndarray]  # ground-truth hashtag indices, sorted and distinct
    n_posts: int  # posts considered
    n_dropped_hashtags: int  # ground-truth hashtags (post, hashtag) unseen in training
    n_dropped_cases: int  # posts left without a known hashtag (or that had none)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def n_cold(self) -> int:
        return int(np.count_nonzero(self.users < 0))


def build_cases(posts: PostData, rows: np.ndarray, graph: Graph) -> TestCases:
    kept_rows, users, relevant = [], [], []
    n_dropped_hashtags = 0
    for row in np.asarray(rows, dtype=np.int64):
        tags = set(posts.hashtags[row])
        known = [graph.hashtag_index[h] for h in tags if h in graph.hashtag_index]
        n_dropped_hashtags += len(tags) - len(known)
        if not known:
            continue
        kept_rows.append(row)
        users.append(graph.user_index.get(posts.users[row], -1))
        relevant.append(np.unique(np.asarray(known, dtype=np.int64)))
    return TestCases(
        rows=np.asarray(kept_rows, dtype=np.int64),
        users=np.asarray(users, dtype=np.int64),
        relevant=relevant,
        n_posts=len(rows),
        n_dropped_hashtags=n_dropped_hashtags,
        n_dropped_cases=len(rows) - len(kept_rows),
    )
