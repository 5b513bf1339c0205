"""phr against implementations nobody here wrote, on media the tests make with FFmpeg.

Audio: torchvggish (the PyTorch port of VGGish, with the TF reference's front end in
`vggish_input.waveform_to_examples`, which averages the channels and resamples with
resampy). Video: torchvision's `ResNet50_Weights.IMAGENET1K_V2.transforms()` on PIL
images and its `resnet50`. Networks get phr's random weights copied in (no download).
The test extra (`pip install -e '.[test]'`) brings torchvggish and resampy.
"""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
import torchvision
from torchvggish import vggish_input
from torchvggish.torchvggish import VGG, make_layers

from phr_cli.data.decode import decode_clip
from phr_cli.data.decode_options import FrameSampling
from phr_cli.data.statuses import Status
from phr_cli.encoders.audio import AudioEncoder, log_mel_examples
from phr_cli.encoders.visual import VisualEncoder
from support import media

WEIGHTS = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
# libswresample (phr) and resampy (the reference) differ only near 8 kHz, the Nyquist
# frequency of 16 kHz audio: measured on the bundled samples, at most 0.004 in bands
# 0-55, 0.08 in band 62 and 0.99 in band 63 (7.3-7.5 kHz). See bench/README.md.
RESAMPLER_BANDS_ATOL = 0.05  # bands 0-61
RESAMPLER_BAND_62_ATOL = 0.2


@pytest.fixture(scope="module")
def audio_encoder() -> AudioEncoder:
    return AudioEncoder(random_weights=True)


@pytest.fixture(scope="module")
def visual_encoder() -> VisualEncoder:
    return VisualEncoder(random_weights=True)


def native_mix(path) -> tuple[np.ndarray, int]:
    """The reference's mono: every channel decoded to float at the native rate, then averaged."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        to_float = av.AudioResampler(format="fltp")
        planes = [out.to_ndarray() for frame in container.decode(stream) for out in to_float.resample(frame)]
        return np.concatenate(planes, axis=1).T.astype(np.float64), stream.rate


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("suffix", [".flac", ".wav"])
def test_the_same_sound_as_mono_stereo_and_5_1_gives_the_same_acoustic_features(tmp_path, suffix, audio_encoder):
    features = {}
    for channels in (1, 2, 6):
        path = media.write_audio_only(tmp_path / f"{channels}ch{suffix}", 3.0, tone_hz=660.0, noise=0.05,
                                      sample_rate=44100, channels=channels, equal_channels=True)
        clip = decode_clip(path)
        assert clip.status == Status.NO_VIDEO, clip.reason
        features[channels] = audio_encoder.embed_waveform(clip.audio)
    for channels in (2, 6):
        assert relative(features[channels], features[1]) < 1e-3, channels


@pytest.mark.parametrize("channels, suffix, rate", [(2, ".mp4", 44100), (6, ".mp4", 48000), (2, ".mkv", 48000)])
def test_decoded_audio_is_mixed_and_resampled_as_vggish_input_does(tmp_path, channels, suffix, rate):
    # Channels differ (0.8 after the first), so a weighted downmix would show.
    path = media.write_clip(tmp_path / f"clip{suffix}", 3.0, size=(64, 48), tone_hz=500.0, noise=0.1,
                            sample_rate=rate, channels=channels)
    ours = log_mel_examples(decode_clip(path).audio)
    reference = vggish_input.waveform_to_examples(*native_mix(path))
    assert ours.shape == reference.shape and len(ours) == 3
    difference = (ours - reference).abs().amax(dim=(0, 1, 2))  # per mel band
    assert difference[:62].max() < RESAMPLER_BANDS_ATOL, difference
    assert difference[62] < RESAMPLER_BAND_62_ATOL, difference


def test_log_mel_front_end_equals_torchvggish_on_16k_audio(tmp_path):
    path = media.write_clip(tmp_path / "clip.mp4", 3.5, size=(64, 48), tone_hz=300.0, noise=0.2,
                            sample_rate=16000, channels=1)
    audio = decode_clip(path).audio
    reference = vggish_input.waveform_to_examples(audio, 16000)
    torch.testing.assert_close(log_mel_examples(audio), reference, rtol=0, atol=1e-5)


def test_vggish_network_is_torchvggish_without_its_final_relu(audio_encoder):
    reference = VGG(make_layers(), postprocess=False).eval()
    reference.load_state_dict(audio_encoder.net.state_dict(), strict=True)
    examples = torch.randn(4, 1, 96, 64)
    with torch.inference_mode():
        expected = reference(examples)
    ours = audio_encoder.embed_examples(examples)
    torch.testing.assert_close(torch.relu(ours), expected, rtol=1e-5, atol=1e-6)
    assert (ours < 0).any()  # phr keeps the TF graph's output, before torchvggish's ReLU


def reference_images(path) -> torch.Tensor:
    """torchvision's transforms on PIL images of every keyframe, decoded independently."""
    transforms = WEIGHTS.transforms()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"
        return torch.stack([transforms(frame.to_image()) for frame in container.decode(stream)])


# 640x272 is where rounding the long side (546 px) instead of truncating it (545) showed.
@pytest.mark.parametrize("size", [(640, 272), (272, 480), (1280, 720)])
def test_frames_are_preprocessed_as_torchvision_within_one_level(tmp_path, size, visual_encoder):
    path = media.write_clip(tmp_path / "clip.mp4", 1.2, size=size, fps=10, gop=3, pattern="city", tone_hz=None)
    clip = decode_clip(path, FrameSampling(min_keyframes=1))
    assert clip.frames.shape[1:3] == (size[1], size[0])
    ours = visual_encoder.preprocess(clip.frames)
    reference = reference_images(path)
    assert ours.shape == reference.shape == (4, 3, 224, 224)
    std = torch.tensor(WEIGHTS.transforms().std).view(1, 3, 1, 1)
    levels = (ours - reference).abs() * std * 255
    assert levels.max() <= 1.0 + 1e-3, levels.max()


def test_visual_features_equal_torchvision_resnet50(tmp_path, visual_encoder):
    path = media.write_clip(tmp_path / "clip.mp4", 1.0, size=(320, 180), fps=10, gop=5, pattern="ocean",
                            tone_hz=None)
    clip = decode_clip(path, FrameSampling(min_keyframes=1))
    reference = torchvision.models.resnet50(weights=None)
    reference.fc = torch.nn.Identity()
    reference.load_state_dict(visual_encoder.network.state_dict(), strict=True)
    transforms = WEIGHTS.transforms()
    images = torch.stack([transforms(torch.from_numpy(frame).permute(2, 0, 1)) for frame in clip.frames])
    with torch.inference_mode():
        expected = reference.eval()(images)
    ours = visual_encoder.embed_frames(clip.frames)
    assert relative(ours, expected) < 1e-5
