"""Acoustic encoder: the VGGish log-mel front end and network, 128-d per 0.96 s example.

The front end reproduces the TensorFlow reference (research/audioset/vggish,
mel_features.py and vggish_input.py) with torch ops so that it runs on the encoder's
device. The network's parameter names follow the PyTorch port harritaylor/torchvggish,
whose `vggish-10086976.pth` loads into it unchanged. Every number comes from the spec.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from phr_cli.encoders.registry import VGGISH, EncoderSpec, autocast, build_network

# VGGish's convolution widths; "M" is a 2x2 max pool.
_CONV_PLAN: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
# After four 2x2 pools a 96x64 example is 6x4 cells of 512 channels.
_FLAT_FEATURES = 512 * 6 * 4


def _hertz_to_mel(hertz: torch.Tensor) -> torch.Tensor:
    # HTK mel scale, as the reference uses.
    return 1127.0 * torch.log1p(hertz / 700.0)


def mel_matrix(
    spec: EncoderSpec = VGGISH,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """(fft_length // 2 + 1, mel_bands) weights that post-multiply a magnitude spectrum.

    Written here because torchaudio's melscale_fbanks builds triangles linear in Hz,
    while the reference's are linear in mel.
    """
    pre = spec.preprocessing
    n_bins = pre["fft_length"] // 2 + 1
    bins_mel = _hertz_to_mel(
        torch.linspace(0.0, pre["sample_rate"] / 2.0, n_bins, device=device, dtype=dtype)
    )
    low, high = _hertz_to_mel(
        torch.tensor([pre["mel_min_hz"], pre["mel_max_hz"]], dtype=torch.float64)
    ).tolist()
    edges = torch.linspace(low, high, pre["mel_bands"] + 2, device=device, dtype=dtype)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = torch.minimum(rising, falling).clamp_min(0.0)
    weights[0, :] = 0.0  # HTK excludes the DC bin
    return weights


def log_mel_examples(
    waveform: np.ndarray | torch.Tensor, spec: EncoderSpec = VGGISH
) -> torch.Tensor:
    """Log-mel examples (n_examples, 1, frames, bands) of a mono waveform in [-1, 1].

    Computed in float64 on the waveform's device (the reference works in float64) and
    returned as float32. Audio too short for one whole example gives zero examples.
    """
    pre = spec.preprocessing
    signal = torch.as_tensor(waveform)
    if signal.ndim != 1:
        raise ValueError(f"expected a 1-D mono waveform, got shape {tuple(signal.shape)}")
    if not signal.is_floating_point():
        # int16 PCM would silently be 32,768 times too loud.
        raise TypeError(f"expected a float waveform in [-1, 1], got {signal.dtype}")
    signal = signal.to(torch.float64)
    window, hop = pre["window_samples"], pre["hop_samples"]
    n_frames_per_example, bands = pre["example_frames"], pre["mel_bands"]
    n_frames = 0 if signal.shape[0] < window else 1 + (signal.shape[0] - window) // hop
    if n_frames < n_frames_per_example:
        return torch.empty(
            (0, 1, n_frames_per_example, bands), dtype=torch.float32, device=signal.device
        )
    frames = signal.unfold(0, window, hop)  # no padding, as the reference frames
    hann = torch.hann_window(window, periodic=True, dtype=torch.float64, device=signal.device)
    magnitude = torch.fft.rfft(frames * hann, n=pre["fft_length"]).abs()
    mel = magnitude @ mel_matrix(spec, device=signal.device)
    log_mel = torch.log(mel + pre["log_offset"])
    # unfold puts the window last: (n_examples, bands, frames) -> (n_examples, frames, bands)
    examples = log_mel.unfold(0, n_frames_per_example, n_frames_per_example).transpose(1, 2)
    return examples.unsqueeze(1).to(torch.float32)


class VGGish(nn.Module):
    """The VGGish network; `features.*` / `embeddings.*` names match torchvggish's file."""

    def __init__(self, final_relu: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for step in _CONV_PLAN:
            if isinstance(step, str):  # "M"
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, step, kernel_size=3, padding=1), nn.ReLU()]
                channels = step
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [
            nn.Linear(_FLAT_FEATURES, 4096),
            nn.ReLU(),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, 128),
        ]
        if final_relu:  # torchvggish keeps one; the TF graph has none
            head.append(nn.ReLU())
        self.embeddings = nn.Sequential(*head)

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        x = self.features(examples)
        # The converted TF weights expect (frames, bands, channels) flatten order.
        x = x.permute(0, 2, 3, 1).flatten(1)
        return self.embeddings(x)


class AudioEncoder:
    """VGGish with its weights resolved through the registry; embeds log-mel examples."""

    def __init__(
        self,
        device: torch.device | str = "cpu",
        weights_dir: Path | None = None,
        random_weights: bool = False,
        spec: EncoderSpec = VGGISH,
        precision: str = "fp32",
    ) -> None:
        if spec.preprocessing.get("pca_postprocess"):
            raise ValueError(f"{spec.name}: PCA post-processing is not implemented")
        self.spec = spec
        self.device = torch.device(device)
        self.precision = precision
        final_relu = bool(spec.preprocessing.get("final_relu", False))
        net, self.weights_id = build_network(
            spec, lambda: VGGish(final_relu=final_relu), weights_dir, random_weights)
        self.net = net.to(self.device).eval()

    def embed_examples(self, examples: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """(n, 1, 96, 64) log-mel examples -> (n, 128) float32 embeddings on the CPU."""
        outputs = [torch.empty((0, self.spec.output_dim), dtype=torch.float32)]
        with torch.inference_mode(), autocast(self.device, self.precision):
            for start in range(0, examples.shape[0], batch_size):
                # `log_mel` already made them on the device: this copies only examples made elsewhere
                batch = examples[start : start + batch_size].to(self.device, dtype=torch.float32)
                outputs.append(self.net(batch).float().cpu())
        return torch.cat(outputs)

    def log_mel(self, waveform: np.ndarray | torch.Tensor) -> torch.Tensor:
        """`log_mel_examples` of a waveform, computed on the encoder's device: on a GPU the
        extraction's main thread only copies the waveform, leaving the CPU to the decoders."""
        return log_mel_examples(torch.as_tensor(waveform).to(self.device), self.spec)

    def embed_waveform(self, waveform: np.ndarray | torch.Tensor) -> torch.Tensor | None:
        """Mean embedding (128,) over a waveform's examples; None when it has none."""
        examples = self.log_mel(waveform)
        if examples.shape[0] == 0:
            return None
        return self.embed_examples(examples).mean(dim=0)
