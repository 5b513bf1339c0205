"""GCN-PHR's equations on a tiny random graph, against slow loop references (loops allowed here)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from phr_cli.data.graph import PostData, build_graph
from phr_cli.errors import ConfigError
from phr_cli.model import network as model_module
from phr_cli.model.config import ModelConfig, NetworkConfig
from phr_cli.model.network import GCNPHR, bpr_loss, grouped_softmax
from phr_cli.model.phr import PHRModel
from phr_cli.training.train import BatchScores

WIDTHS = {"visual": 7, "acoustic": 3, "textual": 5}
DIM = 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_posts(seed: int, n_posts: int, n_users: int, n_items: int, n_hashtags: int) -> PostData:
    """Posts of random users, items and 1-3 hashtags, with a quarter of modalities missing."""
    rng = np.random.default_rng(seed)
    return PostData(
        users=[f"u{rng.integers(n_users)}" for _ in range(n_posts)],
        items=[f"v{rng.integers(n_items)}" for _ in range(n_posts)],
        hashtags=[[f"h{t}" for t in rng.choice(n_hashtags, size=rng.integers(1, 4), replace=False)]
                  for _ in range(n_posts)],
        features={m: rng.normal(size=(n_posts, w)).astype(np.float32) for m, w in WIDTHS.items()},
        masks={m: rng.random(n_posts) > 0.25 for m in WIDTHS},
    )


def tiny_posts(seed: int = 0, n_posts: int = 60) -> PostData:
    """Few users, hashtags and items so that groups V_{i,j} hold several items."""
    return random_posts(seed, n_posts, n_users=5, n_items=25, n_hashtags=6)


def paper(**changes) -> NetworkConfig:
    """The paper's network (no self-loop) with Eq. 6 as printed (summed video messages)."""
    return NetworkConfig(**{"dim": DIM, "video_messages": "sum", "residual": False, **changes})


def build(config: NetworkConfig | None = None, seed: int = 0):
    """A tiny graph and the paper's network; tests compare with Eq. 6 as printed."""
    graph = build_graph(tiny_posts(seed))
    torch.manual_seed(seed)
    return graph, GCNPHR.from_graph(config or paper(), graph)


def graph_item_vectors(graph, model) -> torch.Tensor:
    """v_k of every graph item through the public encoder (independent of the graph tensors)."""
    return model.encode_items(
        {m: torch.as_tensor(f) for m, f in graph.item_features.items()},
        {m: torch.as_tensor(k) for m, k in graph.item_masks.items()},
    )


def reference_layer(graph, model, layer, users, hashtags):
    """Eq. 1-6 and their hashtag-side mirror, one user / hashtag / group at a time."""
    phi = lambda x: F.leaky_relu(x, model.config.negative_slope)  # noqa: E731
    vectors = graph_item_vectors(graph, model)
    keys_u, values_u, keys_h, values_h = (vectors @ layer.item_projection.weight.T).split(DIM, dim=1)
    triples = [tuple(int(x) for x in t) for t in graph.triples]
    groups: dict[tuple[int, int], list[int]] = {}
    for t, (i, j, _) in enumerate(triples):
        groups.setdefault((i, j), []).append(t)

    def attention(module, guides, keys, guide_of):
        alpha = torch.zeros(len(triples))
        for members in groups.values():
            if module is None:
                scores = torch.zeros(len(members))
            else:
                scores = torch.stack([
                    module.score(phi(
                        module.key(keys[triples[t][2]])
                        + (module.guide(guides[guide_of(triples[t])]) if module.guide is not None else 0)
                    )).squeeze()
                    for t in members
                ])
            weights = torch.exp(scores - scores.max())
            alpha[members] = weights / weights.sum()
        return alpha

    alpha_u = attention(layer.user_side_attention, hashtags, keys_u, lambda t: t[1])
    alpha_h = attention(layer.hashtag_side_attention, users, keys_h, lambda t: t[0])
    user_from_items = torch.zeros(graph.n_users, DIM)
    hashtag_from_items = torch.zeros(graph.n_hashtags, DIM)
    user_from_hashtags = torch.zeros(graph.n_users, DIM)
    hashtag_from_users = torch.zeros(graph.n_hashtags, DIM)
    for t, (i, j, k) in enumerate(triples):
        user_from_items[i] += alpha_u[t] * values_u[k]
        hashtag_from_items[j] += alpha_h[t] * values_h[k]
    for i in range(graph.n_users):
        used = sorted({j for (u, j) in groups if u == i})
        if used:
            user_from_hashtags[i] = torch.stack([layer.hashtag_to_user(hashtags[j]) for j in used]).mean(0)
    for j in range(graph.n_hashtags):
        by = sorted({i for (i, h) in groups if h == j})
        hashtag_from_users[j] = torch.stack([layer.user_to_hashtag(users[i]) for i in by]).mean(0)
    return {
        "user_side_attention": alpha_u,
        "hashtag_side_attention": alpha_h,
        "user_from_items": phi(user_from_items),
        "hashtag_from_items": phi(hashtag_from_items),
        "user_from_hashtags": phi(user_from_hashtags),
        "hashtag_from_users": phi(hashtag_from_users),
        "groups": groups,
    }


