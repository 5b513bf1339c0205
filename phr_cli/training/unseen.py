"""Hashtags nobody used in training, ranked beside the known ones (docs/evaluation.md).

The main metrics drop the test hashtags that training never saw; here they join the
candidates: every training hashtag and every hashtag of the test posts that training never
saw, none of their uses counted (the test posts are not folded in: a column is all a new
hashtag gets). Each method ranks all candidates for each test post, once, and two figures
are read from that ranking:
- on the unseen hashtags, R@K (and A@K): a case is a test post with an unseen hashtag, its
  ground truth those hashtags;
- on the seen ones, P@K (and R@K): a case is a test post with a seen hashtag, its ground truth
  those; a new hashtag ranked among the first K takes a place, so these fall where new
  hashtags push out right ones.
Methods: the model whose new columns come from the text map (`hashtag_text.HashtagsByText`),
with and without the words match (`new_hashtags.WordsMatch`, fitted on the validation posts'
own unseen hashtags), the model with `LiveModel`'s mean representation, the model without
new columns (its unseen R@K is 0 by construction; its seen figures are the main metrics'),
and the caption-words baseline (`baselines.CaptionWords`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from phr_cli.data.cases import TestCases
from phr_cli.data.dataset import SplitPosts
from phr_cli.data.graph import PostData
from phr_cli.evaluation.baselines import CaptionWords
from phr_cli.evaluation.measures import KS
from phr_cli.evaluation.metrics import Scorer, case_metrics, mean_metrics, rank_cases
from phr_cli.model.hashtag_text import HashtagEmbedder, HashtagsByText
from phr_cli.ranking.live import LiveModel
from phr_cli.ranking.new_hashtags import WithWordsMatch, fit_words_match
from phr_cli.ranking.scorer import ModelScorer
from phr_cli.training.checkpoint import Checkpoint

WORDS_MATCH = "GCN-PHR + text map + words match"
TEXT_MAP = "GCN-PHR + text map"
MEAN_REPRESENTATION = "GCN-PHR + mean representation"
KNOWN_ONLY = "GCN-PHR, known hashtags only"
CAPTION_WORDS = "caption words"
# The figures reported: metric name -> (ground truth, the case_metrics name at one of KS).
FIGURES = {"unseen R@5": ("unseen", "R@5"), "unseen R@10": ("unseen", "R@10"), "unseen A@5": ("unseen", "A@5"),
           "seen P@5": ("seen", "P@5"), "seen R@5": ("seen", "R@5"), "seen P@10": ("seen", "P@10")}


@dataclass
class UnseenHashtags:
    """Each method's figures on the unseen and on the seen hashtags of one test split."""

    counts: dict[str, int]
    methods: dict[str, dict[str, float]]  # name -> FIGURES' names -> mean over its cases
    notes: dict[str, str] = field(default_factory=dict)  # name -> how it was made
    words_match: dict | None = None  # `new_hashtags.WordsMatch.to_dict` as fitted (None: none could be)

    def ratio(self) -> float | None:
        """The unseen R@5 of the model with the words match over the caption-words baseline's (None: it found none)."""
        baseline = self.methods[CAPTION_WORDS]["unseen R@5"]
        return self.methods[WORDS_MATCH]["unseen R@5"] / baseline if baseline > 0 else None

    def to_dict(self) -> dict:
        return {"counts": self.counts, "methods": self.methods, "notes": self.notes, "words_match": self.words_match,
                "words_match_over_caption_words": self.ratio()}

    def markdown(self) -> str:
        lines = ["| method | " + " | ".join(FIGURES) + " |", "|---" * (len(FIGURES) + 1) + "|"]
        lines += [f"| {name} | " + " | ".join(f"{figures[f]:.4f}" for f in FIGURES) + " |"
                  for name, figures in self.methods.items()]
        return "\n".join(lines)

    def summary_line(self) -> str:
        ratio = self.ratio()
        matched, known = self.methods[WORDS_MATCH], self.methods[KNOWN_ONLY]
        return (f"{self.counts['unseen_cases']} test posts with an unseen hashtag ({self.counts['unseen_hashtags']} "
                f"distinct); unseen R@5 with the words match {matched['unseen R@5']:.4f} vs caption words "
                f"{self.methods[CAPTION_WORDS]['unseen R@5']:.4f} (ratio "
                f"{'n/a' if ratio is None else f'{ratio:.2f}×'}); seen P@5 {matched['seen P@5']:.4f} with it vs "
                f"{known['seen P@5']:.4f} without new hashtags")


