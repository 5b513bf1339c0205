"""Explanations (`because`): the numbers for engineers, the sentences for creators, and
privacy: a user's reasons name the user's own posts only.

The end-to-end checks on videos (file names, the table) are in test_recommend.py and
test_serve.py; here a store of text-only posts, where a post's name is its caption.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from phr_cli.cli.present import describe
from phr_cli.data.graph import PostData, build_graph
from phr_cli.data.store import TEXTUAL_DIM, load_store
from phr_cli.model.config import ModelConfig, NetworkConfig
from phr_cli.model.evidence import EVIDENCE_TERMS
from phr_cli.model.factors import FACTORS
from phr_cli.model.phr import GRAPH
from phr_cli.ranking.rerank import RERANKER_PART
from phr_cli.serving.explain import MATERIAL_SHARE, PART_LABELS, Because, Explainer, VideoEvidence, sentences, shares
from phr_cli.training.checkpoint import load_checkpoint
from phr_cli.training.config import TrainConfig
from phr_cli.training.train import train_from_store
from support.stores import write_text_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DAY = 86400.0
NOW = 1_700_000_000.0
TOPICS = ("beach", "city")
USERS = ("ana", "ben", "cem")
POSTS_PER_TOPIC = 6


def because(parts: dict[str, float], uses: int = 0, last_used: float | None = None,
            similar: list[VideoEvidence] | None = None, nearest: int = 0, nearest_with_it: int = 0) -> Because:
    return Because(shares(parts), uses, last_used, [], similar or [], nearest, nearest_with_it, [])


def test_every_score_part_has_a_label_for_creators():
    assert {GRAPH, *EVIDENCE_TERMS, FACTORS, RERANKER_PART} <= set(PART_LABELS)


def test_sentences_only_for_material_positive_parts():
    reasons = because({"user history": 5.0, "popularity": -3.0, GRAPH: 1.5, "similar items": 0.5},
                      uses=4, last_used=NOW - 3 * DAY)
    assert [part.name for part in reasons.parts] == ["user history", "popularity", GRAPH, "similar items"]
    assert reasons.parts[-1].share < MATERIAL_SHARE  # 5 %: too small to say
    assert sentences(reasons, "beach", personalised=True, posted=NOW) == [
        "You used #beach 4 times, most recently 3 days ago.",
        "It fits your taste and what this video shows."]


def test_a_use_without_a_time_says_how_often_only():
    reasons = because({"user history": 1.0, "recent use": 1.0}, uses=1)
    assert sentences(reasons, "surf", personalised=True, posted=NOW) == ["You used #surf once."]


def test_the_users_similar_videos_and_the_count_of_others():
    own = [VideoEvidence("beach_day.mp4", 0.9), VideoEvidence("surf.mp4", 0.4)]
    reasons = because({"similar own posts": 2.0, "similar items": 1.0, "item history": 1.0, "popularity": 0.5},
                      uses=2, similar=own, nearest=20, nearest_with_it=7)
    assert sentences(reasons, "beach", personalised=True, posted=NOW) == [
        "You put it on your videos like this one: beach_day.mp4, surf.mp4.",
        "On 7 of the 20 videos most like this one.",
        "This very video was already tagged with it.",
        "Popular on the platform."]


def test_when_no_part_pushes_up_no_reason_is_invented():
    reasons = because({GRAPH: -1.0, "popularity": -0.5})
    assert sentences(reasons, "beach", personalised=False, posted=NOW) == [
        "No single strong reason: it scored above the hashtags ranked below it."]


def test_a_cell_breaks_between_sentences_and_escapes_inside_them():
    reasons = because({GRAPH: 1.0})
    reasons.sentences = ["You put it on your videos like this one: a\nb.mp4.", "Popular on the platform [b]."]
    assert describe(reasons).split("\n") == ["You put it on your videos like this one: a\\nb.mp4.",
                                             "Popular on the platform \\[b]."]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Three users post on two topics with the topics' hashtags and each a personal one; the
    captions (a text-only post's name) say whose post it is."""
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(len(TOPICS), 16))
    users, captions, hashtags, features, times = [], [], [], [], []
    for u, user in enumerate(USERS):
        for t, topic in enumerate(TOPICS):
            for k in range(POSTS_PER_TOPIC):
                users.append(user)
                captions.append(f"{user} post {t}-{k}")
                hashtags.append([topic, f"{user}daily"])
                features.append(centroids[t] + 0.3 * rng.normal(size=16))
                times.append(NOW - (1 + u + 10 * k) * DAY)
    posts = PostData(users, captions, hashtags, {"textual": np.asarray(features, np.float32)},
                     {"textual": np.ones(len(users), bool)}, np.asarray(times))
    root = tmp_path_factory.mktemp("explain")
    store = write_text_store(root / "features.h5", posts, posts.times)
    train_from_store(store, root / "model.pt", ModelConfig(NetworkConfig(dim=8)),
                     TrainConfig(epochs=2, batch_size=16, device="cpu"))
    checkpoint = load_checkpoint(root / "model.pt")
    scorer = checkpoint.scorer()
    return checkpoint, scorer, Explainer(checkpoint, load_store(store), scorer.model), posts, centroids


