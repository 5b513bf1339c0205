"""PITF's factors as the default model's score part: scored as the fitted PITF scores, reused by evaluate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_train import planted_posts

from phr_cli.data.dataset import SplitPosts
from phr_cli.data.graph import build_graph, split_posts
from phr_cli.model.config import ModelConfig, NetworkConfig
from phr_cli.model.factors import FACTORS, TagFactors
from phr_cli.model.pitf import PITF, PITFConfig
from phr_cli.training.checkpoint import load_checkpoint
from phr_cli.training.comparison import compare
from phr_cli.training.config import TrainConfig
from phr_cli.training.train import FITTING_FACTORS, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_factor_part_scores_every_hashtag_as_the_fitted_pitf():
    """Seen items by their factor, new ones (and missing modalities) through the content map,
    cold users by the item term alone."""
    posts = planted_posts(n_users=12, posts_per_user=8)
    split = split_posts(posts, seed=0)
    graph = build_graph(posts.subset(split.train))
    pitf = PITF(graph, PITFConfig(epochs=5, seed=0))
    pitf.fit()
    widths = {m: graph.item_features[m].shape[1] for m in pitf.content.modalities}
    factors = TagFactors(graph.n_users, graph.n_items, graph.n_hashtags, widths)
    factors.load_fitted(pitf)
    chosen = posts.subset(np.concatenate([split.train[:10], split.test[:10]]))
    users = np.array([graph.user_index.get(user, -1) for user in chosen.users])
    users[::4] = -1
    items = torch.tensor([graph.item_index.get(item, -1) for item in chosen.items])
    assert (items >= 0).any() and (items < 0).any()
    got = factors.score_rows(torch.as_tensor(users), items, {m: torch.as_tensor(f) for m, f in chosen.features.items()},
                             {m: torch.as_tensor(k) for m, k in chosen.masks.items()})
    torch.testing.assert_close(got, torch.as_tensor(pitf.score(users, chosen)), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="content map"):
        TagFactors(graph.n_users, graph.n_items, graph.n_hashtags, {"textual": 5}).load_fitted(pitf)


def test_training_fits_the_factors_and_evaluate_reuses_them_as_the_pitf_baseline(tmp_path):
    posts = planted_posts(n_users=12, posts_per_user=8)
    data = SplitPosts(posts, split_posts(posts, seed=0))
    config = TrainConfig(epochs=2, batch_size=64, patience=2, device="cpu")
    finishing: list[tuple[str, int, int | None]] = []
    train(data, ModelConfig(NetworkConfig(dim=8)), config, tmp_path / "model.pt",
          finishing=lambda *step: finishing.append(step))
    checkpoint = load_checkpoint(tmp_path / "model.pt")
    assert checkpoint.pitf_epoch is not None
    # The steps after the epochs are reported: PITF's fit epoch by epoch (up to where it
    # stopped on validation); too few validation cases for a calibration or trees, so no more.
    pitf_epochs = PITFConfig().epochs
    assert finishing[0] == (FITTING_FACTORS, 0, pitf_epochs)
    counted = [done for step, done, total in finishing[1:] if step == FITTING_FACTORS and total == pitf_epochs]
    assert len(counted) == len(finishing) - 1 and counted == list(range(1, len(counted) + 1))
    assert checkpoint.pitf_epoch <= len(counted) <= pitf_epochs
    model = checkpoint.model()
    assert model.factors is not None and model.factors.user.abs().sum() > 0
    # Too few validation cases to calibrate on: the factors stay out (scale 0), the rest as trained.
    assert len(data.validation) < 200 and model.part_scales.tolist() == model.trained_part_scales().tolist()
    assert model.part_scales[-1] == 0 and model.part_scales[:-1].eq(1).all()
    assert FACTORS in checkpoint.scorer().parts(data.test.users[:2], posts.subset(data.test.rows[:2])).__next__()

    reused = compare(data, checkpoint, "full", baselines=("PITF",))
    fitted = compare(data, checkpoint, "full", baselines=("PITF",), pitf=PITFConfig())
    (reused_pitf,), (fitted_pitf,) = reused.methods[1:], fitted.methods[1:]
    assert "the checkpoint's own fit" in reused_pitf.note and "own fit" not in fitted_pitf.note
    assert reused_pitf.note.split(" of ")[0] == fitted_pitf.note.split(" of ")[0]  # the same epoch
    for name in ("P@5", "R@5", "A@5"):
        assert reused_pitf.metrics["full"]["all"][name] == pytest.approx(fitted_pitf.metrics["full"]["all"][name])
    scorer = checkpoint.factor_scorer()
    assert scorer.score(data.test.users[:3], posts.subset(data.test.rows[:3])).shape == (3, data.graph.n_hashtags)

    # The content-only baseline's training takes the checkpoint's fit rather than fitting again.
    content_only = compare(data, checkpoint, "full", baselines=("content-only",))
    assert [m.name for m in content_only.methods] == ["GCN-PHR", "content-only"]
    fitted_factors = checkpoint.fitted_factors()
    assert fitted_factors is not None and fitted_factors.epoch == checkpoint.pitf_epoch
    again = tmp_path / "content-only.pt"
    train(data, ModelConfig(NetworkConfig(dim=8, propagate=False)), config, again, factors=fitted_factors)
    reloaded = load_checkpoint(again)
    assert reloaded.pitf_epoch == checkpoint.pitf_epoch
    for name, value in fitted_factors.state.items():
        assert torch.equal(reloaded.state_dict[f"factors.{name}"], value)

    without = ModelConfig(NetworkConfig(dim=8), factors=False)
    train(data, without, config, tmp_path / "plain.pt")
    plain = load_checkpoint(tmp_path / "plain.pt")
    assert plain.pitf_epoch is None and plain.model().factors is None and plain.fitted_factors() is None