def test_shapes_of_each_equation():
    graph, model = build(paper(layers=2))
    n_triples = len(graph.triples)
    for parts in model.layer_messages():
        assert parts.user_from_hashtags.shape == (graph.n_users, DIM)
        assert parts.user_from_items.shape == (graph.n_users, DIM)
        assert parts.hashtag_from_users.shape == (graph.n_hashtags, DIM)
        assert parts.hashtag_from_items.shape == (graph.n_hashtags, DIM)
        assert parts.user_side_attention.shape == (n_triples,)
        assert parts.hashtag_side_attention.shape == (n_triples,)
    users, hashtags = model.propagate()
    assert users.shape == (graph.n_users, DIM) and hashtags.shape == (graph.n_hashtags, DIM)
    items = graph_item_vectors(graph, model)
    assert items.shape == (graph.n_items, sum(WIDTHS.values()))
    assert model.score_all(users[:4], items[:4], hashtags).shape == (4, graph.n_hashtags)
    assert model.score_triples(users[:4], items[:4], hashtags[torch.zeros(4, 3, dtype=torch.long)]).shape == (4, 3)


@pytest.mark.parametrize("variant", ["full", "no_attention", "no_user_guidance", "no_hashtag_guidance"])
def test_messages_match_loop_reference(variant):
    graph, model = build(paper(variant=variant))
    layer = model.layers[0]
    parts = model.layer_messages()[0]
    with torch.no_grad():
        expected = reference_layer(graph, model, layer, model.user_embedding.weight, model.hashtag_embedding.weight)
    for name in ("user_side_attention", "hashtag_side_attention", "user_from_items", "hashtag_from_items",
                 "user_from_hashtags", "hashtag_from_users"):
        torch.testing.assert_close(getattr(parts, name).detach(), expected[name], atol=1e-5, rtol=1e-5, msg=name)
    for alpha in (parts.user_side_attention, parts.hashtag_side_attention):
        for members in expected["groups"].values():
            assert float(alpha[members].sum().detach()) == pytest.approx(1.0, abs=1e-6)
    assert any(len(m) > 1 for m in expected["groups"].values()), "the graph must have real groups"


def test_grouped_softmax_against_loop():
    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(50, generator=generator) * 30  # large values: the max shift matters
    groups = torch.randint(0, 7, (50,), generator=generator)
    result = grouped_softmax(scores, groups, 7)
    for g in range(7):
        members = (groups == g).nonzero().flatten()
        if len(members):
            torch.testing.assert_close(result[members], torch.softmax(scores[members], 0))


def test_grouped_softmax_on_sorted_groups_equals_the_scatter_form():
    generator = torch.Generator().manual_seed(2)
    groups = torch.randint(0, 7, (60,), generator=generator).sort().values
    scores = (torch.randn(60, generator=generator) * 30).requires_grad_()
    sizes = torch.bincount(groups, minlength=7)
    weights = torch.randn(60, generator=generator)
    segment = grouped_softmax(scores, groups, 7, sizes)
    (segment_grad,) = torch.autograd.grad((segment * weights).sum(), scores)
    scatter = grouped_softmax(scores, groups, 7)
    (scatter_grad,) = torch.autograd.grad((scatter * weights).sum(), scores)
    torch.testing.assert_close(segment, scatter)
    torch.testing.assert_close(segment_grad, scatter_grad)


