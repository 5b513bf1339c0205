import numpy as np
import pytest
import torch

from phr_cli.data.cases import build_cases
from phr_cli.data.graph import PostData, build_graph, split_posts
from phr_cli.errors import DataError
from phr_cli.evaluation.baselines import (
    CaptionWords,
    GlobalPopularity,
    ItemPopularity,
    PopularityMix,
    UserPopularity,
    tune_beta,
)
from phr_cli.evaluation.metrics import evaluate
from phr_cli.model.pitf import PITF, PITFConfig


def make_posts(rows: list[tuple[str, str, list[str]]], features: dict[str, np.ndarray] | None = None) -> PostData:
    features = features or {}
    return PostData(
        users=[u for u, _, _ in rows], items=[i for _, i, _ in rows], hashtags=[t for _, _, t in rows],
        features=features, masks={m: np.ones(len(rows), dtype=bool) for m in features},
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread")


TRAIN = make_posts([
    ("ann", "v1", ["cat", "dog"]),
    ("ann", "v2", ["cat"]),
    ("bob", "v1", ["sun", "dog"]),
    ("bob", "v3", ["sun", "dog"]),
    ("cid", "v4", ["dog", "sea"]),
])
# global counts: dog 4, cat 2, sun 2, sea 1


def ranking(scorer, user: str, item: str) -> list[str]:
    graph = build_graph(TRAIN)
    users = np.array([graph.user_index.get(user, -1)])
    scores = scorer.score(users, make_posts([(user, item, [])]))[0]
    return [graph.hashtags[j] for j in np.argsort(-scores, kind="stable")]


def test_global_popularity() -> None:
    assert ranking(GlobalPopularity(build_graph(TRAIN)), "ann", "v9")[0] == "dog"


def test_user_popularity_backs_off_to_global() -> None:
    scorer = UserPopularity(build_graph(TRAIN))
    assert ranking(scorer, "ann", "v9") == ["cat", "dog", "sun", "sea"]
    assert ranking(scorer, "bob", "v9")[:2] == ["dog", "sun"]  # tie of 2 broken by global counts
    assert ranking(scorer, "new", "v9")[:1] == ["dog"]  # cold user: global


def test_item_popularity_backs_off_to_global() -> None:
    scorer = ItemPopularity(build_graph(TRAIN))
    assert ranking(scorer, "cid", "v1") == ["dog", "cat", "sun", "sea"]
    assert ranking(scorer, "ann", "v4")[:2] == ["dog", "sea"]
    assert ranking(scorer, "ann", "new-video")[0] == "dog"  # new item: global


def test_popularity_mix_normalises_each_side_by_its_maximum() -> None:
    graph = build_graph(TRAIN)
    assert ranking(PopularityMix(graph, beta=1.0), "ann", "v4") == ranking(UserPopularity(graph), "ann", "v4")
    assert ranking(PopularityMix(graph, beta=0.0), "ann", "v4") == ranking(ItemPopularity(graph), "ann", "v4")
    # ann: cat 2/2, dog 1/2; item v3: sun 1, dog 1. β = .5: dog .75, cat .5, sun .5 (global breaks the tie)
    assert ranking(PopularityMix(graph, beta=0.5), "ann", "v3") == ["dog", "cat", "sun", "sea"]
    with pytest.raises(ValueError):
        PopularityMix(graph, beta=1.5)


def planted_posts(seed: int, n_users: int = 40, n_items: int = 80, n_tags: int = 40,
                  posts_per_user: int = 16, user_weight: float = 0.5) -> tuple[PostData, np.ndarray]:
    """Each user has 3 favourite tags, each item 3 tags; a post takes each of its user's
    tags with probability user_weight and each of its item's with 1 − user_weight.
    Items carry a noisy indicator of their tags as "textual" features."""
    rng = np.random.default_rng(seed)
    user_tags = [rng.choice(n_tags, 3, replace=False) for _ in range(n_users)]
    item_tags = [rng.choice(n_tags, 3, replace=False) for _ in range(n_items)]
    item_features = rng.normal(0, 0.3, (n_items, n_tags)).astype(np.float32)
    for i, tags in enumerate(item_tags):
        item_features[i, tags] += 1.0
    rows, item_of_post = [], []
    for u in range(n_users):
        for i in rng.choice(n_items, posts_per_user, replace=False):
            chosen = [t for t in user_tags[u] if rng.random() < user_weight]
            chosen += [t for t in item_tags[i] if rng.random() < 1 - user_weight]
            rows.append((f"u{u}", f"i{i}", [f"t{t}" for t in dict.fromkeys(chosen)] or [f"t{item_tags[i][0]}"]))
            item_of_post.append(i)
    return make_posts(rows, {"textual": item_features[item_of_post]}), np.asarray(item_of_post)


@pytest.mark.parametrize(("user_weight", "expected"), [(0.9, 1.0), (0.1, 0.0)])
def test_tune_beta_picks_the_informative_side(user_weight: float, expected: float) -> None:
    posts, _ = planted_posts(seed=1, user_weight=user_weight, posts_per_user=30)
    split = split_posts(posts, seed=0)
    graph = build_graph(posts.subset(split.train))
    beta, values = tune_beta(graph, posts, build_cases(posts, split.validation, graph),
                             grid=(0.0, 0.5, 1.0), metric="R@5")
    assert set(values) == {0.0, 0.5, 1.0}
    assert values[expected] > values[1.0 - expected]
    assert abs(beta - expected) <= 0.5


def full_recall(scorer, posts: PostData, rows: np.ndarray, graph) -> float:
    return evaluate(scorer, posts, build_cases(posts, rows, graph), protocol="full", ks=(5,))["full"]["all"]["R@5"]


def test_pitf_learns_planted_user_and_item_tags() -> None:
    posts, _ = planted_posts(seed=2)
    split = split_posts(posts, seed=0)
    graph = build_graph(posts.subset(split.train))
    model = PITF(graph, PITFConfig(dim=16, epochs=40, batch_size=256, lr=0.02, seed=0))
    losses = model.fit()
    assert losses[-1] < losses[0]
    pitf, popular = (full_recall(s, posts, split.test, graph) for s in (model, GlobalPopularity(graph)))
    assert pitf > popular + 0.2


def test_pitf_stops_when_validation_stops_rising_and_keeps_the_best_factors() -> None:
    posts, _ = planted_posts(seed=2)
    graph = build_graph(posts.subset(split_posts(posts, seed=0).train))
    model = PITF(graph, PITFConfig(dim=4, epochs=50, check_every=1, patience=2, seed=0))
    scores, seen = iter([0.1, 0.3, 0.2, 0.25, 0.4]), []

    def validation(fitted: PITF) -> float:
        seen.append([p.detach().clone() for p in fitted.parameters()])
        return next(scores)

    losses = model.fit(validation=validation)
    # Epoch 2 is the best; epochs 3 and 4 are two checks without a better one: stop there.
    assert len(losses) == 4 and model.best_epoch == 2
    assert model.checks == [(1, 0.1), (2, 0.3), (3, 0.2), (4, 0.25)]
    assert all(torch.equal(p, kept) for p, kept in zip(model.parameters(), seen[1]))
    assert not torch.equal(model.user_factors, seen[3][0])


def test_pitf_maps_the_content_of_new_items() -> None:
    posts, _ = planted_posts(seed=3, user_weight=0.3, n_tags=16)  # few features: 64 training items suffice
    split = split_posts(posts, seed=0, by="item")  # test items are all unseen in training
    graph = build_graph(posts.subset(split.train))
    assert not set(posts.items[r] for r in split.test) & set(graph.items)
    model = PITF(graph, PITFConfig(dim=16, epochs=40, batch_size=256, lr=0.02, seed=0))
    model.fit()
    pitf, user_only = (full_recall(s, posts, split.test, graph) for s in (model, UserPopularity(graph)))
    assert pitf > user_only + 0.2


def test_pitf_content_map_leaves_out_modalities_no_training_item_has() -> None:
    rng = np.random.default_rng(0)
    train = make_posts([(u, i, t) for u, i, t in zip(TRAIN.users, TRAIN.items, TRAIN.hashtags)],
                       {"visual": rng.normal(size=(5, 6)), "textual": rng.normal(size=(5, 3))})
    train.masks["visual"][:] = False
    graph = build_graph(train)
    model = PITF(graph, PITFConfig(dim=4, epochs=2, seed=0))
    assert model.content.modalities == ["textual"] and model.content_weight.shape == (3 + 1, 4)
    assert PITF(graph, PITFConfig(dim=4, modalities="all")).content_weight.shape == (6 + 1 + 3 + 1, 4)
    model.fit()
    new_item = make_posts([("ann", "v9", [])], {"visual": rng.normal(size=(1, 6)), "textual": rng.normal(size=(1, 3))})
    other_video = make_posts([("ann", "v9", [])], {"visual": rng.normal(size=(1, 6)),
                                                   "textual": new_item.features["textual"]})
    users = np.array([graph.user_index["ann"]])
    np.testing.assert_array_equal(model.score(users, new_item), model.score(users, other_video))


def test_caption_words_suggests_the_hashtags_whose_words_the_caption_holds() -> None:
    hashtags = ["hip_hop", "hiphopdance", "rock", "jazz", "dance", "dance_battle_royale"]
    scorer = CaptionWords(hashtags, np.array([5.0, 0.0, 10.0, 3.0, 1.0, 0.0]))
    posts = make_posts([("ann", "v1", [])])
    posts.captions = ["Hip-hop DANCE battle #rock"]  # a hashtag in the caption is a label, not a word of it
    [scores] = scorer.score(np.array([0]), posts)
    ranking = [hashtags[c] for c in np.argsort(-scores, kind="stable")]
    # All words found: ties ordered by popularity (hiphopdance, unseen, last of them); then 2 of 3
    # words; then popularity alone.
    assert ranking == ["hip_hop", "dance", "hiphopdance", "dance_battle_royale", "rock", "jazz"]
    assert scores[5] == pytest.approx(2 / 3)


def test_caption_words_needs_captions() -> None:
    with pytest.raises(DataError, match="captions"):
        CaptionWords(["rock"], np.ones(1)).score(np.array([0]), make_posts([("ann", "v1", [])]))
