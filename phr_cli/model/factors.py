"""PITF's factors as a score part of the default model.

Pairwise interaction tensor factorisation (`pitf.PITF`) scores a hashtag by
<U_u, T^U_t> + <I_k, T^I_t>: latent tastes of users and items learned over many epochs of
BPR. The default model's own latent parts stop early with its evidence terms, so they learn
far less of this (what the part adds on Last.fm: bench/README.md, "PITF factors"). `phr train` fits PITF
once the model is trained, exactly as `phr evaluate` fits the baseline (its epoch chosen on
validation P@5), keeps its factors here, and calibration gives the part its scale.

A new video has no factor I_k: PITF's linear map of its content stands in, from each
present modality standardised with the training items' statistics and a presence flag.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from phr_cli.model.pitf import PITF

FACTORS = "factors"  # the score part's name


@dataclass
class FittedFactors:
    """A PITF fit as a checkpoint keeps it: TagFactors' state and the epoch PITF chose."""

    state: dict[str, Tensor]
    epoch: int


class TagFactors(nn.Module):
    """A fitted PITF's factors and content map (buffers: nothing here is trained by the model's steps)."""

    user: Tensor
    user_tag: Tensor
    item: Tensor
    item_tag: Tensor
    content_weight: Tensor
    content_bias: Tensor
    content_mean: Tensor
    content_std: Tensor

    def __init__(self, n_users: int, n_items: int, n_hashtags: int, widths: dict[str, int], dim: int = 64) -> None:
        super().__init__()
        self.widths = dict(widths)  # the modalities of the content map, in order
        width = sum(widths.values())
        for name, shape in (("user", (n_users, dim)), ("user_tag", (n_hashtags, dim)), ("item", (n_items, dim)),
                            ("item_tag", (n_hashtags, dim)), ("content_weight", (width + len(widths), dim)),
                            ("content_bias", (dim,)), ("content_mean", (width,)), ("content_std", (width,))):
            self.register_buffer(name, torch.zeros(shape))
        self.content_std.fill_(1.0)  # until fitted, the part is 0 everywhere (never 0/0)

    def load_fitted(self, pitf: PITF) -> None:
        """Take a fitted PITF's factors, content map and content statistics."""
        if list(pitf.content.modalities) != list(self.widths):
            raise ValueError(f"PITF's content map reads {pitf.content.modalities}, the model {list(self.widths)}")
        with torch.no_grad():
            for name, value in (("user", pitf.user_factors), ("user_tag", pitf.user_tag_factors),
                                ("item", pitf.item_factors), ("item_tag", pitf.item_tag_factors),
                                ("content_weight", pitf.content_weight), ("content_bias", pitf.content_bias)):
                getattr(self, name).copy_(value.detach())
            if self.widths:
                self.content_mean.copy_(torch.as_tensor(
                    [v for m in self.widths for v in pitf.content.mean[m]], dtype=torch.float32))
                self.content_std.copy_(torch.as_tensor(
                    [v for m in self.widths for v in pitf.content.std[m]], dtype=torch.float32))

    def content_factor(self, features: dict[str, Tensor], masks: dict[str, Tensor], n: int) -> Tensor:
        """(n, dim): the factor PITF's content map gives n new videos."""
        return self._content(features, masks, n) @ self.content_weight + self.content_bias

    def _content(self, features: dict[str, Tensor], masks: dict[str, Tensor], n: int) -> Tensor:
        """`baselines.ContentFeatures` on tensors: standardised present modalities, zeros where
        missing, then one presence flag per modality."""
        parts, flags, start = [], [], 0
        for modality, width in self.widths.items():
            mean, std = self.content_mean[start:start + width], self.content_std[start:start + width]
            start += width
            present = (masks[modality].to(torch.bool) if modality in masks
                       else torch.zeros(n, dtype=torch.bool, device=mean.device))
            values = features[modality].to(mean.dtype) if modality in features else mean.expand(n, width)
            parts.append(torch.where(present.unsqueeze(1), (values - mean) / std, 0.0))
            flags.append(present.to(mean.dtype).unsqueeze(1))
        return torch.cat(parts + flags, dim=1) if parts else self.content_mean.new_zeros(n, 0)

    def score_rows(self, users: Tensor, items: Tensor, features: dict[str, Tensor], masks: dict[str, Tensor]
                   ) -> Tensor:
        """PITF's scores (B, H) of every hashtag: users (B,) graph ids (-1: cold, no user
        term), items (B,) graph ids (-1: new content, the mapped factor)."""
        mapped = self.content_factor(features, masks, len(users))
        item = torch.where((items >= 0).unsqueeze(1), self.item.index_select(0, items.clamp(min=0)), mapped)
        user = torch.where((users >= 0).unsqueeze(1), self.user.index_select(0, users.clamp(min=0)), 0.0)
        return user @ self.user_tag.T + item @ self.item_tag.T
