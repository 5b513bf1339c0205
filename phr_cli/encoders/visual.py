"""The visual encoder: torchvision ResNet50, global-average-pooled 2048-d features per frame.

Frames arrive at their full size (uint8 RGB, upright). They are preprocessed by the
weights' own declaration, `ResNet50_Weights.IMAGENET1K_V2.transforms()` (resize the short
side with antialiasing, centre crop, ImageNet normalisation), on batched tensors on the
encoder's device: the transform the pretrained weights were validated with.
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
        weights_name = spec.preprocessing["transforms"].removesuffix(".transforms()")
        self.transforms = torchvision.models.get_weight(weights_name).transforms()

    @torch.inference_mode()
    def preprocess(self, frames: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        """(N, H, W, 3) uint8 RGB frames of one size -> (N, 3, crop, crop) normalised float32
        on the device, `batch_size` frames at a time (full frames are large)."""
        outputs = []
        pinned = self.device.type == "cuda"
        for start in range(0, len(frames), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(frames[start : start + batch_size]))
            if pinned:
                batch = batch.pin_memory()
            batch = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
            outputs.append(self.transforms(batch))
        if not outputs:
            crop = self.transforms.crop_size[0]
            return torch.zeros((0, 3, crop, crop), device=self.device)
        return torch.cat(outputs)

    @torch.inference_mode()
    def embed(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """(N, 3, crop, crop) preprocessed images -> (N, 2048) float32 features on the CPU."""
        outputs = [torch.zeros((0, self.spec.output_dim))]
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(self.device)
            with autocast(self.device, self.precision):
                outputs.append(self.network(batch.contiguous(memory_format=torch.channels_last)).float().cpu())
        return torch.cat(outputs)

    def embed_frames(self, frames: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        """(N, H, W, 3) uint8 RGB frames of one size -> (N, 2048) float32 features on the CPU."""
        return self.embed(self.preprocess(frames, batch_size), batch_size)