def explain_for(trained, user: str, topic: int) -> list[tuple[str, Because]]:
    """Every hashtag explained to `user` for a new text post on `topic` (as `Recommender._explain` does)."""
    checkpoint, scorer, explainer, _, centroids = trained
    text = np.zeros((1, TEXTUAL_DIM), np.float32)  # as the store pads it
    text[0, :centroids.shape[1]] = centroids[topic]
    post = PostData([user], ["new post"], [[]], {"textual": text}, {"textual": np.ones(1, bool)}, np.array([NOW]))
    item = scorer.model.network.encode_items({"textual": torch.as_tensor(text)},
                                             {"textual": torch.ones(1, dtype=torch.bool)})[0]
    position = checkpoint.user_position(user)
    [parts] = scorer.parts(np.array([position]), post)
    columns = list(range(len(checkpoint.hashtags)))
    values = {name: part[0, columns].cpu().numpy() for name, part in parts.items()}
    reasons = explainer.explain(position, item, values, columns, NOW)
    return list(zip(checkpoint.hashtags, reasons))


def test_a_video_is_named_by_each_users_own_post():
    """The same file posted by two users under two names: each sees only the name they gave it."""
    posts = PostData(["ana", "ben", "ben"], ["same", "same", "other"], [["beach"], ["beach"], ["city"]],
                     {"textual": np.zeros((3, 4), np.float32)}, {"textual": np.ones(3, bool)})
    graph = build_graph(posts)
    table = SimpleNamespace(posts=SimpleNamespace(path=["my_beach.mp4", "bens_copy.mp4", ""],
                                                  caption=["", "", "ben's words"]))
    names = Explainer._own_names(table, np.arange(3), posts.users, posts.items, graph)
    ana, ben, same = graph.user_index["ana"], graph.user_index["ben"], graph.item_index["same"]
    assert names == {ana * graph.n_items + same: "my_beach.mp4", ben * graph.n_items + same: "bens_copy.mp4",
                     ben * graph.n_items + graph.item_index["other"]: "text: ben's words"}


def test_a_users_reasons_never_name_another_users_post(trained):
    *_, posts, _ = trained
    others = [caption for caption, user in zip(posts.items, posts.users) if user != "ana"]
    for topic in range(len(TOPICS)):
        for hashtag, reasons in explain_for(trained, "ana", topic):
            answer = json.dumps(reasons.to_dict(), allow_nan=False)  # strict JSON: no NaN for an unknown time
            assert not [caption for caption in others if caption in answer], hashtag
            assert all(v.video.startswith("text: ana ") for v in reasons.own_videos + reasons.similar_videos)
            assert all(v.weight > 0 for v in reasons.similar_videos)
            weights = [v.weight for v in reasons.similar_videos]
            assert weights == sorted(weights, reverse=True)
            assert reasons.sentences and 0 <= reasons.nearest_with_it <= reasons.nearest


def test_the_numbers_count_the_users_posts_and_their_latest_time(trained):
    checkpoint, _, _, posts, _ = trained
    reasons = dict(explain_for(trained, "ana", 0))["beach"]
    used = [row for row in checkpoint.split.train if posts.users[row] == "ana" and "beach" in posts.hashtags[row]]
    assert reasons.uses == len(used) > 0
    assert reasons.last_used == pytest.approx(max(posts.times[used]))
    assert sum(abs(part.share) for part in reasons.parts) == pytest.approx(1.0)
    assert {part.label for part in reasons.parts} <= set(PART_LABELS.values())


def test_an_unknown_user_gets_counts_not_videos(trained):
    for _, reasons in explain_for(trained, "zoe", 1):
        assert reasons.uses == 0 and reasons.last_used is None
        assert reasons.own_videos == [] and reasons.similar_videos == []
        assert not any(sentence.startswith("You ") for sentence in reasons.sentences)
