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
                        + w_r log(1 + r_ij(t)) + w_p log(1 + p_ikj) + b_j

n_ij counts user i's training posts with hashtag j, n_kj the training posts of item k with
j, n_j all training posts with j, s_kj the share of j on k's nearest training items by
content (`neighbours.ContentIndex`), b_j a learned hashtag bias. r_ij(t) weighs each of
user i's uses of j by how close in time it is to the post, (1 + |t - t_use| in days)^-0.5:
the base-level activation of ACT-R's memory model, with its customary decay 0.5, which
Kowald et al. (2014, "Long time no see") found to predict tag reuse beyond counts. A new
upload's t is now, so recent habits count more than old ones; where either time is
unknown a use counts 1, as in n_ij. p_ikj sums, over user i's own uses of j, how alike the
used item's hashtag profile is to item k's (cosine, negatives as 0, raised to the power 2.5,
the "case amplification" of Breese, Heckerman & Kadie 1998, so that the closest items
dominate; on Last.fm it adds .002-.006 of P@5 over the plain cosine): the hashtags a user put
on items tagged like this one (item-based collaborative filtering inside one user's
history). An item's profile is what others tagged it, or, for a new video, its content
neighbours' shares s_k; profiles are compared in the space of the leading singular vectors
of the training items' profiles (PROFILE_WIDTH), so that a checkpoint holds a small table
per item, not each item's row over every hashtag. Each weight is a global
value plus a learned offset of the user and one of the hashtag: some users tag from habit
and others describe the item; some hashtags are personal ("seen live") and others
describe content ("rock"). While training, counts
leave out the post being scored, so that a training post looks like a new one: otherwise
the weights would learn that a post's own hashtags are always among the counted ones.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from phr_cli.model.neighbours import ContentIndex, SizedByState, gather_ranges, row_cosines, unit_rows

