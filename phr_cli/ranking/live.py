"""Posts folded into a trained model without a retrain: the live history.

Most of what the default model knows of its training posts is counts (model/evidence.py):
how often each user used each hashtag and when, what each item was tagged, how popular a
hashtag is, which items' content lies near a new clip and what they carried. Counts can be
updated exactly and at once, so a post published after training joins them as a training
post would: its user's and its item's counts, the hashtag's popularity, the user's uses
with their time (recency, similar own posts), its item's hashtag profile, and its content
in the neighbour index with its hashtags. The re-ranker's post counts follow.

What was learned stays as trained. A user, item or hashtag first seen after training gets
the learned parts of a new one: a user the mean user representation (as a cold user) and
no offsets; an item no ID embedding and the content map's PITF factor (as a new video); a
hashtag the mean hashtag representation (or, given `new_hashtag_reps`, one from its words:
model/hashtag_text.py), no offsets, no PITF factors and the mean learned
bias, until a retrain learns it (`phr train --warm-start`). Such a hashtag is a candidate
from its first use on: its counts carry it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from phr_cli.data.graph import PostData
from phr_cli.model.evidence import SECONDS_PER_DAY, SparseCounts, TagEvidence
from phr_cli.model.neighbours import ContentIndex
from phr_cli.ranking.scorer import ModelScorer


class LiveModel:
    """A trained scorer and the vocabularies it scores, folding in posts as they come.

    The scorer is changed in place (its model, representations and item index): build it
    for this purpose (`Checkpoint.scorer` gives a new one each call). The re-ranker, which
    a checkpoint's scorers share, is copied before its counts change.
    """

    def __init__(self, scorer: ModelScorer, users: list[str], hashtags: list[str],
                 new_hashtag_reps: Callable[[list[str]], Tensor] | None = None) -> None:
        self.scorer = scorer
        # A new hashtag's graph representation from its name (`hashtag_text.HashtagsByText`); None: the mean one.
        self.new_hashtag_reps = new_hashtag_reps
        self.users, self.hashtags = list(users), list(hashtags)
        self.user_index = {user: row for row, user in enumerate(self.users)}
        self.hashtag_index = {hashtag: column for column, hashtag in enumerate(self.hashtags)}
        self.trained = (len(self.users), len(self.hashtags), len(scorer.item_index))
        self.folded = 0  # posts folded in so far
        if scorer.reranker is not None:
            scorer.reranker = scorer.reranker.copy()

    @property
    def new_users(self) -> int:
        return len(self.users) - self.trained[0]

    @property
    def new_hashtags(self) -> int:
        return len(self.hashtags) - self.trained[1]

    def user_position(self, user: str | None) -> int:
        """The user's row (-1: never seen, in training or since)."""
        return self.user_index.get(user, -1) if user else -1

    def user_counts(self, position: int) -> dict[int, float]:
        """The user's posts per hashtag column, training and folded in, most first."""
        evidence = self.scorer.model.evidence
        if evidence is None or position < 0:
            return {}
        row = evidence.user_counts.dense_rows(torch.tensor([position], device=evidence.hashtag_counts.device))[0]
        columns = row.nonzero().squeeze(1).tolist()
        return dict(sorted(((c, float(row[c])) for c in columns), key=lambda pair: (-pair[1], pair[0])))

    def last_use(self, position: int, column: int) -> float | None:
        """Unix seconds of the user's latest post with the hashtag, training or folded in
        (None: none, or no time known)."""
        evidence = self.scorer.model.evidence
        if evidence is None or position < 0:
            return None
        key = torch.tensor([[position * evidence.uses.n_columns + column]], device=evidence.uses.keys.device)
        _, entries = evidence.uses.ranges(key)
        days = evidence.uses.values[entries]
        days = days[~days.isnan()]
        return float(days.max()) * SECONDS_PER_DAY if len(days) else None

    def fold_in(self, posts: PostData) -> None:
        """Add posts (users, items, hashtags by name; features, masks, times) to the history."""
        if len(posts) == 0:
            return
        item_index = self.scorer.item_index
        new_users = [u for u in dict.fromkeys(posts.users) if u not in self.user_index]
        new_hashtags = [h for h in dict.fromkeys(h for tags in posts.hashtags for h in tags)
                        if h not in self.hashtag_index]
        first_rows: dict[str, int] = {}
        for row, item in enumerate(posts.items):
            if item not in item_index:
                first_rows.setdefault(item, row)
        self._grow(len(new_users), new_hashtags, posts.subset(np.fromiter(first_rows.values(), np.int64,
                                                                          len(first_rows))))
        for user in new_users:
            self.user_index[user] = len(self.users)
            self.users.append(user)
        for hashtag in new_hashtags:
            self.hashtag_index[hashtag] = len(self.hashtags)
            self.hashtags.append(hashtag)
        for item in first_rows:
            item_index[item] = len(item_index)
        users, hashtags, items, days = [], [], [], []
        for row, tags in enumerate(posts.hashtags):
            time = math.nan if posts.times is None else float(posts.times[row])
            for tag in dict.fromkeys(tags):
                users.append(self.user_index[posts.users[row]])
                hashtags.append(self.hashtag_index[tag])
                items.append(item_index[posts.items[row]])
                days.append(time / SECONDS_PER_DAY)
        device = self.scorer.user_reps.device
        self._count(torch.tensor(users, device=device), torch.tensor(hashtags, device=device),
                    torch.tensor(items, device=device), torch.tensor(days, dtype=torch.float32, device=device))
        post_users = torch.tensor([self.user_index[u] for u in posts.users], device=device)
        post_items = torch.tensor([item_index[i] for i in posts.items], device=device)
        if self.scorer.reranker is not None:
            self.scorer.reranker.count_posts(post_users, post_items, len(self.users), len(item_index))
        self.folded += len(posts)

    def add_hashtags(self, hashtags: list[str]) -> None:
        """Candidate columns for hashtags not known yet, without any use of them (no counts)."""
        new_hashtags = [h for h in dict.fromkeys(hashtags) if h not in self.hashtag_index]
        if not new_hashtags:
            return
        self._grow(0, new_hashtags, PostData([], [], [], {}, {}))
        for hashtag in new_hashtags:
            self.hashtag_index[hashtag] = len(self.hashtags)
            self.hashtags.append(hashtag)
        device = self.scorer.user_reps.device
        none = torch.zeros(0, dtype=torch.long, device=device)
        self._count(none, none, none, torch.zeros(0, device=device))  # the tables keyed for the new columns

    def _grow(self, n_users: int, new_hashtags: list[str], new_items: PostData) -> None:
        """Rows for new users, hashtags and items (`new_items`: one post of each) in every table."""
        scorer, model = self.scorer, self.scorer.model
        n_items, n_hashtags = len(new_items), len(new_hashtags)
        if n_users:
            scorer.user_reps = _grown(scorer.user_reps, n_users, scorer.user_reps.mean(dim=0))
        if n_hashtags and self.new_hashtag_reps is not None:
            added = self.new_hashtag_reps(new_hashtags).to(scorer.hashtag_reps)
            scorer.hashtag_reps = torch.cat([scorer.hashtag_reps, added])
        elif n_hashtags:
            scorer.hashtag_reps = _grown(scorer.hashtag_reps, n_hashtags, scorer.hashtag_reps.mean(dim=0))
        device = scorer.user_reps.device
        features = {m: torch.as_tensor(np.asarray(f, np.float32), device=device) for m, f in new_items.features.items()}
        masks = {m: torch.as_tensor(np.asarray(k, bool), device=device) for m, k in new_items.masks.items()}
        # The network's ID embeddings are not read once trained (the representations are): they
        # grow only so that a refreshed checkpoint's tables agree on its vocabularies.
        network = model.network
        for embedding, rows in ((network.user_embedding, n_users), (network.hashtag_embedding, n_hashtags)):
            embedding.weight = nn.Parameter(_grown(embedding.weight.detach(), rows, embedding.weight.detach().mean(0)),
                                            requires_grad=False)
        if model.item_embedding is not None and n_items:
            model.item_embedding.weight = nn.Parameter(_grown(model.item_embedding.weight.detach(), n_items),
                                                       requires_grad=False)
        evidence = model.evidence
        if evidence is not None:
            _grow_evidence(evidence, n_users, n_hashtags)
            if n_items:
                standardised, mask_matrix = model.network.item_encoder.standardised(features, masks)
                content = model.similarity_vectors(standardised, mask_matrix)
                evidence.index.vectors = torch.cat([evidence.index.vectors, evidence.index.reduce(content)])
                evidence.item_profiles = _grown(evidence.item_profiles, n_items)
        factors = model.factors
        if factors is not None:
            factors.user = _grown(factors.user, n_users)
            factors.user_tag = _grown(factors.user_tag, n_hashtags)
            factors.item_tag = _grown(factors.item_tag, n_hashtags)
            if n_items:  # a new video's factor: PITF's map of its content, as for any new clip
                mapped = factors.content_factor(features, masks, n_items)
                factors.item = torch.cat([factors.item, mapped])

    def _count(self, users: Tensor, hashtags: Tensor, items: Tensor, days: Tensor) -> None:
        """Each (post, hashtag) of the posts folded in, as the evidence counts training posts."""
        evidence = self.scorer.model.evidence
        if evidence is None:
            return
        n_hashtags, n_items = len(self.hashtags), len(self.scorer.item_index)
        evidence.user_counts = evidence.user_counts.with_counts(users, hashtags, n_hashtags)
        evidence.item_counts = evidence.item_counts.with_counts(items, hashtags, n_hashtags)
        evidence.hashtag_counts.index_add_(0, hashtags, torch.ones_like(days))
        evidence.uses, order = evidence.uses.with_entries(users, hashtags, days, n_hashtags)
        evidence.use_items = torch.cat([evidence.use_items, items])[order]
        if "similar own posts" in evidence.active_terms:
            evidence.item_profiles = evidence.item_counts.matmul(evidence.profile_basis, n_items)
        _index_shares(evidence.index, evidence.item_counts, n_items)


