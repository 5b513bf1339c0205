"""TREC files: query ids without spaces and distinct, scores that sort into phr's order."""

from __future__ import annotations

import numpy as np

from phr_cli.evaluation.runs import query_ids, run_file, write_runs


def test_query_ids_have_no_spaces_and_never_repeat():
    assert query_ids(["posts.csv:3", "my clip.mp4", "a b", "a\tb", ""]) == [
        "posts.csv:3", "my_clip.mp4", "a_b~1", "a_b~2", "_"]


def test_scores_fall_with_the_rank_and_name_each_hashtag(tmp_path):
    hashtags = ["cat", "dog", "sea sun"]
    files = write_runs(tmp_path, ["q1", "q2"], [np.array([1]), np.array([0, 2])],
                       {"user+item popularity": np.array([[2, 1, 0], [0, 2, 1]])}, hashtags)
    assert files == [tmp_path / "qrels.txt", run_file(tmp_path, "user+item popularity")]
    assert files[1].name == "user+item_popularity.run"
    assert (tmp_path / "qrels.txt").read_text().splitlines() == ["q1 0 dog 1", "q2 0 cat 1", "q2 0 sea_sun 1"]
    lines = [line.split() for line in files[1].read_text().splitlines()]
    assert lines[0] == ["q1", "Q0", "sea_sun", "1", "3", "user+item_popularity"]
    for query in ("q1", "q2"):
        rows = [row for row in lines if row[0] == query]
        by_score = sorted(rows, key=lambda row: (-int(row[4]), row[2]))
        assert [row[3] for row in by_score] == ["1", "2", "3"]