EVIDENCE_TERMS = ("user history", "item history", "popularity", "similar items", "recent use", "similar own posts")
# Width of the item profiles compared by "similar own posts": exact (the identity) for at
# most this many hashtags; on Last.fm's 2,131 a width of 64 loses .001 of P@5 against exact.
PROFILE_WIDTH = 64
# Case amplification of the profiles' cosine (Breese et al. 1998's customary value).
SIMILARITY_AMPLIFICATION = 2.5
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

    def with_entries(self, rows: Tensor, columns: Tensor, values: Tensor, n_columns: int
                     ) -> tuple[SparseCounts, Tensor]:
        """This table keyed for n_columns (at least its own) with entries added, repeated keys
        kept (an existing entry before an added one of the same key); and the order that
        takes cat(existing, added) entries to the new table's."""
        assert n_columns >= self.n_columns, "a table only grows"
        existing = (self.keys // self.n_columns) * n_columns + self.keys % self.n_columns
        keys = torch.cat([existing, rows * n_columns + columns])
        order = keys.argsort(stable=True)
        table = SparseCounts(n_columns, len(keys)).to(self.keys.device)
        table.keys.copy_(keys[order])
        table.values.copy_(torch.cat([self.values, values.to(self.values)])[order])
        return table, order

    def with_counts(self, rows: Tensor, columns: Tensor, n_columns: int) -> SparseCounts:
        """This count table keyed for n_columns with 1 added at each (row, column)."""
        added, _ = self.with_entries(rows, columns, torch.ones(len(rows), device=rows.device), n_columns)
        keys, inverse = torch.unique_consecutive(added.keys, return_inverse=True)
        table = SparseCounts(n_columns, len(keys)).to(self.keys.device)
        table.keys.copy_(keys)
        table.values.copy_(torch.zeros(len(keys), device=keys.device).index_add_(0, inverse, added.values))
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

    def matmul(self, dense: Tensor, n_rows: int) -> Tensor:
        """(n_rows, width): this table as an (n_rows, n_columns) matrix times dense (n_columns, width)."""
        indices = torch.stack([self.keys // self.n_columns, self.keys % self.n_columns])
        matrix = torch.sparse_coo_tensor(indices, self.values, (n_rows, self.n_columns), check_invariants=False)
        return torch.sparse.mm(matrix, dense)

    def dense_rows(self, rows: Tensor) -> Tensor:
        """(len(rows), n_columns) counts; zeros for a row of -1."""
        out = self.values.new_zeros(len(rows), self.n_columns)
        at, entries = self.row_entries(rows)
        out[at, self.keys[entries] % self.n_columns] = self.values[entries]
        return out


class PairUses(NamedTuple):
    """The uses (entries of `TagEvidence.uses`) of each (user, hashtag) pair of a (B, n) block."""

    shape: torch.Size  # (B, n)
    owner: Tensor  # each use's pair, flat index into the block
    row: Tensor  # each use's row b
    entries: Tensor  # each use's position in the table


class TagEvidence(SizedByState):
    """The learned count prior of the default model (see the module docstring).

    Weights start at 1 (user and item history, similar items), 0.1 (popularity) and 0
    (recent use, similar own posts): the model starts as a popularity mix, a strong
    ranking, and training moves it from there.
    """

    hashtag_counts: Tensor
    use_items: Tensor
    profile_basis: Tensor
    item_profiles: Tensor

    def __init__(self, n_users: int, n_items: int, n_hashtags: int, user_entries: int, item_entries: int,
                 use_entries: int, index: ContentIndex, neighbours: int, recency: bool = True,
                 similar_posts: bool = True) -> None:
        super().__init__()
        self.neighbours = neighbours
        self.active_terms = TagEvidence.terms(recency, similar_posts)
        self.user_counts = SparseCounts(n_hashtags, user_entries)
        self.item_counts = SparseCounts(n_hashtags, item_entries)
        self.register_buffer("hashtag_counts", torch.zeros(n_hashtags))
        # Every training use of a hashtag by a user (one per distinct user, hashtag, item),
        # keyed user * n_hashtags + hashtag, with its post's time in days (NaN: unknown).
        self.uses = SparseCounts(n_hashtags, use_entries)
        self.register_buffer("use_items", torch.zeros(use_entries, dtype=torch.long))  # each use's item
        # Item profiles (n_items, width): each training item's hashtag counts times the basis.
        width = min(n_hashtags, PROFILE_WIDTH)
        self.register_buffer("profile_basis", torch.eye(n_hashtags, width))
        self.register_buffer("item_profiles", torch.zeros(n_items, width))
        self.index = index
        self.weights = nn.Parameter(torch.tensor([1.0, 1.0, 0.1, 1.0, 0.0, 0.0]))
        self.user_weights = nn.Parameter(torch.zeros(n_users, len(EVIDENCE_TERMS)))
        self.hashtag_weights = nn.Parameter(torch.zeros(n_hashtags, len(EVIDENCE_TERMS)))
        self.bias = nn.Parameter(torch.zeros(n_hashtags))
        # The training items' neighbour shares, each item left out of its own neighbours;
        # computed by `prepare_training` on the model's device, never saved (in a list, so
        # that it is no submodule of the state dict); each training post's time in days,
        # keyed user * n_items + item, from `fit`; each training item's profile as a new
        # video's (its neighbours' shares) and each training post's item profile without
        # the post's own hashtags (in the order of the post table's keys).
        self._training_shares: list[SparseCounts] = []
        self._post_days: list[SparseCounts] = []
        self._neighbour_profiles: list[Tensor] = []
        self._post_profiles: list[Tensor] = []

    @staticmethod
    def terms(recency: bool = True, similar_posts: bool = True) -> tuple[str, ...]:
        """The names of the prior's terms, in order."""
        off = {"recent use": not recency, "similar own posts": not similar_posts}
        return tuple(term for term in EVIDENCE_TERMS if not off.get(term, False))

    @classmethod
    def fit(cls, triples: Tensor, n_users: int, n_items: int, n_hashtags: int, item_vectors: Tensor,
            neighbours: int, triple_times: Tensor | None = None, recency: bool = True,
            similar_posts: bool = True) -> TagEvidence:
        """From the training triples (T, 3: user, hashtag, item), the items' content vectors
        and the triples' times (T,) in Unix seconds (NaN or None: unknown)."""
        users, hashtags, items = triples.unbind(1)
        days = (torch.full((len(triples),), torch.nan) if triple_times is None
                else triple_times.double() / SECONDS_PER_DAY).float().to(triples.device)
        index = ContentIndex.fit(item_vectors, torch.stack([items, hashtags], dim=1), n_hashtags)
        user_counts = SparseCounts.of_pairs(users, hashtags, n_hashtags)
        item_counts = SparseCounts.of_pairs(items, hashtags, n_hashtags)
        evidence = cls(n_users, n_items, n_hashtags, len(user_counts.keys), len(item_counts.keys), len(triples),
                       index, neighbours, recency, similar_posts)
        evidence.user_counts.load_state_dict(user_counts.state_dict())
        evidence.item_counts.load_state_dict(item_counts.state_dict())
        evidence.uses.load_state_dict(SparseCounts.of_entries(users, hashtags, days, n_hashtags).state_dict())
        if similar_posts:
            # of_entries' order (a stable sort of the same keys), so use_items lines up with uses.
            evidence.use_items.copy_(items[(users * n_hashtags + hashtags).argsort(stable=True)])
            evidence.profile_basis = cls._profile_basis(item_counts, n_items, n_hashtags).to(triples.device)
            evidence.item_profiles = item_counts.matmul(evidence.profile_basis, n_items)
        posts, first = torch.unique(users * n_items + items, return_inverse=True)
        post_days = torch.full((len(posts),), torch.nan, device=days.device).scatter_reduce(
            0, first, days, "amax", include_self=False)
        evidence._post_days = [SparseCounts.of_entries(posts // n_items, posts % n_items, post_days, n_items)]
        evidence.hashtag_counts.copy_(torch.bincount(hashtags, minlength=n_hashtags).float())
        return evidence

    @staticmethod
    def _profile_basis(item_counts: SparseCounts, n_items: int, n_hashtags: int) -> Tensor:
        """(n_hashtags, width): the leading right singular vectors of the items' unit hashtag
        profiles, or the identity when there are few hashtags. Computed on the CPU with its
        own seed: the same basis every run, and the caller's random stream untouched."""
        if n_hashtags <= PROFILE_WIDTH or n_items <= PROFILE_WIDTH:
            return torch.eye(n_hashtags)
        keys, values = item_counts.keys.cpu(), item_counts.values.cpu()
        rows = keys // n_hashtags
        norms = torch.zeros(n_items).index_add_(0, rows, values.pow(2)).sqrt()
        unit = torch.sparse_coo_tensor(torch.stack([rows, keys % n_hashtags]), values / norms[rows],
                                       (n_items, n_hashtags), is_coalesced=True, check_invariants=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            _, _, basis = torch.svd_lowrank(unit, q=PROFILE_WIDTH, niter=4)
        return basis.contiguous()

    def prepare_training(self, block: int = 4096) -> None:
        """Neighbour shares of every training item, itself excluded (a sparse table); each
        item's profile from them; and each training post's item profile without the post."""
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
        if "similar own posts" not in self.active_terms:
            return
        self._neighbour_profiles = [table.matmul(self.profile_basis, n_items)]
        # A post's own hashtags (its uses: user, hashtag, item) leave its item's profile.
        n_hashtags = len(self.hashtag_counts)
        post_keys = self._post_days[0].keys
        users = self.uses.keys // n_hashtags
        own_post = torch.searchsorted(post_keys, users * n_items + self.use_items)
        own = torch.zeros(len(post_keys), self.profile_basis.shape[1], device=post_keys.device).index_add_(
            0, own_post, self.profile_basis[self.uses.keys % n_hashtags])
        item_uses = torch.bincount(self.item_counts.keys // n_hashtags, weights=self.item_counts.values,
                                   minlength=n_items)
        others = item_uses[post_keys % n_items] - torch.bincount(own_post, minlength=len(post_keys))
        # Exact zeros where nobody else tagged the item (not the rounding of a subtraction).
        self._post_profiles = [torch.where((others > 0).unsqueeze(1), self.item_profiles[post_keys % n_items] - own,
                                           0.0)]

    def _term_weights(self, users: Tensor, hashtags: Tensor) -> Tensor:
        """(B, n, terms) weights of hashtags (B, n) or (n,) for users (B,) (-1: cold, no offset)."""
        user_part = torch.where((users >= 0).unsqueeze(1), self.user_weights[users.clamp(min=0)], 0.0)
        hashtag_part = self.hashtag_weights[hashtags]
        if hashtags.dim() == 1:
            hashtag_part = hashtag_part.unsqueeze(0)
        return self.weights + hashtag_part + user_part.unsqueeze(1)

    def _combine(self, weights: Tensor, user: Tensor, item: Tensor, popularity: Tensor, similar: Tensor,
                 recent: Tensor | None, own_similar: Tensor | None, bias: Tensor) -> dict[str, Tensor]:
        """Each active weighted term (B, n); the bias is counted with popularity. An
        inactive term's values are None."""
        values = {"user history": user.log1p(), "item history": item.log1p(), "popularity": popularity.log1p(),
                  "similar items": similar, "recent use": None if recent is None else recent.log1p(),
                  "similar own posts": None if own_similar is None else own_similar.log1p()}
        terms = {}
        for name in self.active_terms:
            value = values[name]
            assert value is not None, f"{name} is active but was not computed"
            terms[name] = weights[..., EVIDENCE_TERMS.index(name)] * value
        terms["popularity"] = terms["popularity"] + bias
        return terms

    def _use_weights(self, entries: Tensor, days: Tensor) -> Tensor:
        """Each use's weight (see the module docstring) at the times (one per entry) of the posts scored."""
        weights = (1.0 + (days - self.uses.values[entries]).abs()).pow(-RECENCY_DECAY)
        return torch.nan_to_num(weights, nan=1.0)

    def pair_uses(self, users: Tensor, hashtags: Tensor) -> PairUses:
        """The uses of hashtags (B, n) by users (B,) (-1: cold, none), for `recency` and
        `similar_posts` (one range search for both)."""
        keys = torch.where((users >= 0).unsqueeze(1), users.clamp(min=0).unsqueeze(1) * self.uses.n_columns + hashtags,
                           -1)
        owner, entries = self.uses.ranges(keys)
        return PairUses(keys.shape, owner, owner // keys.shape[1], entries)

    @staticmethod
    def _sum_per_pair(uses: PairUses, values: Tensor) -> Tensor:
        """(B, n): values (one per use) summed over each pair's uses."""
        return values.new_zeros(uses.shape.numel()).index_add_(0, uses.owner, values).view(uses.shape)

    def recency(self, users: Tensor, hashtags: Tensor, days: Tensor, uses: PairUses | None = None) -> Tensor:
        """r_ij(t) (B, n) of hashtags (B, n) for users (B,) (-1: cold, 0) at times days (B,)."""
        uses = uses or self.pair_uses(users, hashtags)
        return self._sum_per_pair(uses, self._use_weights(uses.entries, days[uses.row]))

    def recency_rows(self, users: Tensor, days: Tensor) -> Tensor:
        """r_ij(t) (B, n_hashtags) of every hashtag for users (B,) (-1: cold, zeros) at times days (B,)."""
        out = self.uses.values.new_zeros(len(users), self.uses.n_columns)
        at, entries = self.uses.row_entries(users)
        out.index_put_((at, self.uses.keys[entries] % self.uses.n_columns), self._use_weights(entries, days[at]),
                       accumulate=True)
        return out

    def _profile_similarity(self, entries: Tensor, profiles: Tensor, rows: Tensor) -> Tensor:
        """max(0, cosine)^SIMILARITY_AMPLIFICATION of each use's item profile with the scored
        item's unit profile profiles[rows[e]] (one per entry)."""
        cosine = row_cosines(self.item_profiles, self.use_items[entries], profiles, rows)
        return cosine.clamp(min=0.0).pow(SIMILARITY_AMPLIFICATION)

    def similar_posts(self, users: Tensor, hashtags: Tensor, profiles: Tensor, skip_items: Tensor,
                      uses: PairUses | None = None) -> Tensor:
        """p_ikj (B, n) of hashtags (B, n) for users (B,) (-1: cold, 0) and the scored items'
        unit profiles (B, width); a use of skip_items[b] (the post being scored) is left out."""
        uses = uses or self.pair_uses(users, hashtags)
        similarity = torch.where(self.use_items[uses.entries] == skip_items[uses.row], 0.0,
                                 self._profile_similarity(uses.entries, profiles, uses.row))
        return self._sum_per_pair(uses, similarity)

    def similar_posts_rows(self, users: Tensor, profiles: Tensor) -> Tensor:
        """p_ikj (B, n_hashtags) of every hashtag for users (B,) (-1: cold, zeros) and the
        scored items' unit profiles (B, width)."""
        out = self.item_profiles.new_zeros(len(users), self.uses.n_columns)
        at, entries = self.uses.row_entries(users)
        out.index_put_((at, self.uses.keys[entries] % self.uses.n_columns),
                       self._profile_similarity(entries, profiles, at), accumulate=True)
        return out

    @staticmethod
    def _unit_profiles(own: Tensor, use_own: Tensor, fallback: Tensor) -> Tensor:
        """Each scored item's unit profile: its own (B, width) where use_own (B,) and it has
        one (an item nobody else tagged has none), else the fallback (its neighbours')."""
        usable = use_own & own.ne(0).any(dim=1)
        return unit_rows(torch.where(usable.unsqueeze(1), own, fallback))

    def score_training(self, users: Tensor, items: Tensor, hashtags: Tensor, on_post: Tensor,
                       known_items: Tensor | None = None) -> Tensor:
        """Prior (B, n) of hashtags (B, n) for training posts (users, items: (B,) graph ids);
        on_post (B, n) bool marks the post's own hashtags, whose counts leave the post out.
        Where known_items (B,) is False the post is scored as a new video: no item history."""
        assert self._training_shares and self._post_days, "fit() and prepare_training() first"
        leave_out = on_post.to(self.hashtag_counts.dtype)
        item_rows = items if known_items is None else torch.where(known_items, items, -1)
        recent = own_similar = None
        # Every training post is in the post table: its row there, and its hashtags' uses.
        post = torch.searchsorted(self._post_days[0].keys, users * len(self.index.vectors) + items)
        uses = self.pair_uses(users, hashtags)
        if "recent use" in self.active_terms:
            # The post's own use is as close in time as can be: weight 1 (NaN times also count 1).
            days = self._post_days[0].values[post]
            recent = (self.recency(users, hashtags, days, uses) - leave_out).clamp(min=0.0)
        if "similar own posts" in self.active_terms:
            profiles = self._unit_profiles(self._post_profiles[0][post],
                                           torch.ones_like(users, dtype=torch.bool) if known_items is None
                                           else known_items, self._neighbour_profiles[0][items])
            own_similar = self.similar_posts(users, hashtags, profiles, skip_items=items, uses=uses)
        terms = self._combine(
            self._term_weights(users, hashtags),
            self.user_counts.lookup(users.unsqueeze(1), hashtags) - leave_out,
            (self.item_counts.lookup(item_rows.unsqueeze(1), hashtags) - leave_out).clamp(min=0.0),
            self.hashtag_counts[hashtags] - leave_out,
            self._training_shares[0].lookup(items.unsqueeze(1), hashtags),
            recent, own_similar, self.bias[hashtags],
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
        recent = self.recency_rows(users, days) if "recent use" in self.active_terms else None
        own_similar = None
        if "similar own posts" in self.active_terms:
            profiles = self._unit_profiles(self.item_profiles[items.clamp(min=0)], items >= 0,
                                           similar @ self.profile_basis)
            own_similar = self.similar_posts_rows(users, profiles)
        all_hashtags = torch.arange(len(self.hashtag_counts), device=users.device)
        return self._combine(self._term_weights(users, all_hashtags), self.user_counts.dense_rows(users),
                             self.item_counts.dense_rows(items), self.hashtag_counts.unsqueeze(0), similar,
                             recent, own_similar, self.bias.unsqueeze(0))
