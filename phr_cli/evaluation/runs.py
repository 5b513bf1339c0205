"""TREC files of an evaluation, for trec_eval, ranx, pytrec_eval (docs/evaluation.md).

`qrels.txt`: one line a (test case, ground-truth hashtag): `QUERY 0 HASHTAG 1`.
`<method>.run`: one line a (test case, ranked hashtag): `QUERY Q0 HASHTAG RANK SCORE METHOD`,
the case's top max(K) hashtags of the full ranking in phr's order. SCORE is depth + 1 − RANK,
distinct within a case, so that any tool's sort (score descending, then hashtag) gives phr's
order, tie-breaking included, and recomputes phr's figures.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from phr_cli.errors import PhrError
from phr_cli.files import atomic_file

QRELS = "qrels.txt"
RUN_SUFFIX = ".run"


class RunsError(PhrError):
    """A folder the TREC files cannot be written to."""


def sanitise(name: str) -> str:
    """A TREC field: no whitespace (it separates the fields); a name left empty becomes "_"."""
    return re.sub(r"\s+", "_", name.strip()) or "_"


def query_ids(names: Sequence[str]) -> list[str]:
    """Each test case's post name as a query id, sanitised; a name that repeats gets ~2, ~3 …"""
    ids = [sanitise(name) for name in names]
    repeated = {name for name, count in Counter(ids).items() if count > 1}
    seen: Counter[str] = Counter()
    unique = []
    for name in ids:
        seen[name] += 1
        unique.append(f"{name}~{seen[name]}" if name in repeated else name)
    return unique


def run_file(folder: Path, method: str) -> Path:
    """The method's run file: its name with anything but letters, digits and . + - turned into _."""
    return Path(folder) / (re.sub(r"[^\w.+-]", "_", method, flags=re.ASCII) + RUN_SUFFIX)


def _write(path: Path, lines: list[str]) -> None:
    try:
        with atomic_file(path) as temporary:
            temporary.write_text("".join(lines), encoding="utf-8")
    except OSError as error:
        raise RunsError(f"{path}: cannot write the TREC file: {error.strerror or error}") from None


def write_qrels(folder: Path, queries: Sequence[str], relevant: Sequence[np.ndarray], hashtags: Sequence[str]) -> Path:
    path = Path(folder) / QRELS
    _write(path, [f"{query} 0 {sanitise(hashtags[h])} 1\n"
                  for query, truth in zip(queries, relevant) for h in truth.tolist()])
    return path


def write_run(folder: Path, method: str, queries: Sequence[str], ranked: np.ndarray,
              hashtags: Sequence[str]) -> Path:
    path = run_file(folder, method)
    depth = ranked.shape[1]
    tag = sanitise(method)
    _write(path, [f"{query} Q0 {sanitise(hashtags[h])} {rank} {depth + 1 - rank} {tag}\n"
                  for query, row in zip(queries, ranked.tolist())
                  for rank, h in enumerate(row, start=1) if h >= 0])
    return path


def write_runs(folder: Path, queries: Sequence[str], relevant: Sequence[np.ndarray],
               rankings: dict[str, np.ndarray], hashtags: Sequence[str]) -> list[Path]:
    """qrels.txt and one run file per method (rankings: method -> (cases, depth) hashtag indices)."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunsError(f"{folder}: cannot make the folder: {error.strerror or error}") from None
    files = [write_qrels(folder, queries, relevant, hashtags)]
    names = [run_file(folder, method) for method in rankings]
    if len(set(names)) < len(names):
        raise RunsError(f"{folder}: two methods would share a run file name")
    return files + [write_run(folder, method, queries, ranked, hashtags) for method, ranked in rankings.items()]
