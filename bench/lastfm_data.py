"""HetRec 2011 Last.fm 2K as phr posts: one text-only post per (user, artist), dated by the
latest day the user tagged that artist.

The folder holds the dataset's own files (see the dataset's readme.txt); nothing of it is
copied into the project.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from phr_cli.data.graph import PostData


def _read_table(path: Path, encoding: str) -> list[list[str]]:
    """Tab-separated rows after the header; quotes are data here, not quoting."""
    with path.open(encoding=encoding, errors="replace", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[1:]


def _core(assignments: np.ndarray, min_count: int) -> np.ndarray:
    """Iterative p-core on the first three columns (user, artist, tag; more columns ride
    along): drop the assignments whose user, artist or tag
    has fewer than min_count assignments, until none does. (Counting assignments rather
    than distinct posts is what reproduces the figures of the dataset README.)"""
    while True:
        keep = np.ones(len(assignments), dtype=bool)
        for column in range(3):
            values, counts = np.unique(assignments[:, column], return_counts=True)
            keep &= np.isin(assignments[:, column], values[counts >= min_count])
        if keep.all():
            return assignments
        assignments = assignments[keep]


def load_lastfm_posts(folder: Path, min_count: int = 5) -> PostData:
    """Posts of user_taggedartists.dat after the iterative min_count-core: item =
    "artist:<id>", hashtags = the tags (tags.dat values) the user gave the artist, time =
    the latest day (UTC midnight, Unix seconds) of those tag assignments. Features are left
    empty; the captions (artist names) come from load_lastfm_captions."""
    folder = Path(folder)
    rows = _read_table(folder / "user_taggedartists.dat", "utf-8")
    days = np.array([f"{int(r[5]):04d}-{int(r[4]):02d}-{int(r[3]):02d}" for r in rows], dtype="datetime64[D]")
    assignments = np.column_stack([
        np.asarray([[int(v) for v in row[:3]] for row in rows], dtype=np.int64).reshape(-1, 3),
        days.astype("datetime64[s]").astype(np.int64),
    ])
    # sorted by user, artist, tag, time; a tag given twice on two days is one tag
    assignments = np.unique(_core(assignments, min_count), axis=0)
    tag_names = {int(row[0]): row[1] for row in _read_table(folder / "tags.dat", "latin-1")}

    starts = np.flatnonzero(np.r_[True, np.any(np.diff(assignments[:, :2], axis=0) != 0, axis=1)])
    users, items, hashtags, times = [], [], [], []
    for start, stop in zip(starts, np.r_[starts[1:], len(assignments)]):
        user, artist = assignments[start, :2]
        users.append(str(user))
        items.append(f"artist:{artist}")
        hashtags.append([tag_names[int(t)] for t in dict.fromkeys(assignments[start:stop, 2])])
        times.append(float(assignments[start:stop, 3].max()))
    return PostData(users=users, items=items, hashtags=hashtags, features={}, masks={},
                    times=np.asarray(times, dtype=np.float64))


def load_lastfm_captions(folder: Path, posts: PostData) -> list[str]:
    """Each post's caption: its artist's name, or "artist <id>" for an artist missing from
    artists.dat (an empty caption would merge every such artist into one text-only item)."""
    names = {f"artist:{row[0]}": row[1] for row in _read_table(Path(folder) / "artists.dat", "utf-8") if len(row) >= 2}
    return [names.get(item) or item.replace(":", " ") for item in posts.items]
