"""The video vector v_k: each modality's features standardised, a learned vector where one is missing."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from phr_cli.data.graph import MODALITIES


class ItemEncoder(nn.Module):
    """The video vector v_k: per-modality standardised features, concatenated.

    A missing modality (mask False) becomes a learned per-modality vector, so "no audio"
    is something the model can learn about instead of a silent zero. The mean and std
    (fitted on training items where the modality is present) are buffers, hence saved.
    """

    def __init__(self, widths: dict[str, int], init_std: float) -> None:
        super().__init__()
        self.widths = dict(widths)
        for modality, width in self.widths.items():
            self.register_buffer(f"mean_{modality}", torch.zeros(width))
            self.register_buffer(f"std_{modality}", torch.ones(width))
        self.missing = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(w) * init_std) for m, w in self.widths.items()}
        )

    @property
    def width(self) -> int:
        return sum(self.widths.values())

    def blocks(self) -> list[tuple[str, int, int]]:
        """(modality, start, stop) of each modality's columns in v_k."""
        spans, start = [], 0
        for modality, width in self.widths.items():
            spans.append((modality, start, start + width))
            start += width
        return spans

    def fit(self, features: dict[str, Tensor], masks: dict[str, Tensor]) -> None:
        for modality in self.widths:
            present = features[modality][masks[modality]].float()
            if len(present) == 0:
                continue  # keep mean 0, std 1
            std = present.std(dim=0, unbiased=False)
            getattr(self, f"mean_{modality}").copy_(present.mean(dim=0))
            getattr(self, f"std_{modality}").copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def standardise(self, modality: str, values: Tensor) -> Tensor:
        mean, std = getattr(self, f"mean_{modality}"), getattr(self, f"std_{modality}")
        return (values.to(mean) - mean) / std

    def fill_missing(self, vectors: Tensor, masks: Tensor) -> Tensor:
        """Standardised (B, D) vectors with the learned vector in each block whose mask (B, M) is False."""
        columns = [
            torch.where(masks[:, m, None], vectors[:, start:stop], self.missing[modality])
            for m, (modality, start, stop) in enumerate(self.blocks())
        ]
        return torch.cat(columns, dim=1)

    def standardised(self, features: dict[str, Tensor], masks: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Standardised (B, D) vectors, missing blocks not yet filled, and the (B, M) masks."""
        vectors = torch.cat([self.standardise(m, torch.as_tensor(features[m])) for m in self.widths], dim=1)
        mask_matrix = torch.stack([torch.as_tensor(masks[m]).to(vectors.device, torch.bool) for m in self.widths],
                                  dim=1)
        return vectors, mask_matrix

    def forward(self, features: dict[str, Tensor], masks: dict[str, Tensor]) -> Tensor:
        return self.fill_missing(*self.standardised(features, masks))


def ordered_modalities(widths: dict[str, int]) -> dict[str, int]:
    """Modalities in the canonical order (visual, acoustic, textual), any others after, by name."""
    known = [m for m in MODALITIES if m in widths]
    return {m: widths[m] for m in known + sorted(set(widths) - set(known))}
