"""phr's features against the references', on clips made here with FFmpeg: one run, one line a figure.

    python bench/reference_agreement.py            # this checkout
    PYTHONPATH=OLD_CHECKOUT python bench/reference_agreement.py   # the same figures before a change

- mono mix: one sound stored as mono, stereo (L = R) and 5.1 (all channels equal), FLAC:
  level against mono, largest log-mel offset, relative L2 of the acoustic feature;
- audio against torchvggish's `waveform_to_examples` (channels averaged, resampy) on AAC and
  Opus clips whose channels differ: largest log-mel difference by mel band, feature gap;
- frames against `ResNet50_Weights.IMAGENET1K_V2.transforms()` on PIL images of the same
  keyframes: differences in uint8 levels, relative L2 of the ResNet50 feature.
Random encoder weights (copied into the reference networks), so no download is needed.
Needs the test extra (torchvggish, resampy).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import av
import numpy as np
import torch
import torchvision
from torchvggish import vggish_input

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test support: synthetic media

from phr_cli.data.decode import decode_clip
from phr_cli.encoders.audio import AudioEncoder, log_mel_examples
from phr_cli.encoders.visual import VisualEncoder
from support import media

WEIGHTS = torchvision.models.ResNet50_Weights.IMAGENET1K_V2


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def native_mix(path: Path) -> tuple[np.ndarray, int]:
    """The reference's input: every channel as float at the native rate (torchvggish averages them)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        to_float = av.AudioResampler(format="fltp")
        planes = [out.to_ndarray() for frame in container.decode(stream) for out in to_float.resample(frame)]
        return np.concatenate(planes, axis=1).T.astype(np.float64), stream.rate


def mono_mix(folder: Path, audio: AudioEncoder) -> None:
    decoded = {}
    for channels in (1, 2, 6):
        path = media.write_audio_only(folder / f"{channels}ch.flac", 3.0, tone_hz=660.0, noise=0.05,
                                      sample_rate=44100, channels=channels, equal_channels=True)
        waveform = decode_clip(path).audio
        decoded[channels] = (waveform, log_mel_examples(waveform), audio.embed_waveform(waveform))
    mono, mono_mel, mono_feature = decoded[1]
    for channels, name in ((2, "stereo L=R"), (6, "5.1 all equal")):
        waveform, mel, feature = decoded[channels]
        level = float(np.sqrt(np.mean(waveform**2) / np.mean(mono**2)))
        print(f"mono mix, {name} vs mono: level x{level:.3f}, log-mel offset max "
              f"{float((mel - mono_mel).abs().max()):.4f}, acoustic feature relative L2 "
              f"{relative(feature, mono_feature):.2e}")


def against_torchvggish(folder: Path, audio: AudioEncoder) -> None:
    clips = [("AAC stereo 44.1 kHz", "a.mp4", 2, 44100), ("AAC 5.1 48 kHz", "b.mp4", 6, 48000),
             ("Opus stereo 48 kHz", "c.mkv", 2, 48000)]
    for name, file_name, channels, rate in clips:
        path = media.write_clip(folder / file_name, 3.0, size=(64, 48), tone_hz=500.0, noise=0.1,
                                sample_rate=rate, channels=channels)
        ours = log_mel_examples(decode_clip(path).audio)
        reference = vggish_input.waveform_to_examples(*native_mix(path)).detach()
        if ours.shape != reference.shape:
            print(f"vs torchvggish, {name}: {len(ours)} examples against {len(reference)}")
            continue
        band = (ours - reference).abs().amax(dim=(0, 1, 2))
        gap = relative(audio.embed_examples(ours).mean(0), audio.embed_examples(reference).mean(0))
        print(f"vs torchvggish, {name}: log-mel difference max {float(band[:62].max()):.4f} in bands 0-61, "
              f"{float(band[62]):.4f} in band 62, {float(band[63]):.4f} in band 63; "
              f"acoustic feature relative L2 {gap:.2e}")


def phr_images(encoder: VisualEncoder, frames: np.ndarray) -> torch.Tensor:
    if hasattr(encoder, "preprocess"):
        return encoder.preprocess(frames)
    # Before: the decoder resized and cropped (swscale), the encoder only normalised.
    batch = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    return (batch - encoder.mean.cpu()) / encoder.std.cpu()


def against_torchvision(folder: Path, visual: VisualEncoder) -> None:
    transforms = WEIGHTS.transforms()
    reference_net = torchvision.models.resnet50(weights=None)
    reference_net.fc = torch.nn.Identity()
    reference_net.load_state_dict(visual.network.state_dict())
    reference_net.eval()
    std = torch.tensor(transforms.std).view(1, 3, 1, 1)
    for size in ((640, 272), (1280, 720), (272, 480)):
        path = media.write_clip(folder / f"{size[0]}x{size[1]}.mp4", 1.2, size=size, fps=10, gop=3,
                                pattern="city", tone_hz=None)
        ours = phr_images(visual, decode_clip(path).frames)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"
            reference = torch.stack([transforms(frame.to_image()) for frame in container.decode(stream)])
        levels = (ours - reference).abs() * std * 255
        with torch.inference_mode():
            gap = relative(visual.network(ours).mean(0), reference_net(reference).mean(0))
        print(f"frames {size[0]}x{size[1]} vs torchvision transforms (PIL): {len(ours)} frames, "
              f"uint8 levels mean {float(levels.mean()):.3f}, max {float(levels.max()):.1f}, "
              f"share over 1 level {float((levels > 1.001).float().mean()):.2%}; "
              f"visual feature relative L2 {gap:.2e}")


def main() -> None:
    torch.set_num_threads(1)
    audio = AudioEncoder(random_weights=True)
    visual = VisualEncoder(random_weights=True)
    with tempfile.TemporaryDirectory(prefix="phr-agreement-") as scratch:
        folder = Path(scratch)
        mono_mix(folder, audio)
        against_torchvggish(folder, audio)
        against_torchvision(folder, visual)


if __name__ == "__main__":
    main()
