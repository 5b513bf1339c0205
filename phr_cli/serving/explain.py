"""Why a hashtag was suggested (`because`): what in GCN-PHR's score put it there, in numbers
for engineers and in plain sentences a creator understands and a platform may show.

For a suggested hashtag j, a user i and a clip: the share of the score each of the model's
named parts contributes (`PHRModel.score_parts`, whatever the default score is made of), the
user's own training videos tagged j with their hashtag-guided attention α (§3.2, the
weights that shaped the user's taste for j), how often and when the user last used j, the
user's own videos with j most similar to the clip (cosine of the model's projected item
vectors W^v v_k + b^v, the space the score is computed in), and how many of the training
videos closest to the clip carry j.

Privacy: an explanation names the asking user's own videos only, by the name of the user's
own post (two users may post the same file under different names); other users' videos
enter as a count, never by file name or caption.

`sentences` say the same in words, one for each part that carries a material positive share
of the score (`MATERIAL_SHARE`); parts that push the score down or barely move it stay in the
numbers only. The human name of each part is in `PART_LABELS`.

The checkpoint keeps the propagated representations, not the graph; the attention needs
the graph, so it is rebuilt once from the store's training split (the checkpoint's split,
checked against the posts' fingerprint). Saving per-user data in the checkpoint instead
would change its format for one consumer; serve and recommend read the store anyway.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import timedelta

import humanize
import numpy as np
import torch
from torch import Tensor

from phr_cli.data.graph import Graph, build_graph
from phr_cli.data.provenance import select_trained_posts
from phr_cli.data.store import StoreContents
from phr_cli.errors import CheckpointError
from phr_cli.model.factors import FACTORS
from phr_cli.model.network import GCNPHR
from phr_cli.model.phr import GRAPH, PHRModel
from phr_cli.ranking.rerank import RERANKER_PART
from phr_cli.training.checkpoint import Checkpoint

EVIDENCE = 3  # videos listed per kind of evidence
ITEM_CHUNK = 4096  # graph items projected at once when building the similarity index
# A part earns a sentence from this share of the score's magnitude up: below it, saying it
# would bury the reasons that decided the ranking.
MATERIAL_SHARE = 0.10

# Each score part as a creator would name it (`Part.label`).
PART_LABELS = {
    GRAPH: "your taste and the video's content",
    "user history": "how often you used it",
    "item history": "how this very video was tagged",
    "popularity": "how popular it is",
    "similar items": "how often it is on videos like this one",
    "recent use": "how recently you used it",
    "similar own posts": "your own videos like this one",
    FACTORS: "tagging patterns of users and videos like these",
    RERANKER_PART: "the final re-ordering",
}


@dataclass
class Part:
    name: str  # the model's name of the part (PHRModel.part_names, or RERANKER_PART)
    label: str  # its name for a creator (PART_LABELS)
    value: float
    share: float  # value / Σ|values|: signed, the shares' magnitudes sum to 1


@dataclass
class VideoEvidence:
    video: str  # the user's own post: its store path, or "text: <caption>" for a text-only post
    weight: float  # attention α (own_videos) or cosine similarity to the clip (similar_videos)


@dataclass
class Because:
    parts: list[Part]
    uses: int  # the user's training posts with the hashtag
    last_used: float | None  # Unix seconds of the latest of them (None: none, or no time known)
    own_videos: list[VideoEvidence]  # the user's training videos tagged with it, by attention
    # The user's own training videos tagged with it, most similar to the clip first (similarity > 0 only).
    similar_videos: list[VideoEvidence]
    nearest: int  # training videos (anyone's) most similar to the clip looked at: similarity > 0, at most neighbours
    nearest_with_it: int  # how many of those carry the hashtag: a count, never their names
    sentences: list[str]  # the reasons in words, for the creator (`sentences`)

    def to_dict(self) -> dict:
        return asdict(self)


def shares(parts: dict[str, float]) -> list[Part]:
    """Each part with its signed share of the score, the largest magnitude first."""
    total = sum(abs(v) for v in parts.values()) or 1.0
    return sorted((Part(name, PART_LABELS.get(name, name), value, value / total) for name, value in parts.items()),
                  key=lambda part: -abs(part.value))


def _times(count: int) -> str:
    return {1: "once", 2: "twice"}.get(count, f"{count} times")


def sentences(because: Because, hashtag: str, personalised: bool, posted: float) -> list[str]:
    """The reasons a creator reads: one sentence per part with a material positive share
    (largest first, each sentence once), or one saying no part stood out. `posted` is the
    post's Unix time, that "most recently … ago" counts from."""
    uses = ""
    if because.uses:
        uses = f"You used #{hashtag} {_times(because.uses)}"
        if because.last_used is not None and math.isfinite(posted):
            uses += ", most recently " + humanize.naturaltime(timedelta(seconds=max(0.0, posted - because.last_used)))
        uses += "."
    own = ("You put it on your videos like this one: " + ", ".join(v.video for v in because.similar_videos) + "."
           if because.similar_videos else "")
    like_this = (f"On {because.nearest_with_it} of the {because.nearest} videos most like this one."
                 if because.nearest_with_it else "Often on videos like this one.")
    by_part = {
        GRAPH: own or ("It fits your taste and what this video shows." if personalised
                       else "It fits what this video shows."),
        "user history": uses,
        "recent use": uses,
        "similar own posts": own or uses,
        "item history": "This very video was already tagged with it.",
        "popularity": "Popular on the platform.",
        "similar items": like_this,
        FACTORS: ("It fits your tagging habits and this kind of video." if personalised
                  else "It fits how videos of this kind are tagged."),
        RERANKER_PART: "Moved up when all the evidence was weighed together.",
    }
    said: list[str] = []
    for part in because.parts:  # largest magnitude first
        sentence = by_part.get(part.name, f"{part.label.capitalize()}.")
        if part.share >= MATERIAL_SHARE and sentence and sentence not in said:
            said.append(sentence)
    return said or ["No single strong reason: it scored above the hashtags ranked below it."]


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
        self.hashtags = graph.hashtags
        self.n_hashtags, self.n_items = graph.n_hashtags, graph.n_items
        self.neighbours = model.config.evidence.neighbours  # as many as the "similar items" term reads
        triples = graph.triples  # sorted by (user, hashtag, item): a pair's triples are contiguous
        self.pair_keys = triples[:, 0] * graph.n_hashtags + triples[:, 1]
        self.pair_items = triples[:, 2]
        self.pair_times = graph.triple_times  # each triple's latest post (NaN: unknown), None: no times
        self.attention = self._attention(checkpoint, graph)
        carried = graph.edges((2, 1))  # distinct (item, hashtag), sorted by item
        self.item_of, self.item_hashtags = carried[:, 0], carried[:, 1]
        # Posts, not distinct videos: "used it 3 times" counts each post.
        post_keys = np.array([graph.user_index[u] * graph.n_hashtags + graph.hashtag_index[h]
                              for u, tags in zip(train.users, train.hashtags) for h in tags], dtype=np.int64)
        self.use_keys, self.use_counts = np.unique(post_keys, return_counts=True)
        self.own_names = self._own_names(contents, selected.store_rows[checkpoint.split.train], train.users,
                                         train.items, graph)
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
    def _own_names(contents: StoreContents, store_rows: np.ndarray, users: list[str], items: list[str],
                   graph: Graph) -> dict[int, str]:
        """Each (user, item) of training, keyed user * n_items + item, named by that user's own
        post: the same content posted by two users under two names shows each their own."""
        table = contents.posts
        assert table is not None  # select_trained_posts checked it
        names: dict[int, str] = {}
        for row, user, item in zip(store_rows, users, items):
            names.setdefault(graph.user_index[user] * graph.n_items + graph.item_index[item],
                             table.path[row] or f"text: {table.caption[row]}")
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

    def _last_used(self, pair: slice) -> float | None:
        if self.pair_times is None or pair.start == pair.stop:
            return None
        latest = float(np.fmax.reduce(self.pair_times[pair]))  # NaN only when no use has a time
        return latest if math.isfinite(latest) else None

    @torch.no_grad()
    def explain(self, user: int, item_vector: Tensor, values: dict[str, np.ndarray],
                hashtags: list[int], posted: float) -> list[Because]:
        """Evidence for each of `hashtags` (columns) suggested to `user` (-1: unknown) for one
        clip posted at `posted` (Unix seconds): `item_vector` v_k (D,) as the score read it,
        and `values` each score part (`PHRModel.score_parts`) of those hashtags, in their order."""
        clip = torch.nn.functional.normalize(self.model.network.scorer.item(item_vector[None]), dim=1)[0]
        similarity = (self.item_vectors @ clip).cpu().numpy()
        closest = np.argpartition(-similarity, min(self.neighbours, len(similarity)) - 1)[:self.neighbours]
        nearest = closest[similarity[closest] > 0]
        # Per hashtag, how many of the nearest carry it: from the few nearest items' hashtags,
        # not from each hashtag's items (a popular one is on a large share of them).
        near_tags = [self.item_hashtags[self._range(self.item_of, int(item))] for item in nearest]
        carrying = np.bincount(np.concatenate([np.zeros(0, np.int64), *near_tags]), minlength=self.n_hashtags)
        results = []
        for n, hashtag in enumerate(hashtags):
            own: list[VideoEvidence] = []
            similar: list[VideoEvidence] = []
            uses, last_used = 0, None
            if user >= 0:
                key = user * self.n_hashtags + hashtag
                pair = self._range(self.pair_keys, key)
                items = self.pair_items[pair]
                weights = (self.attention[pair] if self.attention is not None
                           else np.full(len(items), 1.0 / max(1, len(items))))
                by_attention = np.argsort(-weights, kind="stable")[:EVIDENCE]
                own = [VideoEvidence(self.own_names[user * self.n_items + items[i]], float(weights[i]))
                       for i in by_attention]
                alike = [int(i) for i in items[np.argsort(-similarity[items], kind="stable")] if similarity[i] > 0]
                similar = [VideoEvidence(self.own_names[user * self.n_items + i], float(similarity[i]))
                           for i in alike[:EVIDENCE]]
                uses = int(self.use_counts[self._range(self.use_keys, key)].sum())
                last_used = self._last_used(pair)
            because = Because(
                parts=shares({name: float(v[n]) for name, v in values.items()}),
                uses=uses, last_used=last_used, own_videos=own, similar_videos=similar,
                nearest=len(nearest), nearest_with_it=int(carrying[hashtag]), sentences=[],
            )
            because.sentences = sentences(because, self.hashtags[hashtag], user >= 0, posted)
            results.append(because)
        return results
