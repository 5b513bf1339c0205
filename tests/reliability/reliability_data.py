"""Small inputs shared by the reliability tests: clips with a manifest, text-only posts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from support import media


def write_clips(root: Path, count: int) -> Path:
    """`count` short clips of four topics, one broken file and a posts.csv naming the clips."""
    root.mkdir(parents=True)
    for i in range(count):
        media.write_clip(root / f"clip{i}.mp4", 1.2, pattern=["ocean", "fire", "city", "forest"][i % 4],
                         tone_hz=200 + 100 * i, size=(64, 48), seed=i)
    media.write_zero_bytes(root / "broken.mp4")
    (root / "posts.csv").write_text("video,user,caption\n" + "".join(
        f"clip{i}.mp4,user{i % 3},clip number {i} #tag{i % 4} #all\n" for i in range(count)))
    return root


def write_text_posts(root: Path, users: int = 20, posts_per_user: int = 12) -> Path:
    """Text-only posts with planted hashtags (a topic's and a personal one): training data
    without decoding video."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    topics = ["sea waves beach", "forest trees walk", "city night lights", "fire camp wood"]
    lines = ["video,user,caption,hashtags"]
    for user in range(users):
        for post in range(posts_per_user):
            topic = int(rng.integers(4))
            lines.append(f",user{user},{topics[topic]} {post} {user},topic{topic} mine{user % 5}")
    (root / "posts.csv").write_text("\n".join(lines) + "\n")
    return root
