"""The three encoders as one pipeline: decoded clips in, a store row per video out.

Shared by `phr extract` (local or on Ray actors) and `phr recommend`, so that a new clip
is encoded exactly as the store's videos were.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from phr_cli.data.decode import DecodedClip
from phr_cli.data.statuses import Status
from phr_cli.data.store import ACOUSTIC_DIM, VISUAL_DIM
from phr_cli.files import sha256_of

if TYPE_CHECKING:
    import torch


@dataclass
class EncodedVideo:
    """One video's row of /videos, as the encoders leave it; the store adds its path."""

    key: str
    duration: float
    status: Status
    reason: str
    n_frames: int
    n_audio_examples: int
    visual: np.ndarray  # (2048,) float32, zeros when masked
    acoustic: np.ndarray  # (128,) float32, zeros when masked
    visual_mask: bool
    acoustic_mask: bool


def content_key(path: Path) -> str:
    """SHA-256 of the file's bytes: renamed or duplicated files share one key."""
    return sha256_of(path)


class Encoders:
    """The three encoders, each loaded on first use (and then kept)."""

    def __init__(self, device: torch.device, weights_dir: Path | None, random_weights: bool,
                 precision: str = "fp32") -> None:
        self.device, self.weights_dir, self.random_weights = device, weights_dir, random_weights
        self.precision = precision  # autocast of ResNet50 and VGGish; MiniLM stays fp32

    @cached_property
    def visual(self):
        from phr_cli.encoders.visual import VisualEncoder

        return VisualEncoder(self.device, self.weights_dir, self.random_weights,
                             precision=self.precision)

    @cached_property
    def acoustic(self):
        from phr_cli.encoders.audio import AudioEncoder

        return AudioEncoder(self.device, self.weights_dir, self.random_weights,
                            precision=self.precision)

    @cached_property
    def textual(self):
        from phr_cli.encoders.text import TextEncoder

        return TextEncoder(self.device)

    def fingerprint(self, modalities: Iterable[str] = ("visual", "acoustic", "textual")) -> dict:
        """What the store and checkpoints record: each encoder's spec, weight hash and, for
        the autocast ones, precision."""
        recorded = {}
        for modality in modalities:
            encoder = getattr(self, modality)
            recorded[modality] = {"spec": encoder.spec.to_dict(), "weights": encoder.weights_id}
            if modality != "textual":
                recorded[modality]["precision"] = self.precision
        return recorded

    def encode_clips(self, clips: list[DecodedClip], batch_size: int) -> list[dict]:
        """Per clip: mean visual and acoustic features (None where the modality is missing)."""
        import torch

        results: list[dict[str, Any]] = [{"visual": None, "acoustic": None, "n_frames": 0, "n_audio_examples": 0}
                   for _ in clips]
        frame_sets = {i: c.frames for i, c in enumerate(clips) if c.frames is not None and len(c.frames)}
        with_frames = list(frame_sets)
        if with_frames:
            # Clips differ in size: each is preprocessed on its own, then encoded in batches.
            images = torch.cat([self.visual.preprocess(frame_sets[i], batch_size) for i in with_frames])
            features = self.visual.embed(images, batch_size)
            counts = [len(frame_sets[i]) for i in with_frames]
            for i, chunk in zip(with_frames, torch.split(features, counts)):
                results[i]["visual"] = chunk.mean(0).numpy()
                results[i]["n_frames"] = len(chunk)
        examples = {i: self.acoustic.log_mel(c.audio) for i, c in enumerate(clips) if c.audio is not None}
        examples = {i: e for i, e in examples.items() if len(e)}
        if examples:
            embedded = self.acoustic.embed_examples(torch.cat(list(examples.values())), batch_size)
            counts = [len(e) for e in examples.values()]
            for i, chunk in zip(examples, torch.split(embedded, counts)):
                results[i]["acoustic"] = chunk.mean(0).numpy()
                results[i]["n_audio_examples"] = len(chunk)
        return results

    def encode_videos(self, decoded: list[tuple[str, DecodedClip]], batch_size: int,
                      ) -> list[EncodedVideo]:
        """Store rows for (key, clip) pairs: features, zeros and masks where a modality is missing."""
        encoded = self.encode_clips([clip for _, clip in decoded], batch_size)
        return [
            EncodedVideo(
                key=key, duration=clip.duration, status=clip.status, reason=clip.reason,
                n_frames=features["n_frames"], n_audio_examples=features["n_audio_examples"],
                visual=_or_zeros(features["visual"], VISUAL_DIM),
                acoustic=_or_zeros(features["acoustic"], ACOUSTIC_DIM),
                visual_mask=features["visual"] is not None,
                acoustic_mask=features["acoustic"] is not None,
            )
            for (key, clip), features in zip(decoded, encoded)
        ]


def _or_zeros(features: np.ndarray | None, width: int) -> np.ndarray:
    return np.zeros(width, np.float32) if features is None else features.astype(np.float32)