class _KnownOnly:
    """A scorer of the known hashtags, with n_new columns that always rank last."""

    def __init__(self, scorer: Scorer, n_new: int) -> None:
        self.scorer, self.n_new = scorer, n_new

    def score(self, users: np.ndarray, posts: PostData) -> torch.Tensor:
        scores = torch.as_tensor(self.scorer.score(users, posts))
        return torch.cat([scores, scores.new_full((len(scores), self.n_new), -torch.inf)], dim=1)


def text_map(checkpoint: Checkpoint, embedder: Callable[[Sequence[str]], np.ndarray],
             device: torch.device) -> HashtagsByText:
    """The map from a hashtag's words to the checkpoint's hashtag representations, fitted on its hashtags."""
    return HashtagsByText.fit(embedder, checkpoint.hashtags, checkpoint.scorer(device).hashtag_reps)


def grown_scorer(checkpoint: Checkpoint, hashtags: list[str], new_reps: HashtagsByText | None,
                 device: torch.device) -> ModelScorer:
    """The checkpoint's scorer with a column for each of `hashtags` (after the known ones), its
    representation from new_reps (`text_map`), or the mean one when None."""
    live = LiveModel(checkpoint.scorer(device), checkpoint.users, checkpoint.hashtags, new_reps)
    live.add_hashtags(hashtags)
    return live.scorer


def unseen_hashtags(data: SplitPosts, rows: np.ndarray) -> list[str]:
    """The hashtags of posts[rows] that training never saw, in order of first use."""
    known = data.graph.hashtag_index
    return list(dict.fromkeys(h for row in rows.tolist() for h in data.posts.hashtags[row] if h not in known))


def split_cases(data: SplitPosts, rows: np.ndarray, new: list[str]) -> tuple[TestCases, list[np.ndarray],
                                                                              list[np.ndarray]]:
    """The cases of posts[rows] over the known hashtags and then `new`: every post with a
    hashtag among them, its ground truth all of those; and each case's seen and unseen columns."""
    graph, posts = data.graph, data.posts
    column = {h: c for c, h in enumerate(graph.hashtags + new)}
    kept, users, seen, unseen = [], [], [], []
    for row in rows.tolist():
        tags = sorted({column[h] for h in posts.hashtags[row] if h in column})
        if not tags:
            continue
        kept.append(row)
        users.append(graph.user_index.get(posts.users[row], -1))
        seen.append(np.asarray([c for c in tags if c < graph.n_hashtags], np.int64))
        unseen.append(np.asarray([c for c in tags if c >= graph.n_hashtags], np.int64))
    cases = TestCases(np.asarray(kept, np.int64), np.asarray(users, np.int64),
                      [np.concatenate([s, u]) for s, u in zip(seen, unseen)], len(rows), 0, len(rows) - len(kept))
    return cases, seen, unseen