def test_no_attention_weighs_each_group_uniformly():
    graph, model = build(paper(variant="no_attention"))
    parts = model.layer_messages()[0]
    _, group, sizes = np.unique(graph.triples[:, :2], axis=0, return_inverse=True, return_counts=True)
    uniform = torch.as_tensor(1.0 / sizes[group.reshape(-1)], dtype=torch.float32)
    torch.testing.assert_close(parts.user_side_attention, uniform)
    torch.testing.assert_close(parts.hashtag_side_attention, uniform)
    assert model.layers[0].user_side_attention is None


def attention_after_perturbing(config: NetworkConfig, which: str):
    """Attention weights before and after changing every user or hashtag embedding."""
    _, model = build(config)
    before = model.layer_messages()[0]
    with torch.no_grad():
        getattr(model, f"{which}_embedding").weight.add_(torch.randn_like(getattr(model, f"{which}_embedding").weight))
    return before, model.layer_messages()[0]


def test_hashtag_guidance_steers_the_user_side_attention_only_when_enabled():
    before, after = attention_after_perturbing(paper(), "hashtag")
    assert not torch.allclose(before.user_side_attention, after.user_side_attention)
    config = paper(variant="no_hashtag_guidance")
    before, after = attention_after_perturbing(config, "hashtag")
    torch.testing.assert_close(before.user_side_attention, after.user_side_attention)


def test_user_guidance_steers_the_hashtag_side_attention_only_when_enabled():
    before, after = attention_after_perturbing(paper(), "user")
    assert not torch.allclose(before.hashtag_side_attention, after.hashtag_side_attention)
    config = paper(variant="no_user_guidance")
    before, after = attention_after_perturbing(config, "user")
    torch.testing.assert_close(before.hashtag_side_attention, after.hashtag_side_attention)
    torch.testing.assert_close(before.user_side_attention, after.user_side_attention)  # hashtags guide that one


def test_missing_modality_uses_the_learned_vector():
    _, model = build()
    features = {m: torch.randn(4, w) for m, w in WIDTHS.items()}
    features["acoustic"][1:3] = float("nan")  # whatever a missing row holds, it is never read
    masks = {m: torch.ones(4, dtype=torch.bool) for m in WIDTHS}
    masks["acoustic"][1:3] = False
    vectors = model.encode_items(features, masks)
    acoustic = slice(WIDTHS["visual"], WIDTHS["visual"] + WIDTHS["acoustic"])
    torch.testing.assert_close(vectors[1, acoustic], model.item_encoder.missing["acoustic"].detach())
    torch.testing.assert_close(vectors[2, acoustic], model.item_encoder.missing["acoustic"].detach())
    assert torch.isfinite(vectors).all()
    assert not torch.allclose(vectors[1, acoustic], torch.zeros(WIDTHS["acoustic"]))
    # standardised with training statistics where present
    expected = (features["acoustic"][0] - model.item_encoder.mean_acoustic) / model.item_encoder.std_acoustic
    torch.testing.assert_close(vectors[0, acoustic], expected)
    # the vector is learned: gradients reach it, through propagation as well as encoding
    users, hashtags = model.propagate()
    (users.sum() + hashtags.sum()).backward()
    assert model.item_encoder.missing["acoustic"].grad.abs().sum() > 0


def test_graph_projection_equals_projecting_encoded_items():
    graph, model = build()
    weight = model.layers[0].item_projection.weight
    with torch.no_grad():
        torch.testing.assert_close(
            model._project_graph_items(weight), graph_item_vectors(graph, model) @ weight.T, atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            model.graph_item_vectors(torch.arange(graph.n_items)), graph_item_vectors(graph, model)
        )


def test_normalisation_is_fitted_on_present_training_items_and_saved():
    graph, model = build()
    present = graph.item_features["visual"][graph.item_masks["visual"]]
    torch.testing.assert_close(model.item_encoder.mean_visual, torch.as_tensor(present.mean(0)))
    torch.testing.assert_close(model.item_encoder.std_visual, torch.as_tensor(present.std(0)))
    state = model.state_dict()
    assert "item_encoder.mean_visual" in state and "item_encoder.missing.visual" in state
    assert not any(name.startswith("graph.") for name in state), "the graph stays out of checkpoints"


