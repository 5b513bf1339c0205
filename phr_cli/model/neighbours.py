"""Content neighbours: the training items whose content is closest to an item's, and the
hashtags those items carried.

The hashtags of the most similar training items are the strongest signal a new video has
before anyone tagged it; the content-kNN baseline ranks with them (fused with the user's
own popularity) and the default model weighs them as one of its evidence terms.

Similarity is the cosine of content vectors in which each modality counts once: every
present modality's standardised block is scaled to unit length, so ResNet50's 2,048
columns do not drown VGGish's 128 or the caption's 100. Wide vectors are reduced by a PCA
fitted on the training items, which keeps a YFCC100M-size index (135k items) small and its
all-pairs search affordable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

# Width of the indexed vectors: wider content is reduced to this many principal components.
INDEX_WIDTH = 128
# Queries scored against the whole index at once: bounds the (rows x items) similarity block.
QUERY_BLOCK_ELEMENTS = 1 << 24


def content_vectors(blocks: list[tuple[Tensor, Tensor]]) -> Tensor:
    """(B, sum of widths) vectors from standardised modality blocks (values (B, w), present
    (B,) bool): each present block scaled to unit length, a missing one zero."""
    scaled = []
    for values, present in blocks:
        norms = values.norm(dim=1, keepdim=True).clamp(min=1e-12)
        scaled.append(torch.where(present.unsqueeze(1), values / norms, torch.zeros_like(values)))
    return torch.cat(scaled, dim=1)


def gather_ranges(starts: Tensor, stops: Tensor) -> tuple[Tensor, Tensor]:
    """The entries of the ranges [starts[r], stops[r]) of a CSR table, concatenated in
    order: each entry's range r and its position in the table."""
    lengths = stops - starts
    owner = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), lengths)
    first_of_owner = (lengths.cumsum(0) - lengths)[owner]
    return owner, starts[owner] + torch.arange(len(owner), device=lengths.device) - first_of_owner


def unit_rows(vectors: Tensor) -> Tensor:
    return vectors / vectors.norm(dim=1, keepdim=True).clamp(min=1e-12)


# Rows gathered at once by `row_cosines`: a few MiB, so that no (entries, width) temporary is
# built (on a CPU, filling fresh pages for one cost more than the products).
ROW_BLOCK = 8192


def row_cosines(left: Tensor, left_rows: Tensor, right: Tensor, right_rows: Tensor) -> Tensor:
    """(E,): the cosine of left[left_rows[e]] with right[right_rows[e]] (right's rows are of unit length)."""
    out = right.new_empty(len(left_rows), dtype=torch.promote_types(left.dtype, right.dtype))
    for start in range(0, len(left_rows), ROW_BLOCK):
        block = slice(start, start + ROW_BLOCK)
        vectors = unit_rows(left.index_select(0, left_rows[block]))
        out[block] = (vectors * right.index_select(0, right_rows[block])).sum(dim=1)
    return out


