"""A hashtag nobody used in training, placed by its words where the trained model would put it.

A hashtag first seen after training has no learned representation, yet its words say much:
#hiphopdance is "hip hop dance". `hashtag_words` splits a hashtag into words (at `_`, `-`,
digits and camelCase, then by wordsegment's English unigram and bigram counts inside each
run of letters); `HashtagEmbedder` embeds those words as the store's captions were embedded
(the text encoder and PCA its provenance records), so that a hashtag's words and a clip's
caption lie in one space. `HashtagTextMap` is a ridge regression, fitted on the training
hashtags, from that embedding to the hashtag's graph representation (`scorer.hashtag_reps`).

Why the graph representation and not, say, the items' content space: Eq. 9-10's scorer is
what compares a hashtag with a clip's content, personalised by the user; a new hashtag
mapped into its input is scored by the same `score_all` as a trained one, with the same
calibration and re-ranker, and needs no new score part. The map is small (100 × 64) and
closed-form, its penalty chosen by leave-one-out over the training hashtags (RidgeCV's
efficient generalised cross-validation). `LiveModel(..., new_hashtag_reps=HashtagsByText(...))`
gives each new hashtag its mapped representation instead of the mean one.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from phr_cli.data.provenance import Provenance
from phr_cli.data.store import TextProjection
from phr_cli.encoders.registry import MINILM_L6_V2
from phr_cli.errors import EncoderMismatchError

# Ridge penalties tried by leave-one-out (on inputs of unit-scale PCA components, a wide range).
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 13))

# Runs of letters or of digits (`_`, `-` and other marks separate them).
_RUN = re.compile(r"\d+|[^\W\d_]+")


@functools.cache
def _segmenter() -> Callable[[str], list[str]]:
    """wordsegment's `segment`, its word counts loaded once (a second or so)."""
    import wordsegment

    wordsegment.load()
    return wordsegment.segment


def _camel_case_words(run: str) -> list[str]:
    """A run of letters cut before each camelCase word: "NYCSubway" -> NYC, Subway."""
    cuts = [i for i in range(1, len(run))
            if run[i].isupper() and (run[i - 1].islower() or (i + 1 < len(run) and run[i + 1].islower()))]
    return [run[start:stop] for start, stop in zip([0, *cuts], [*cuts, len(run)])]


def hashtag_words(hashtag: str) -> list[str]:
    """The words of a hashtag, lower case: "hiphopdance" -> hip hop dance, "HipHop_2020" ->
    hip hop 2020. Runs of ASCII letters are segmented by word frequencies; other letters
    (a word wordsegment has no counts for) stay whole."""
    text = unicodedata.normalize("NFKC", hashtag).lstrip("#").replace("'", "")
    words: list[str] = []
    for word in (part for run in _RUN.findall(text) for part in _camel_case_words(run)):
        lower = word.lower()
        if lower.isascii() and lower.isalpha() and len(lower) > 2:
            words.extend(_segmenter()(lower))
        else:
            words.append(lower)
    return words


class HashtagEmbedder:
    """Hashtags' words embedded as captions are: a sentence encoder, then the store's projection."""

    def __init__(self, embed: Callable[[list[str]], np.ndarray], projection: TextProjection) -> None:
        self.embed, self.projection = embed, projection

    @classmethod
    def for_provenance(cls, provenance: Provenance, device: torch.device | str = "cpu") -> HashtagEmbedder:
        """The text encoder and projection a checkpoint's store was made with; refused for another encoder."""
        from phr_cli.encoders.text import TextEncoder

        recorded = provenance.encoders.get("textual", {}).get("spec", {})
        if recorded != MINILM_L6_V2.to_dict():
            raise EncoderMismatchError(f"the store {provenance.store or ''} was built with the text encoder "
                                       f"{recorded.get('name', 'none')!r}, not {MINILM_L6_V2.name}: its hashtags' "
                                       "words cannot be embedded as its captions were; re-extract and retrain")
        return cls(TextEncoder(device).embed, provenance.text_projection())

    def __call__(self, hashtags: Sequence[str]) -> np.ndarray:
        """(len(hashtags), projected width) float32."""
        texts = [" ".join(hashtag_words(h)) for h in hashtags]
        distinct = sorted(set(texts))
        if not distinct:
            return np.zeros((0, self.projection.components.shape[0]), np.float32)
        embedded = dict(zip(distinct, self.projection.apply(self.embed(distinct))))
        return np.stack([embedded[text] for text in texts]).astype(np.float32)


@dataclass
class HashtagTextMap:
    """reps ≈ embeddings @ weight + intercept: ridge regression from text to graph representation."""

    weight: Tensor  # (embedding width, dim)
    intercept: Tensor  # (dim,)
    alpha: float  # the penalty leave-one-out chose

    @classmethod
    def fit(cls, embeddings: np.ndarray, reps: np.ndarray, alphas: Sequence[float] = RIDGE_ALPHAS) -> HashtagTextMap:
        """The map of (N, D) embeddings to (N, d) representations, one penalty for all outputs."""
        from sklearn.linear_model import RidgeCV

        ridge = RidgeCV(alphas=tuple(alphas), fit_intercept=True).fit(np.asarray(embeddings, np.float64),
                                                                     np.asarray(reps, np.float64))
        return cls(torch.as_tensor(ridge.coef_.T, dtype=torch.float32),
                   torch.as_tensor(np.atleast_1d(ridge.intercept_), dtype=torch.float32), float(ridge.alpha_))

    def __call__(self, embeddings: np.ndarray | Tensor) -> Tensor:
        return torch.as_tensor(embeddings, dtype=torch.float32) @ self.weight + self.intercept


class HashtagsByText:
    """New hashtags' representations from their words (`LiveModel`'s `new_hashtag_reps`)."""

    def __init__(self, embedder: Callable[[Sequence[str]], np.ndarray], text_map: HashtagTextMap) -> None:
        self.embedder, self.text_map = embedder, text_map

    @classmethod
    def fit(cls, embedder: Callable[[Sequence[str]], np.ndarray], hashtags: Sequence[str],
            hashtag_reps: Tensor) -> HashtagsByText:
        """The map fitted on the trained hashtags (names, and their reps (H, d) in that order)."""
        reps = hashtag_reps.detach().float().cpu().numpy()
        return cls(embedder, HashtagTextMap.fit(embedder(hashtags), reps))

    def __call__(self, hashtags: Sequence[str]) -> Tensor:
        """(len(hashtags), d) on the CPU."""
        return self.text_map(self.embedder(hashtags))