def test_content_only_ignores_graph_messages():
    _, model = build(paper(propagate=False))
    assert len(model.layers) == 0
    users, hashtags = model.propagate()
    assert users is model.user_embedding.weight and hashtags is model.hashtag_embedding.weight
    # another graph over the same vocabularies changes nothing
    other = build_graph(tiny_posts(seed=0))
    other.triples = other.triples[: len(other.triples) // 2]
    model.attach_graph(other)
    torch.testing.assert_close(model.propagate()[0], users)


def test_layers_feed_each_other():
    _, one = build(paper(layers=1))
    _, two = build(paper(layers=2))
    assert len(two.layers) == 2
    with torch.no_grad():
        two.layers[0].load_state_dict(one.layers[0].state_dict())
        two.user_embedding.weight.copy_(one.user_embedding.weight)
        two.hashtag_embedding.weight.copy_(one.hashtag_embedding.weight)
        first_users, first_hashtags = one.propagate()
        expected = two._run_layer(two.layers[1], first_users, first_hashtags, two._full_edges())
        torch.testing.assert_close(two.propagate()[0], expected[0])


def test_sum_fusion_is_linear_and_concat_fusion_is_not():
    _, model = build(paper(fusion="sum"))
    fusion = model.layers[0].user_fusion
    a, b = torch.randn(3, DIM), torch.randn(3, DIM)
    torch.testing.assert_close(fusion(2 * a, 2 * b), 2 * fusion(a, b))
    _, model = build(paper(fusion="concat"))
    assert model.layers[0].user_fusion(-a.abs() * 100, b).shape == (3, DIM)


def test_score_all_equals_score_triples_whatever_the_chunk(monkeypatch):
    graph, model = build()
    with torch.no_grad():
        users, hashtags = model.propagate()
        items = graph_item_vectors(graph, model)[:5]
        rows = users[:5]
        every = torch.arange(graph.n_hashtags).expand(5, -1)
        expected = model.score_triples(rows, items, hashtags[every])
        torch.testing.assert_close(model.score_all(rows, items, hashtags), expected)
        # one row at a time; two rows at a time, the last chunk shorter than the buffer
        for rows_per_chunk in (1, 2):
            budget = rows_per_chunk * graph.n_hashtags * DIM
            monkeypatch.setattr(model_module, "SCORE_CHUNK_ELEMENTS", {"cpu": budget, "cuda": budget})
            torch.testing.assert_close(model.score_all(rows, items, hashtags), expected)


def test_unknown_user_gets_the_mean_user():
    reps = torch.randn(4, DIM)
    rows = GCNPHR.user_rows(reps, torch.tensor([2, -1, 0]))
    torch.testing.assert_close(rows[0], reps[2])
    torch.testing.assert_close(rows[1], reps.mean(0))
    torch.testing.assert_close(rows[2], reps[0])


def test_saved_representations_serve_a_model_without_graph():
    graph, trained = build()
    with torch.no_grad():
        users, hashtags = trained.propagate()
    loaded = GCNPHR(trained.config, graph.n_users, graph.n_hashtags, WIDTHS)
    loaded.load_state_dict(trained.state_dict())
    with pytest.raises(RuntimeError):
        loaded.propagate()
    loaded.save_representations(users, hashtags)
    torch.testing.assert_close(loaded.propagate()[0], users)


def test_bpr_loss_and_embedding_penalty():
    positive, negative = torch.tensor([2.0, 0.0]), torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    expected = -torch.log(torch.sigmoid(torch.tensor([2.0, 1.0, 0.0, 0.0]))).mean()
    torch.testing.assert_close(bpr_loss(positive, negative), expected)
    _, model = build()
    users, hashtags = torch.tensor([0, 1]), torch.tensor([[0, 2], [1, 2]])
    expected = (
        model.user_embedding.weight[[0, 1]].pow(2).sum() + model.hashtag_embedding.weight[[0, 2, 1, 2]].pow(2).sum()
    ) / 2
    torch.testing.assert_close(model.embedding_l2(users, hashtags), expected)


def test_bad_configuration_is_refused():
    with pytest.raises(ConfigError):
        NetworkConfig(fusion="max")
    with pytest.raises(ConfigError):
        NetworkConfig(variant="no_graph")


def test_mean_video_messages_divide_the_sum_by_each_nodes_group_count():
    graph, summed = build(paper())
    _, averaged = build(paper(video_messages="mean"))
    averaged.load_state_dict(summed.state_dict())
    leaky = lambda x: F.leaky_relu(x, summed.config.negative_slope)  # noqa: E731
    inverse = lambda x: torch.where(x >= 0, x, x / summed.config.negative_slope)  # noqa: E731
    pairs = graph.edges((0, 1))
    user_groups = torch.as_tensor(np.bincount(pairs[:, 0], minlength=graph.n_users), dtype=torch.float32)
    hashtag_groups = torch.as_tensor(np.bincount(pairs[:, 1], minlength=graph.n_hashtags), dtype=torch.float32)
    with torch.no_grad():
        total, mean = summed.layer_messages()[0], averaged.layer_messages()[0]
        torch.testing.assert_close(inverse(mean.user_from_items),
                                   inverse(total.user_from_items) / user_groups.clamp(min=1)[:, None])
        torch.testing.assert_close(inverse(mean.hashtag_from_items),
                                   inverse(total.hashtag_from_items) / hashtag_groups.clamp(min=1)[:, None])
        torch.testing.assert_close(leaky(inverse(mean.user_from_items)), mean.user_from_items)


def test_residual_layers_add_each_nodes_own_embedding():
    _, plain = build(paper())
    _, residual = build(paper(residual=True))
    residual.load_state_dict(plain.state_dict())
    with torch.no_grad():
        users, hashtags = plain.propagate()
        torch.testing.assert_close(residual.propagate()[0], users + plain.user_embedding.weight)
        torch.testing.assert_close(residual.propagate()[1], hashtags + plain.hashtag_embedding.weight)


def sparse_posts(seed: int = 0, n_posts: int = 240) -> PostData:
    """More users, hashtags and items than `tiny_posts`, so that a batch's receptive field
    leaves part of the graph out."""
    return random_posts(seed, n_posts, n_users=30, n_items=150, n_hashtags=40)


@pytest.mark.parametrize("config", [
    ModelConfig(NetworkConfig(dim=DIM)),
    ModelConfig.paper(NetworkConfig(dim=DIM, video_messages="sum", fusion="sum", variant="no_user_guidance")),
    ModelConfig(NetworkConfig(dim=DIM, variant="no_attention", residual=True)),
    ModelConfig(NetworkConfig(dim=DIM, layers=2, variant="no_hashtag_guidance")),
    ModelConfig(NetworkConfig(dim=DIM, layers=2, residual=True)),
    ModelConfig(NetworkConfig(dim=DIM, propagate=False)),
], ids=["default", "sum-no-user-guidance", "no-attention-residual", "2-layers", "2-layers-residual", "content-only"])
@pytest.mark.parametrize("batch_size", [6, 200])  # a small receptive field, and one reading most items
@pytest.mark.parametrize("aggregation", ["sparse", "index_add"])
def test_batch_step_equals_the_full_graph_step(config, batch_size, aggregation):
    """The training step's fast path (receptive field only, W^v v_k from the stored features)
    gives the reference's representations, scores, loss and gradients."""
    graph = build_graph(sparse_posts())
    torch.manual_seed(0)
    network = dataclasses.replace(config.network, aggregation=aggregation)
    model = PHRModel.from_graph(dataclasses.replace(config, network=network), graph)
    rows = np.random.default_rng(1).choice(len(graph.triples), batch_size, replace=False)
    batch = torch.as_tensor(graph.triples[rows])
    users, items = batch[:, 0], batch[:, 2]
    hashtags = torch.cat([batch[:, 1:2], torch.randint(graph.n_hashtags, (len(batch), 2))], dim=1)
    parameters = [p for p in model.parameters() if p.requires_grad]

    if model.evidence is not None:
        model.evidence.prepare_training()

    def step(fast: bool):
        if fast:
            user_rows, hashtag_rows = model.network.propagate_for(users, hashtags)
        else:
            user_reps, hashtag_reps = model.network.propagate()
            user_rows, hashtag_rows = user_reps[users], hashtag_reps[hashtags]
        torch.manual_seed(2)  # the same item-ID dropout draws for both
        scores = BatchScores(model, "batch" if fast else "full", item_id_dropout=0.5)(users, items, hashtags)
        loss = bpr_loss(scores[:, 0], scores[:, 1:]) + 1e-2 * model.network.embedding_l2(users, hashtags)
        gradients = torch.autograd.grad(loss, parameters, allow_unused=True)
        return [user_rows, hashtag_rows, scores, loss], gradients

    (reference, reference_gradients), (fast, fast_gradients) = step(fast=False), step(fast=True)
    for name, expected, actual in zip(("user rows", "hashtag rows", "scores", "loss"), reference, fast):
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5, msg=name)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    for name, expected, actual in zip(names, reference_gradients, fast_gradients):
        if expected is None:
            assert actual is None or not actual.any(), name
        else:
            torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5, msg=name)
    if network.propagate and network.layers == 1:  # the fast path left part of the graph out, or projected all
        assert model.network.graph is not None
        field = model.network.graph.edges("user", torch.unique(users))
        assert (field.items is None) == (batch_size == 200)
        assert len(field.triple_target) < len(graph.triples) or batch_size == 200