class SizedByState(torch.nn.Module):
    """A module whose buffers take the sizes of the state dict it loads: a checkpoint's
    count tables are only known once it is read."""

    def _load_from_state_dict(self, state_dict: Mapping[str, Tensor], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name, buffer in self._buffers.items():
            saved = state_dict.get(prefix + name)
            if buffer is not None and saved is not None and saved.shape != buffer.shape:
                self._buffers[name] = buffer.new_empty(saved.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class ContentIndex(SizedByState):
    """Training items' content vectors (reduced, unit length) and their hashtag shares.

    Buffers, hence saved with a checkpoint: a new clip is searched for at recommendation
    time without the training graph.
    """

    mean: Tensor
    components: Tensor
    vectors: Tensor
    share_starts: Tensor
    share_hashtags: Tensor
    share_values: Tensor

    def __init__(self, width: int, n_items: int, n_hashtags: int, n_share_entries: int) -> None:
        super().__init__()
        reduced = min(width, INDEX_WIDTH)
        self.n_hashtags = n_hashtags
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("components", torch.eye(width)[:, :reduced].contiguous())
        self.register_buffer("vectors", torch.zeros(n_items, reduced))
        # Each item's hashtags as shares of its posts' tags, CSR: the rows' starts, the
        # hashtag and the share of each entry.
        self.register_buffer("share_starts", torch.zeros(n_items + 1, dtype=torch.long))
        self.register_buffer("share_hashtags", torch.zeros(n_share_entries, dtype=torch.long))
        self.register_buffer("share_values", torch.zeros(n_share_entries))

    @classmethod
    def fit(cls, vectors: Tensor, item_hashtags: Tensor, n_hashtags: int,
            projection: ContentIndex | None = None) -> ContentIndex:
        """An index of training items: `vectors` (n_items, width) from `content_vectors`,
        `item_hashtags` (T, 2) the (item, hashtag) of every training triple. With
        `projection`, its reduction (mean and components) is taken instead of fitted."""
        n_items, width = vectors.shape
        pairs, counts = torch.unique(item_hashtags, dim=0, return_counts=True)  # sorted by item
        index = cls(width, n_items, n_hashtags, len(pairs))
        vectors = vectors.float()
        if projection is not None:
            index.mean, index.components = projection.mean.clone(), projection.components.clone()
            index.vectors = index.vectors.new_zeros(n_items, index.components.shape[1])
        elif width > INDEX_WIDTH and n_items > INDEX_WIDTH:
            index.mean.copy_(vectors.mean(dim=0))
            _, _, components = torch.pca_lowrank(vectors - index.mean, q=INDEX_WIDTH, center=False, niter=4)
            index.components.copy_(components)
        index.vectors.copy_(index.reduce(vectors))
        per_item = torch.bincount(pairs[:, 0], minlength=n_items)
        index.share_starts[1:] = per_item.cumsum(0)
        totals = torch.zeros(n_items).index_add_(0, pairs[:, 0], counts.float())
        index.share_hashtags.copy_(pairs[:, 1])
        index.share_values.copy_(counts.float() / totals[pairs[:, 0]].clamp(min=1.0))
        return index

    def reduce(self, vectors: Tensor) -> Tensor:
        """Index coordinates (unit rows) of content vectors."""
        return unit_rows((vectors.to(self.mean) - self.mean) @ self.components)

    def nearest(self, queries: Tensor, k: int, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Cosine similarities (B, k) and item ids (B, k) of each reduced query's k nearest
        training items; exclude[b] (an item id, or -1) is never its own neighbour."""
        k = min(k, len(self.vectors) - (exclude is not None))
        if k <= 0 or len(queries) == 0:
            empty = queries.new_zeros(len(queries), 0)
            return empty, empty.long()
        block = max(1, QUERY_BLOCK_ELEMENTS // max(1, len(self.vectors)))
        similarities, items = [], []
        for start in range(0, len(queries), block):
            rows = slice(start, start + block)
            scores = queries[rows] @ self.vectors.T
            if exclude is not None:
                own = exclude[rows]
                known = (own >= 0).nonzero().squeeze(1)
                scores[known, own[known]] = -torch.inf
            top = scores.topk(k, dim=1)
            similarities.append(top.values)
            items.append(top.indices)
        return torch.cat(similarities), torch.cat(items)

    def hashtag_shares(self, queries: Tensor, k: int, exclude: Tensor | None = None) -> Tensor:
        """(B, n_hashtags): the similarity-weighted mean of the k nearest items' hashtag
        shares (each row sums to 1, or 0 when no neighbour is similar at all)."""
        similarities, items = self.nearest(queries, k, exclude)
        weights = similarities.clamp(min=0.0)
        weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-12)
        shares = queries.new_zeros(len(queries), self.n_hashtags)
        if items.numel() == 0:
            return shares
        # Gather the neighbours' CSR rows: one entry per (query, neighbour, hashtag).
        entry_owner, entries = gather_ranges(self.share_starts[items].reshape(-1),
                                             self.share_starts[items + 1].reshape(-1))
        rows = entry_owner // items.shape[1]
        values = self.share_values[entries] * weights.reshape(-1)[entry_owner]
        shares.index_put_((rows, self.share_hashtags[entries]), values, accumulate=True)
        return shares
