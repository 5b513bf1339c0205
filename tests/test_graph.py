import numpy as np
import pytest

from phr_cli.data.graph import PostData, split_posts
from phr_cli.errors import ConfigError, DataError


def posts_at(times: list[float] | None, items: list[str] | None = None) -> PostData:
    n = len(times) if times is not None else len(items)
    return PostData(users=[f"u{i % 3}" for i in range(n)], items=items or [f"v{i}" for i in range(n)],
                    hashtags=[["x"]] * n, features={}, masks={},
                    times=None if times is None else np.asarray(times, dtype=np.float64))


def test_the_time_split_trains_on_the_oldest_and_tests_on_the_latest():
    rng = np.random.default_rng(1)
    times = rng.permutation(100).astype(float) * 3600
    split = split_posts(posts_at(list(times)), seed=0, by="time")
    assert (len(split.train), len(split.validation), len(split.test)) == (80, 10, 10)
    assert times[split.train].max() < times[split.validation].min()
    assert times[split.validation].max() < times[split.test].min()
    assert split.by == "time"


def test_equal_times_are_split_the_same_way_for_a_seed():
    times = [0.0] * 30 + [1.0] * 40 + [2.0] * 30  # the 80 % boundary falls inside the ties at 1.0
    posts = posts_at(times)
    first, again = split_posts(posts, seed=3, by="time"), split_posts(posts, seed=3, by="time")
    for part in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(first, part), getattr(again, part))
    assert set(range(30)) <= set(first.train)  # the oldest always train
    assert set(first.test) <= set(range(70, 100))
    other = split_posts(posts, seed=4, by="time")
    assert set(other.train) != set(first.train)  # the tie-break follows the seed, not the row order


def test_a_post_without_time_is_named_for_the_time_split():
    times = [float(i) for i in range(20)]
    times[11] = np.nan
    names = [f"posts.jsonl:{i + 1}" for i in range(20)]
    with pytest.raises(DataError, match=r"^posts.jsonl:12: no time; the time split needs one for every post$"):
        split_posts(posts_at(times), by="time", names=names)
    for row in (2, 5, 7, 15):
        times[row] = np.nan
    with pytest.raises(DataError, match=r"^5 posts have no time \(posts.jsonl:3, posts.jsonl:6, "
                                        r"posts.jsonl:8 and 2 more\); the time split"):
        split_posts(posts_at(times), by="time", names=names)
    with pytest.raises(DataError, match=r"^post 1: no time"):
        split_posts(posts_at([np.nan] + [1.0] * 9), by="time")
    with pytest.raises(DataError, match="10 posts have no time"):
        split_posts(posts_at(None, items=[f"v{i}" for i in range(10)]), by="time")
    split_posts(posts_at(times), by="post")  # the other splits need no time


def test_the_item_split_keeps_every_post_of_an_item_together_and_units_are_checked():
    items = [f"v{i // 3}" for i in range(60)]
    split = split_posts(posts_at(None, items=items), seed=0, by="item")
    parts = [{items[r] for r in getattr(split, p)} for p in ("train", "validation", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    with pytest.raises(ConfigError, match="use one of post, item, time"):
        split_posts(posts_at(None, items=items), by="user")


def test_subsets_keep_their_times():
    posts = posts_at([5.0, 6.0, 7.0])
    np.testing.assert_array_equal(posts.subset(np.array([2, 0])).times, [7.0, 5.0])
