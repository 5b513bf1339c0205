"""The visual encoder: torchvision ResNet50, global-average-pooled 2048-d features per frame.

Frames arrive already resized and cropped by the decoder (uint8 RGB, crop x crop), so the
only preprocessing here is float conversion and ImageNet normalisation, done on the device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision

from phr_cli.encoders.registry import RESNET50_IMAGENET1K_V2, EncoderSpec, autocast, build_network


class VisualEncoder:
    def __init__(
        self,
        device: torch.device | str = "cpu",
        weights_dir: Path | None = None,
        random_weights: bool = False,
        spec: EncoderSpec = RESNET50_IMAGENET1K_V2,
        precision: str = "fp32",
    ) -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.precision = precision
        network, self.weights_id = build_network(
            spec, lambda: torchvision.models.resnet50(weights=None), weights_dir, random_weights)
        network.fc = torch.nn.Identity()  # keep the pooled 2048-d features
        # channels_last is faster for convolutions on both CPU and GPU.
        self.network = network.eval().to(self.device, memory_format=torch.channels_last)
        preprocessing = spec.preprocessing
        self.mean = torch.tensor(preprocessing["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(preprocessing["std"], device=self.device).view(1, 3, 1, 1)

    @torch.inference_mode()
    def embed_frames(self, frames: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        """(N, H, W, 3) uint8 RGB frames -> (N, 2048) float32 features on the CPU."""
        outputs = []
        pinned = self.device.type == "cuda"
        for start in range(0, len(frames), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(frames[start : start + batch_size]))
            if pinned:
                batch = batch.pin_memory()
            batch = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
            batch = ((batch.float() / 255.0 - self.mean) / self.std).contiguous(
                memory_format=torch.channels_last
            )
            with autocast(self.device, self.precision):
                outputs.append(self.network(batch).float().cpu())
        if not outputs:
            return torch.zeros((0, self.spec.output_dim))
        return torch.cat(outputs)
