"""VGGish: front end against an independent NumPy reference, network shape and names,
weights resolution (random, missing, wrong hash)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from phr_cli.encoders import registry
from phr_cli.encoders.audio import AudioEncoder, VGGish, log_mel_examples, mel_matrix
from phr_cli.encoders.registry import VGGISH, MissingWeightsError, WeightsHashError

SR = 16000
# float64 inside, float32 out: the only expected difference is float32 rounding of
# log-mel values of magnitude < ~10 (about 5e-7); 1e-5 leaves margin and still
# catches any framing, window, scale or mel-matrix mistake.
FRONT_END_ATOL = 1e-5

# The state dict of harritaylor/torchvggish's vggish-10086976.pth (release v0.1):
# VGG.features is Conv/ReLU/MaxPool in one Sequential, VGG.embeddings the FC stack.
TORCHVGGISH_KEYS: list[tuple[str, tuple[int, ...]]] = [
    ("features.0.weight", (64, 1, 3, 3)),
    ("features.0.bias", (64,)),
    ("features.3.weight", (128, 64, 3, 3)),
    ("features.3.bias", (128,)),
    ("features.6.weight", (256, 128, 3, 3)),
    ("features.6.bias", (256,)),
    ("features.8.weight", (256, 256, 3, 3)),
    ("features.8.bias", (256,)),
    ("features.11.weight", (512, 256, 3, 3)),
    ("features.11.bias", (512,)),
    ("features.13.weight", (512, 512, 3, 3)),
    ("features.13.bias", (512,)),
    ("embeddings.0.weight", (4096, 12288)),
    ("embeddings.0.bias", (4096,)),
    ("embeddings.2.weight", (4096, 4096)),
    ("embeddings.2.bias", (4096,)),
    ("embeddings.4.weight", (128, 4096)),
    ("embeddings.4.bias", (128,)),
]


# --- independent NumPy reference, written from mel_features.py / vggish_input.py ---


def ref_frame(data: np.ndarray, length: int, hop: int) -> np.ndarray:
    n = 1 + int(np.floor((data.shape[0] - length) / hop))
    if n <= 0:
        return np.empty((0, length, *data.shape[1:]))
    return np.stack([data[i * hop : i * hop + length] for i in range(n)])


def ref_mel_matrix(bands=64, n_bins=257, sr=16000, low=125.0, high=7500.0) -> np.ndarray:
    def to_mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    bins_mel = to_mel(np.linspace(0.0, sr / 2.0, n_bins))
    edges = np.linspace(to_mel(low), to_mel(high), bands + 2)
    out = np.empty((n_bins, bands))
    for i in range(bands):
        lo, mid, hi = edges[i : i + 3]
        out[:, i] = np.maximum(0.0, np.minimum((bins_mel - lo) / (mid - lo), (hi - bins_mel) / (hi - mid)))
    out[0, :] = 0.0
    return out


def ref_examples(signal: np.ndarray) -> np.ndarray:
    frames = ref_frame(signal.astype(np.float64), 400, 160)
    window = 0.5 - 0.5 * np.cos(2 * np.pi / 400 * np.arange(400))  # periodic Hann
    spectrum = np.abs(np.fft.rfft(frames * window, 512))
    log_mel = np.log(spectrum @ ref_mel_matrix() + 0.01)
    return ref_frame(log_mel, 96, 96)[:, None, :, :]


def signals() -> dict[str, np.ndarray]:
    t = np.arange(3 * SR) / SR
    rng = np.random.default_rng(7)
    return {
        "tone_440": 0.5 * np.sin(2 * np.pi * 440 * t),
        "tone_3k_quiet": 0.01 * np.sin(2 * np.pi * 3000 * t + 0.3),
        "noise": np.clip(rng.normal(0.0, 0.2, t.shape), -1, 1),
        # linear chirp 100 Hz -> 7,900 Hz over 3 s
        "chirp": 0.8 * np.sin(2 * np.pi * (100 * t + 1300 * t**2)),
        "silence": np.zeros_like(t),
    }


# --- front end ---


def test_mel_matrix_matches_reference():
    np.testing.assert_allclose(mel_matrix(VGGISH).numpy(), ref_mel_matrix(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", list(signals()))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_mel_matches_numpy_reference(name, dtype):
    signal = signals()[name].astype(dtype)
    expected = ref_examples(signal.astype(np.float64))
    got = log_mel_examples(signal)
    assert got.dtype == torch.float32
    assert tuple(got.shape) == expected.shape == (3, 1, 96, 64)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=FRONT_END_ATOL)


def test_log_mel_accepts_tensor():
    signal = signals()["chirp"]
    np.testing.assert_array_equal(
        log_mel_examples(torch.from_numpy(signal)).numpy(), log_mel_examples(signal).numpy()
    )


@pytest.mark.parametrize(
    "n_samples, n_examples",
    [(0, 0), (100, 0), (400, 0), (15_599, 0), (15_600, 1), (30_959, 1), (30_960, 2), (2 * SR, 2)],
)
def test_example_count(n_samples, n_examples):
    signal = np.random.default_rng(0).uniform(-0.5, 0.5, n_samples).astype(np.float32)
    got = log_mel_examples(signal)
    assert tuple(got.shape) == (n_examples, 1, 96, 64)
    assert got.shape[0] == ref_examples(signal).shape[0]


def test_log_mel_rejects_integer_and_multichannel():
    with pytest.raises(TypeError):
        log_mel_examples(np.zeros(SR, dtype=np.int16))
    with pytest.raises(ValueError):
        log_mel_examples(np.zeros((SR, 2), dtype=np.float32))


# --- network ---


@pytest.fixture(scope="module")
def net() -> VGGish:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return VGGish().eval()


def test_vggish_shape_and_parameter_count(net):
    assert sum(p.numel() for p in net.parameters()) == 72_141_184  # ~72.1 M
    with torch.inference_mode():
        out = net(torch.randn(3, 1, 96, 64))
    assert out.shape == (3, 128)


def test_state_dict_matches_torchvggish(net):
    got = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
    assert got == TORCHVGGISH_KEYS
    # A final ReLU adds no parameter, so the same file serves both variants.
    with torch.device("meta"):
        with_relu = VGGish(final_relu=True)
    assert [(k, tuple(v.shape)) for k, v in with_relu.state_dict().items()] == TORCHVGGISH_KEYS


def test_final_relu_flag(net):
    assert not isinstance(net.embeddings[-1], torch.nn.ReLU)
    with torch.device("meta"):
        assert isinstance(VGGish(final_relu=True).embeddings[-1], torch.nn.ReLU)


def test_saved_state_dict_reloads_strict(net, tmp_path, monkeypatch):
    path = tmp_path / "vggish-10086976.pth"
    torch.save(net.state_dict(), path)
    # The encoder's loading path (weights_only load, strict=True), bypassing the hash check.
    monkeypatch.setattr(
        "phr_cli.encoders.registry.resolve_weights", lambda weights, weights_dir: (path, "f" * 64)
    )
    encoder = AudioEncoder(weights_dir=tmp_path)
    assert encoder.weights_id == "f" * 64
    assert not encoder.net.training
    x = torch.randn(2, 1, 96, 64)
    with torch.inference_mode():
        expected = net(x)
    torch.testing.assert_close(encoder.embed_examples(x), expected, rtol=0, atol=0)


def test_flatten_is_channels_last(net):
    x = torch.randn(1, 1, 96, 64)
    with torch.inference_mode():
        maps = net.features(x)[0]  # (512, 6, 4)
        assert maps.shape == (512, 6, 4)
        channels, height, width = maps.shape
        manual = torch.stack(
            [maps[c, h, w] for h in range(height) for w in range(width) for c in range(channels)]
        )
        expected = net.embeddings(manual[None])
        channels_first = net.embeddings(maps.reshape(1, -1))
        got = net(x)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, channels_first)


# --- encoder and weights ---


@pytest.fixture(scope="module")
def random_encoder() -> AudioEncoder:
    return AudioEncoder(random_weights=True)


def test_random_weights_deterministic_and_rng_untouched(random_encoder):
    torch.manual_seed(123)
    seed = torch.initial_seed()
    expected_draw = torch.rand(4)
    torch.manual_seed(123)
    other = AudioEncoder(random_weights=True)
    assert torch.initial_seed() == seed
    torch.testing.assert_close(torch.rand(4), expected_draw, rtol=0, atol=0)

    assert random_encoder.weights_id == other.weights_id == registry.random_weights_id()
    for (k1, v1), (k2, v2) in zip(
        random_encoder.net.state_dict().items(), other.net.state_dict().items(), strict=True
    ):
        assert k1 == k2 and torch.equal(v1, v2)


def test_embed_examples_batching(random_encoder):
    x = torch.randn(5, 1, 96, 64)
    full = random_encoder.embed_examples(x)
    assert full.shape == (5, 128) and full.dtype == torch.float32 and full.device.type == "cpu"
    torch.testing.assert_close(random_encoder.embed_examples(x, batch_size=2), full)
    assert random_encoder.embed_examples(x[:0]).shape == (0, 128)


def test_embed_waveform(random_encoder):
    signal = signals()["chirp"].astype(np.float32)
    pooled = random_encoder.embed_waveform(signal)
    per_example = random_encoder.embed_examples(log_mel_examples(signal))
    assert pooled.shape == (128,)
    torch.testing.assert_close(pooled, per_example.mean(dim=0))
    assert random_encoder.embed_waveform(np.zeros(15_599, dtype=np.float32)) is None


@pytest.fixture
def empty_weight_places(tmp_path, monkeypatch) -> Path:
    """An empty --weights-dir and an empty hub cache; no PHR_WEIGHTS_DIR; no network."""
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(registry.WEIGHTS_DIR_ENV, raising=False)
    return weights_dir


def test_missing_weights_error(empty_weight_places, monkeypatch):
    attempts: list[str] = []

    def offline(url, dst, *args, **kwargs):
        attempts.append(url)
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(MissingWeightsError) as info:
        AudioEncoder(weights_dir=empty_weight_places)
    message = str(info.value)
    assert "vggish-10086976.pth" in message
    assert VGGISH.weights.url in message
    assert str(empty_weight_places) in message
    assert attempts == [VGGISH.weights.url]


def test_wrong_hash_rejected(empty_weight_places):
    (empty_weight_places / "vggish-10086976.pth").write_bytes(b"not the weights")
    with pytest.raises(WeightsHashError, match="10086976"):
        AudioEncoder(weights_dir=empty_weight_places)