def evaluate_unseen(data: SplitPosts, checkpoint: Checkpoint, device: torch.device = torch.device("cpu"),
                    seed: int = 0, embedder: Callable[[Sequence[str]], np.ndarray] | None = None) -> UnseenHashtags:
    """The figures of the module docstring for the checkpoint's test split; `embedder` embeds hashtags'
    words (default: as the checkpoint's store embedded its captions, `HashtagEmbedder.for_provenance`)."""
    graph, posts = data.graph, data.posts
    new = unseen_hashtags(data, data.split.test)
    candidates = graph.hashtags + new
    cases, seen, unseen = split_cases(data, data.split.test, new)
    ground_truths = {"seen": seen, "unseen": unseen}
    embedder = embedder or HashtagEmbedder.for_provenance(checkpoint.provenance, device)
    notes: dict[str, str] = {}
    words_match: dict = {}

    @functools.cache
    def by_text() -> HashtagsByText:
        """The text map, fitted once for every method that reads it."""
        fitted = text_map(checkpoint, embedder, device)
        notes[TEXT_MAP] = (f"ridge α = {fitted.text_map.alpha:g} (leave-one-out over the "
                           f"{len(checkpoint.hashtags)} training hashtags)")
        return fitted

    def grown(hashtags: list[str], with_text_map: bool) -> ModelScorer:
        return grown_scorer(checkpoint, hashtags, by_text() if with_text_map else None, device)

    def words_matched() -> Scorer:
        """The text map's scorer with the words match fitted on the validation posts' new hashtags,
        for the K of the metric training chose its epoch by."""
        validation_k = int(checkpoint.train_config.validation_metric.partition("@")[2])
        validation_new = unseen_hashtags(data, data.split.validation)
        validation, _, _ = split_cases(data, data.split.validation, validation_new)
        match = fit_words_match(grown(validation_new, with_text_map=True), posts, validation, graph.n_hashtags,
                                torch.as_tensor(embedder(validation_new)), k=validation_k)
        if match is None:
            notes[WORDS_MATCH] = "no validation post has a hashtag training never saw: no words match"
            return grown(new, with_text_map=True)
        words_match.update(match.to_dict())
        notes[WORDS_MATCH] = (f"scale {match.scale:.4g}, offset {match.offset:.4g}, fitted on {match.posts} validation "
                              f"posts ({match.with_new} with a new hashtag): right hashtags among their first "
                              f"{match.k} {match.known_hits} known + {match.new_hits} new, against "
                              f"{match.known_hits_without} without it")
        return WithWordsMatch(grown(new, with_text_map=True), graph.n_hashtags, torch.as_tensor(embedder(new)), match)

    counts = np.bincount(graph.triples[:, 1], minlength=len(candidates)).astype(np.float64)
    methods: dict[str, Callable[[], Scorer]] = {
        WORDS_MATCH: words_matched,
        TEXT_MAP: lambda: grown(new, with_text_map=True),
        MEAN_REPRESENTATION: lambda: grown(new, with_text_map=False),
        KNOWN_ONLY: lambda: _KnownOnly(checkpoint.scorer(device), len(new)),
        CAPTION_WORDS: lambda: CaptionWords(candidates, counts),
    }
    results: dict[str, dict[str, float]] = {}
    for name, make in methods.items():
        ranked = rank_cases(make(), posts, cases, "full", KS, seed)["full"].ranked
        figures: dict[str, float] = {}
        for kind, truth in ground_truths.items():
            has = np.asarray([len(t) > 0 for t in truth])
            chosen = [t for t in truth if len(t)]
            metrics = case_metrics(ranked[has], chosen, KS) if chosen else {}
            means = mean_metrics(metrics, np.ones(len(chosen), bool)) if chosen else {}
            figures.update({figure: float(means.get(metric, 0.0)) for figure, (of, metric) in FIGURES.items()
                            if of == kind})
        results[name] = figures
    unseen_cases = sum(len(u) > 0 for u in unseen)
    return UnseenHashtags(
        counts={"test_posts": len(data.split.test), "cases": len(cases), "unseen_cases": unseen_cases,
                "seen_cases": sum(len(s) > 0 for s in seen), "unseen_hashtags": len(new),
                "unseen_uses": sum(len(u) for u in unseen), "known_hashtags": graph.n_hashtags},
        methods=results, notes=notes, words_match=words_match or None)
