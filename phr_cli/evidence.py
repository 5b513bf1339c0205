"""What the training posts say about a hashtag, beside the graph's representations: how
often this user used it, how often others put it on this very item, how popular it is,
and how often it was on the items whose content is closest.

GCN-PHR's own score cannot see these counts: Eq. 1-2 average over the distinct
(user, hashtag) pairs and the attention of Eq. 3-6 sums to 1 inside each group, so a user
who used #x 40 times and #y once looks the same as the reverse; and a video enters only
through its content, so what other users tagged the same video is out of reach. Yet 92 %
of the hashtags users put on new posts are ones they used before. The evidence terms add
that knowledge as a learned log-linear prior:

    prior(i, k, j, t) = w_u log(1 + n_ij) + w_k log(1 + n_kj) + w_g log(1 + n_j) + w_n s_kj
                        + w_r log(1 + r_ij(t)) + b_j

n_ij counts user i's training posts with hashtag j, n_kj the training posts of item k with
j, n_j all training posts with j, s_kj the share of j on k's nearest training items by
content (`neighbours.ContentIndex`), b_j a learned hashtag bias. r_ij(t) weighs each of
user i's uses of j by how close in time it is to the post, (1 + |t - t_use| in days)^-0.5:
the base-level activation of ACT-R's memory model, with its customary decay 0.5, which
Kowald et al. (2014, "Long time no see") found to predict tag reuse beyond counts. A new
upload's t is now, so recent habits count more than old ones; where either time is
unknown a use counts 1, as in n_ij. Each weight is a global
value plus a learned offset of the user and one of the hashtag: some users tag from habit
and others describe the item; some hashtags are personal ("seen live") and others
describe content ("rock"). While training, counts
leave out the post being scored, so that a training post looks like a new one: otherwise
the weights would learn that a post's own hashtags are always among the counted ones.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from phr_cli.neighbours import ContentIndex, SizedByState, gather_ranges

EVIDENCE_TERMS = ("user history", "item history", "popularity", "similar items", "recent use")
# ACT-R's base-level decay, on time differences in days.
RECENCY_DECAY = 0.5
SECONDS_PER_DAY = 86400.0


class SparseCounts(SizedByState):
    """A (rows x columns) count matrix as sorted keys row * columns + column and values."""

    keys: Tensor
    values: Tensor

    def __init__(self, n_columns: int, n_entries: int) -> None:
        super().__init__()
        self.n_columns = n_columns
        self.register_buffer("keys", torch.zeros(n_entries, dtype=torch.long))
        self.register_buffer("values", torch.zeros(n_entries))

    @classmethod
    def of_entries(cls, rows: Tensor, columns: Tensor, values: Tensor, n_columns: int) -> SparseCounts:
        """A table of one entry per (row, column, value), repeated keys kept, sorted by key."""
        keys = rows * n_columns + columns
        order = keys.argsort(stable=True)
        table = cls(n_columns, len(keys))
        table.keys.copy_(keys[order])
        table.values.copy_(values[order])
        return table

    def ranges(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        """Each key's entries (for a table with repeated keys): their owner in keys.reshape(-1),
        and their positions in the table."""
        flat = keys.reshape(-1)
        return gather_ranges(torch.searchsorted(self.keys, flat), torch.searchsorted(self.keys, flat, right=True))

    @classmethod
    def of_pairs(cls, rows: Tensor, columns: Tensor, n_columns: int) -> SparseCounts:
        keys, counts = torch.unique(rows * n_columns + columns, return_counts=True)
        table = cls(n_columns, len(keys))
        table.keys.copy_(keys)
        table.values.copy_(counts.float())
        return table

    def lookup(self, rows: Tensor, columns: Tensor) -> Tensor:
        """Counts at (rows, columns) (broadcast together); 0 where absent or the row is -1."""
        rows, columns = torch.broadcast_tensors(rows, columns)
        if len(self.keys) == 0:
            return torch.zeros(rows.shape, device=self.values.device)
        keys = rows.clamp(min=0) * self.n_columns + columns
        at = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)
        found = (self.keys[at] == keys) & (rows >= 0)
        return torch.where(found, self.values[at], 0.0)

    def row_entries(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """The entries of the rows (a row of -1 has none): for each, its position in rows and
        its position in the table."""
        known = (rows >= 0).nonzero().squeeze(1)
        owner, entries = gather_ranges(torch.searchsorted(self.keys, rows[known] * self.n_columns),
                                       torch.searchsorted(self.keys, (rows[known] + 1) * self.n_columns))
        return known[owner], entries

    def dense_rows(self, rows: Tensor) -> Tensor:
        """(len(rows), n_columns) counts; zeros for a row of -1."""
        out = self.values.new_zeros(len(rows), self.n_columns)
        at, entries = self.row_entries(rows)
        out[at, self.keys[entries] % self.n_columns] = self.values[entries]
        return out


class TagEvidence(nn.Module):
    """The learned count prior of the default model (see the module docstring).

    Weights start at 1 (user and item history, similar items) and 0.1 (popularity): the
    model starts as a popularity mix, a strong ranking, and training moves it from there.
    """

    hashtag_counts: Tensor

    def __init__(self, n_users: int, n_items: int, n_hashtags: int, user_entries: int, item_entries: int,
                 use_entries: int, index: ContentIndex, neighbours: int, recency: bool = True) -> None:
        super().__init__()
        self.neighbours = neighbours
        self.recency_term = recency  # False: no "recent use" term (an ablation)
        self.user_counts = SparseCounts(n_hashtags, user_entries)
        self.item_counts = SparseCounts(n_hashtags, item_entries)
        self.register_buffer("hashtag_counts", torch.zeros(n_hashtags))
        # Every training use of a hashtag by a user (one per distinct user, hashtag, item),
        # keyed user * n_hashtags + hashtag, with its post's time in days (NaN: unknown).
        self.uses = SparseCounts(n_hashtags, use_entries)
        self.index = index
        self.weights = nn.Parameter(torch.tensor([1.0, 1.0, 0.1, 1.0, 0.0]))
        self.user_weights = nn.Parameter(torch.zeros(n_users, len(EVIDENCE_TERMS)))
        self.hashtag_weights = nn.Parameter(torch.zeros(n_hashtags, len(EVIDENCE_TERMS)))
        self.bias = nn.Parameter(torch.zeros(n_hashtags))
        # The training items' neighbour shares, each item left out of its own neighbours;
        # computed by `prepare_training` on the model's device, never saved (in a list, so
        # that it is no submodule of the state dict); and each training post's time in days,
        # keyed user * n_items + item, from `fit`.
        self._training_shares: list[SparseCounts] = []
        self._post_days: list[SparseCounts] = []

    @staticmethod
    def terms(recency: bool = True) -> tuple[str, ...]:
        """The names of the prior's terms, in order."""
        return EVIDENCE_TERMS if recency else EVIDENCE_TERMS[:-1]

    @classmethod
    def fit(cls, triples: Tensor, n_users: int, n_items: int, n_hashtags: int, item_vectors: Tensor,
            neighbours: int, triple_times: Tensor | None = None, recency: bool = True) -> TagEvidence:
        """From the training triples (T, 3: user, hashtag, item), the items' content vectors
        and the triples' times (T,) in Unix seconds (NaN or None: unknown)."""
        users, hashtags, items = triples.unbind(1)
        days = (torch.full((len(triples),), torch.nan) if triple_times is None
                else triple_times.double() / SECONDS_PER_DAY).float().to(triples.device)
        index = ContentIndex.fit(item_vectors, torch.stack([items, hashtags], dim=1), n_hashtags)
        user_counts = SparseCounts.of_pairs(users, hashtags, n_hashtags)
        item_counts = SparseCounts.of_pairs(items, hashtags, n_hashtags)
        evidence = cls(n_users, n_items, n_hashtags, len(user_counts.keys), len(item_counts.keys), len(triples),
                       index, neighbours, recency)
        evidence.user_counts.load_state_dict(user_counts.state_dict())
        evidence.item_counts.load_state_dict(item_counts.state_dict())
        evidence.uses.load_state_dict(SparseCounts.of_entries(users, hashtags, days, n_hashtags).state_dict())
        posts, first = torch.unique(users * n_items + items, return_inverse=True)
        post_days = torch.full((len(posts),), torch.nan, device=days.device).scatter_reduce(
            0, first, days, "amax", include_self=False)
        evidence._post_days = [SparseCounts.of_entries(posts // n_items, posts % n_items, post_days, n_items)]
        evidence.hashtag_counts.copy_(torch.bincount(hashtags, minlength=n_hashtags).float())
        return evidence

    def prepare_training(self, block: int = 4096) -> None:
        """Neighbour shares of every training item, itself excluded (a sparse table)."""
        rows, columns, values = [], [], []
        n_items = len(self.index.vectors)
        for start in range(0, n_items, block):
            items = torch.arange(start, min(start + block, n_items), device=self.index.vectors.device)
            shares = self.index.hashtag_shares(self.index.vectors[items], self.neighbours, exclude=items)
            row, column = shares.nonzero(as_tuple=True)
            rows.append(items[row])
            columns.append(column)
            values.append(shares[row, column])
        table = SparseCounts(self.index.n_hashtags, 0).to(self.index.vectors.device)
        keys = torch.cat(rows) * self.index.n_hashtags + torch.cat(columns)
        order = keys.argsort()
        table.keys, table.values = keys[order], torch.cat(values)[order]
        self._training_shares = [table]

    def _term_weights(self, users: Tensor, hashtags: Tensor) -> Tensor:
        """(B, n, terms) weights of hashtags (B, n) or (n,) for users (B,) (-1: cold, no offset)."""
        user_part = torch.where((users >= 0).unsqueeze(1), self.user_weights[users.clamp(min=0)], 0.0)
        hashtag_part = self.hashtag_weights[hashtags]
        if hashtags.dim() == 1:
            hashtag_part = hashtag_part.unsqueeze(0)
        return self.weights + hashtag_part + user_part.unsqueeze(1)

    def _combine(self, weights: Tensor, user: Tensor, item: Tensor, popularity: Tensor, similar: Tensor,
                 recent: Tensor, bias: Tensor) -> dict[str, Tensor]:
        """Each weighted term (B, n); the bias is counted with popularity."""
        terms = {
            "user history": weights[..., 0] * user.log1p(),
            "item history": weights[..., 1] * item.log1p(),
            "popularity": weights[..., 2] * popularity.log1p() + bias,
            "similar items": weights[..., 3] * similar,
        }
        if self.recency_term:
            terms["recent use"] = weights[..., 4] * recent.log1p()
        return terms

    def _use_weights(self, entries: Tensor, days: Tensor) -> Tensor:
        """Each use's weight (see the module docstring) at the times (one per entry) of the posts scored."""
        weights = (1.0 + (days - self.uses.values[entries]).abs()).pow(-RECENCY_DECAY)
        return torch.nan_to_num(weights, nan=1.0)

    def recency(self, users: Tensor, hashtags: Tensor, days: Tensor) -> Tensor:
        """r_ij(t) (B, n) of hashtags (B, n) for users (B,) (-1: cold, 0) at times days (B,)."""
        keys = torch.where((users >= 0).unsqueeze(1), users.clamp(min=0).unsqueeze(1) * self.uses.n_columns + hashtags,
                           -1)
        owner, entries = self.uses.ranges(keys)
        total = self.uses.values.new_zeros(keys.numel())
        row_days = days.unsqueeze(1).expand_as(keys).reshape(-1)
        total.index_add_(0, owner, self._use_weights(entries, row_days[owner]))
        return total.view(keys.shape)

    def recency_rows(self, users: Tensor, days: Tensor) -> Tensor:
        """r_ij(t) (B, n_hashtags) of every hashtag for users (B,) (-1: cold, zeros) at times days (B,)."""
        out = self.uses.values.new_zeros(len(users), self.uses.n_columns)
        at, entries = self.uses.row_entries(users)
        out.index_put_((at, self.uses.keys[entries] % self.uses.n_columns), self._use_weights(entries, days[at]),
                       accumulate=True)
        return out

    def score_training(self, users: Tensor, items: Tensor, hashtags: Tensor, on_post: Tensor,
                       known_items: Tensor | None = None) -> Tensor:
        """Prior (B, n) of hashtags (B, n) for training posts (users, items: (B,) graph ids);
        on_post (B, n) bool marks the post's own hashtags, whose counts leave the post out.
        Where known_items (B,) is False the post is scored as a new video: no item history."""
        assert self._training_shares and self._post_days, "fit() and prepare_training() first"
        leave_out = on_post.to(self.hashtag_counts.dtype)
        item_rows = items if known_items is None else torch.where(known_items, items, -1)
        # The post's own use is as close in time as can be: weight 1 (NaN times also count 1).
        days = self._post_days[0].lookup(users, items)
        terms = self._combine(
            self._term_weights(users, hashtags),
            self.user_counts.lookup(users.unsqueeze(1), hashtags) - leave_out,
            (self.item_counts.lookup(item_rows.unsqueeze(1), hashtags) - leave_out).clamp(min=0.0),
            self.hashtag_counts[hashtags] - leave_out,
            self._training_shares[0].lookup(items.unsqueeze(1), hashtags),
            (self.recency(users, hashtags, days) - leave_out).clamp(min=0.0),
            self.bias[hashtags],
        )
        return torch.stack(list(terms.values())).sum(dim=0)

    def term_rows(self, users: Tensor, items: Tensor, content: Tensor, times: Tensor | None = None
                  ) -> dict[str, Tensor]:
        """Each weighted term (B, n_hashtags) for new posts: users (B,) graph ids or -1,
        items (B,) graph ids or -1 (new content), content (B, width) `content_vectors`,
        times (B,) the posts' Unix seconds (NaN or None: unknown)."""
        days = (torch.full((len(users),), torch.nan, device=users.device) if times is None
                else (times.double() / SECONDS_PER_DAY).float())
        queries = self.index.reduce(content)
        # A post of an item seen in training finds that item first: leave it out, as in training.
        similar = self.index.hashtag_shares(queries, self.neighbours, exclude=items)
        all_hashtags = torch.arange(len(self.hashtag_counts), device=users.device)
        return self._combine(self._term_weights(users, all_hashtags), self.user_counts.dense_rows(users),
                             self.item_counts.dense_rows(items), self.hashtag_counts.unsqueeze(0), similar,
                             self.recency_rows(users, days), self.bias.unsqueeze(0))