def _grown(table: Tensor, rows: int, fill: Tensor | None = None) -> Tensor:
    """table with `rows` more rows: copies of fill (a row), or zeros."""
    if rows == 0:
        return table
    added = table.new_zeros(rows, *table.shape[1:]) if fill is None else fill.expand(rows, *table.shape[1:])
    return torch.cat([table, added])


def _grow_evidence(evidence: TagEvidence, n_users: int, n_hashtags: int) -> None:
    """No learned offsets for new users and hashtags, and the mean learned bias for a new hashtag."""
    with torch.no_grad():
        evidence.user_weights = nn.Parameter(_grown(evidence.user_weights.detach(), n_users), requires_grad=False)
        evidence.hashtag_weights = nn.Parameter(_grown(evidence.hashtag_weights.detach(), n_hashtags),
                                                requires_grad=False)
        evidence.bias = nn.Parameter(_grown(evidence.bias.detach(), n_hashtags, evidence.bias.detach().mean()),
                                     requires_grad=False)
    evidence.hashtag_counts = _grown(evidence.hashtag_counts, n_hashtags)
    # A new hashtag lies outside the profiles' basis (fitted on training items): it adds nothing to a profile.
    evidence.profile_basis = _grown(evidence.profile_basis, n_hashtags)
    evidence.index.n_hashtags += n_hashtags


def _index_shares(index: ContentIndex, item_counts: SparseCounts, n_items: int) -> None:
    """The index's CSR of each item's hashtag shares, from the item counts (as `ContentIndex.fit`)."""
    n_hashtags = item_counts.n_columns
    rows, values = item_counts.keys // n_hashtags, item_counts.values
    totals = torch.zeros(n_items, device=values.device).index_add_(0, rows, values)
    starts = torch.zeros(n_items + 1, dtype=torch.long, device=values.device)
    starts[1:] = torch.bincount(rows, minlength=n_items).cumsum(0)
    index.share_starts = starts
    index.share_hashtags = item_counts.keys % n_hashtags
    index.share_values = values / totals[rows].clamp(min=1.0)
