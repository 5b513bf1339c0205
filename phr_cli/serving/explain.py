"""Why a hashtag was suggested (`because`): what in GCN-PHR's score put it there.

For a suggested hashtag j, a user i and a clip: the share of the score each of the model's
named parts contributes (`PHRModel.score_parts`, whatever the default score is made of), the
user's own training videos tagged j with their hashtag-guided attention α (§3.2, the
weights that shaped the user's taste for j), how often the user used j, and the training
videos carrying j that are most similar to the clip (cosine of the model's projected item
vectors W^v v_k + b^v, the space the score is computed in).

The checkpoint keeps the propagated representations, not the graph; the attention needs
the graph, so it is rebuilt once from the store's training split (the checkpoint's split,
checked against the posts' fingerprint). Saving per-user data in the checkpoint instead
would change its format for one consumer; serve and recommend read the store anyway.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from phr_cli.data.graph import Graph, build_graph
from phr_cli.data.provenance import select_trained_posts
from phr_cli.data.store import StoreContents
from phr_cli.errors import CheckpointError
from phr_cli.model.network import GCNPHR
from phr_cli.model.phr import PHRModel
from phr_cli.training.checkpoint import Checkpoint

EVIDENCE = 3  # videos listed per kind of evidence
ITEM_CHUNK = 4096  # graph items projected at once when building the similarity index


@dataclass
class Part:
    name: str
    value: float
    share: float  # value / Σ|values|: signed, the shares' magnitudes sum to 1


@dataclass
class VideoEvidence:
    video: str  # the store's relative path, or "text: <caption>" for a text-only post
    weight: float  # attention α (the user's videos) or cosine similarity (similar videos)


@dataclass
class Because:
    parts: list[Part]
    uses: int  # the user's training posts with the hashtag
    own_videos: list[VideoEvidence]  # the user's training videos tagged with it, by attention
    similar_videos: list[VideoEvidence]  # training videos tagged with it, most similar to the clip

    def to_dict(self) -> dict:
        return asdict(self)


def shares(parts: dict[str, float]) -> list[Part]:
    """Each part with its signed share of the score, the largest magnitude first."""
    total = sum(abs(v) for v in parts.values()) or 1.0
    return sorted((Part(name, value, value / total) for name, value in parts.items()),
                  key=lambda part: -abs(part.value))


class Explainer:
    """The per-user and per-hashtag evidence of a checkpoint, built once from its store."""

    def __init__(self, checkpoint: Checkpoint, contents: StoreContents, model: PHRModel) -> None:
        # In a store that grew since training: the checkpoint's own posts, found by their ids.
        selected, _ = select_trained_posts(contents, checkpoint.provenance)
        train = selected.posts.subset(checkpoint.split.train)
        graph = build_graph(train)
        if graph.users != checkpoint.trained_users or graph.hashtags != checkpoint.trained_hashtags:
            raise CheckpointError(f"{contents.path}: its training graph differs from the checkpoint's")
        self.model = model
        self.n_hashtags = graph.n_hashtags
        triples = graph.triples  # sorted by (user, hashtag, item): a pair's triples are contiguous
        self.pair_keys = triples[:, 0] * graph.n_hashtags + triples[:, 1]
        self.pair_items = triples[:, 2]
        self.attention = self._attention(checkpoint, graph)
        carried = graph.edges((1, 2))  # distinct (hashtag, item), sorted by hashtag
        self.hashtag_of, self.hashtag_items = carried[:, 0], carried[:, 1]
        # Posts, not distinct videos: "used it 3 times" counts each post.
        post_keys = np.array([graph.user_index[u] * graph.n_hashtags + graph.hashtag_index[h]
                              for u, tags in zip(train.users, train.hashtags) for h in tags], dtype=np.int64)
        self.use_keys, self.use_counts = np.unique(post_keys, return_counts=True)
        self.item_names = self._item_names(contents, selected.store_rows[checkpoint.split.train], train.items,
                                           graph.item_index)
        self.item_vectors = self._item_vectors(model.network, graph)

    @staticmethod
    def _attention(checkpoint: Checkpoint, graph: Graph) -> np.ndarray | None:
        """α of every training triple in the last layer (None: a model without propagation)."""
        network = checkpoint.model(torch.device("cpu")).network
        if not network.layers:
            return None
        network.attach_graph(graph)
        with torch.no_grad():
            return network.layer_messages()[-1].user_side_attention.numpy().astype(np.float32)

    @staticmethod
    def _item_names(contents: StoreContents, store_rows: np.ndarray, items: list[str],
                    item_index: dict[str, int]) -> list[str]:
        table = contents.posts
        assert table is not None  # select_trained_posts checked it
        names = [""] * len(item_index)
        for row, item in zip(store_rows, items):
            slot = item_index[item]
            if not names[slot]:
                names[slot] = table.path[row] or f"text: {table.caption[row]}"
        return names

    @staticmethod
    def _item_vectors(network: GCNPHR, graph: Graph) -> Tensor:
        """Unit-length W^v v_k + b^v of every training item, on the network's device."""
        device = network.device
        features = {m: torch.as_tensor(f) for m, f in graph.item_features.items()}
        masks = {m: torch.as_tensor(k) for m, k in graph.item_masks.items()}
        blocks = []
        with torch.no_grad():
            for start in range(0, graph.n_items, ITEM_CHUNK):
                rows = slice(start, start + ITEM_CHUNK)
                vectors = network.encode_items({m: f[rows].to(device) for m, f in features.items()},
                                             {m: k[rows].to(device) for m, k in masks.items()})
                blocks.append(torch.nn.functional.normalize(network.scorer.item(vectors), dim=1))
        return torch.cat(blocks)

    def user_counts(self, user: int) -> dict[int, int]:
        """The user's training hashtags (column -> posts), most used first."""
        start = int(np.searchsorted(self.use_keys, user * self.n_hashtags, "left"))
        stop = int(np.searchsorted(self.use_keys, (user + 1) * self.n_hashtags, "left"))
        counts = {int(k % self.n_hashtags): int(n) for k, n in zip(self.use_keys[start:stop],
                                                                     self.use_counts[start:stop])}
        return dict(sorted(counts.items(), key=lambda item: -item[1]))

    def _range(self, keys: np.ndarray, key: int) -> slice:
        return slice(int(np.searchsorted(keys, key, "left")), int(np.searchsorted(keys, key, "right")))

    @torch.no_grad()
    def explain(self, user: int, item_vector: Tensor, values: dict[str, np.ndarray],
                hashtags: list[int]) -> list[Because]:
        """Evidence for each of `hashtags` (columns) suggested to `user` (-1: unknown) for one
        clip: `item_vector` v_k (D,) as the score read it, and `values` each score part
        (`PHRModel.score_parts`) of those hashtags, in their order."""
        clip = torch.nn.functional.normalize(self.model.network.scorer.item(item_vector[None]), dim=1)[0]
        similarity = (self.item_vectors @ clip).cpu().numpy()
        results = []
        for n, hashtag in enumerate(hashtags):
            own: list[VideoEvidence] = []
            uses = 0
            if user >= 0:
                key = user * self.n_hashtags + hashtag
                pair = self._range(self.pair_keys, key)
                weights = (self.attention[pair] if self.attention is not None
                           else np.full(pair.stop - pair.start, 1.0 / max(1, pair.stop - pair.start)))
                order = np.argsort(-weights, kind="stable")[:EVIDENCE]
                own = [VideoEvidence(self.item_names[self.pair_items[pair][i]], float(weights[i])) for i in order]
                counted = self._range(self.use_keys, key)
                uses = int(self.use_counts[counted].sum())
            carriers = self.hashtag_items[self._range(self.hashtag_of, hashtag)]
            closest = carriers[np.argsort(-similarity[carriers], kind="stable")[:EVIDENCE]]
            results.append(Because(
                parts=shares({name: float(v[n]) for name, v in values.items()}),
                uses=uses,
                own_videos=own,
                similar_videos=[VideoEvidence(self.item_names[i], float(similarity[i])) for i in closest],
            ))
        return results