@pytest.mark.parametrize("config", [
    NetworkConfig(dim=DIM),
    NetworkConfig(dim=DIM, video_messages="sum", fusion="sum", variant="no_user_guidance"),
    NetworkConfig(dim=DIM, variant="no_attention", residual=True),
    NetworkConfig(dim=DIM, layers=2, variant="no_hashtag_guidance", dropout=0.3),
], ids=["default", "sum-no-user-guidance", "no-attention-residual", "2-layers-dropout"])
def test_sparse_aggregation_equals_the_index_add_reference(config):
    """Sparse products over the precomputed structure give the gather + index_add layer's
    representations, attention and gradients (1e-5; in float64, so that float32's summation
    order, which differs between the two, does not decide)."""
    graph = build_graph(sparse_posts())

    def run(aggregation: str):
        torch.manual_seed(0)
        model = GCNPHR.from_graph(dataclasses.replace(config, aggregation=aggregation), graph).double()
        torch.manual_seed(1)  # the same dropout masks
        users, hashtags = model.propagate()
        weights = torch.randn(users.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        loss = (users * weights).sum() + hashtags.pow(2).sum()
        gradients = dict(zip([n for n, _ in model.named_parameters()],
                             torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)))
        model.eval()
        attention = [(m.user_side_attention, m.hashtag_side_attention) for m in model.layer_messages()]
        return users, hashtags, gradients, attention

    reference, sparse = run("index_add"), run("sparse")
    torch.testing.assert_close(sparse[0], reference[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sparse[1], reference[1], atol=1e-5, rtol=1e-5)
    assert sparse[2].keys() == reference[2].keys()
    for name, expected in reference[2].items():
        actual = sparse[2][name]
        if expected is None:
            assert actual is None or not actual.any(), name
        else:
            torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5, msg=name)
    for (user_alpha, hashtag_alpha), (ref_user_alpha, ref_hashtag_alpha) in zip(sparse[3], reference[3]):
        torch.testing.assert_close(user_alpha, ref_user_alpha, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(hashtag_alpha, ref_hashtag_alpha, atol=1e-5, rtol=1e-5)


def test_modalities_no_training_item_has_get_no_parameters():
    posts = tiny_posts()
    posts.masks["visual"][:] = False
    posts.masks["acoustic"][:] = False
    graph = build_graph(posts)
    torch.manual_seed(0)
    model = PHRModel.from_graph(ModelConfig(NetworkConfig(dim=DIM)), graph)
    assert model.network.item_encoder.widths == {"textual": WIDTHS["textual"]}
    assert model.network.layers[0].item_projection.in_features == WIDTHS["textual"]
    assert not any("visual" in name or "acoustic" in name for name in model.state_dict())
    every = PHRModel.from_graph(ModelConfig(NetworkConfig(dim=DIM, modalities="all")), graph)
    assert every.network.item_encoder.widths == WIDTHS
    # a new clip with a video the training data never had: its visual and acoustic features are ignored
    clip = {m: torch.randn(1, w) for m, w in WIDTHS.items()}
    with_video = model.network.encode_items(clip, {m: torch.ones(1, dtype=torch.bool) for m in WIDTHS})
    other_video = model.network.encode_items({**clip, "visual": torch.randn(1, WIDTHS["visual"])},
                                     {m: torch.ones(1, dtype=torch.bool) for m in WIDTHS})
    torch.testing.assert_close(with_video, other_video)
    assert with_video.shape == (1, WIDTHS["textual"])
