import numpy as np
import pytest
import torch
import torchvision

from phr_cli.encoders import registry
from phr_cli.encoders.registry import MissingWeightsError, WeightsHashError
from phr_cli.encoders.visual import VisualEncoder


@pytest.fixture(scope="module")
def encoder() -> VisualEncoder:
    return VisualEncoder("cpu", random_weights=True)


def test_random_weights_are_seeded_recorded_and_leave_the_global_rng_alone(encoder):
    state = torch.random.get_rng_state()
    again = VisualEncoder("cpu", random_weights=True)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert encoder.weights_id == again.weights_id == "random-init(seed=0)"
    frames = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    torch.testing.assert_close(encoder.embed_frames(frames), again.embed_frames(frames))


def test_features_are_2048_wide_and_batching_does_not_change_them(encoder):
    frames = np.random.default_rng(1).integers(0, 256, (5, 224, 224, 3), dtype=np.uint8)
    whole = encoder.embed_frames(frames, batch_size=5)
    assert whole.shape == (5, 2048) and whole.dtype == torch.float32
    torch.testing.assert_close(encoder.embed_frames(frames, batch_size=2), whole, rtol=1e-4, atol=1e-4)
    assert encoder.embed_frames(frames[:0]).shape == (0, 2048)


def test_preprocessing_is_the_weights_own_transforms_frame_by_frame(encoder):
    frames = np.random.default_rng(2).integers(0, 256, (3, 180, 320, 3), dtype=np.uint8)
    transforms = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.transforms()
    expected = torch.stack([transforms(torch.from_numpy(f).permute(2, 0, 1)) for f in frames])
    batched = encoder.preprocess(frames, batch_size=2)
    assert batched.shape == (3, 3, 224, 224)
    torch.testing.assert_close(batched, expected, rtol=0, atol=1e-6)


def test_weights_load_from_weights_dir_after_the_hash_check(tmp_path, monkeypatch, encoder):
    net = torchvision.models.resnet50(weights=None)
    path = tmp_path / registry.RESNET50_IMAGENET1K_V2.weights.file_name
    assert path.name == "resnet50-11ad3fa6.pth"  # read from torchvision's enum
    torch.save(net.state_dict(), path)
    with pytest.raises(WeightsHashError, match="does not start with 11ad3fa6"):
        VisualEncoder("cpu", weights_dir=tmp_path)
    # With the published hash accepted, the file is what gets loaded.
    monkeypatch.setattr(registry, "verify_hash", lambda p, w: "sha-of-" + p.name)
    loaded = VisualEncoder("cpu", weights_dir=tmp_path)
    assert loaded.weights_id == "sha-of-resnet50-11ad3fa6.pth"
    torch.testing.assert_close(loaded.network.conv1.weight, net.conv1.weight)


def test_missing_weights_name_the_file_its_source_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv(registry.WEIGHTS_DIR_ENV, raising=False)

    def offline(url, dst, hash_prefix=None, progress=True):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(MissingWeightsError) as caught:
        VisualEncoder("cpu", weights_dir=tmp_path / "weights")
    message = str(caught.value)
    assert "resnet50-11ad3fa6.pth" in message and "https://download.pytorch.org/models/" in message
    assert str(tmp_path / "weights") in message and "--random-weights" in message


def test_bf16_autocast_stays_close_to_fp32_and_fp32_is_untouched(encoder, tmp_path):
    from phr_cli.data.decode import decode_clip
    from support import media

    frames = np.concatenate([decode_clip(media.write_clip(tmp_path / f"{p}.mp4", 1.0, pattern=p, gop=5)).frames[:2]
                             for p in ("ocean", "city")])
    exact = encoder.embed_frames(frames)
    bf16 = VisualEncoder("cpu", random_weights=True, precision="bf16").embed_frames(frames)
    assert bf16.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(exact, bf16)
    assert cosine.min() > 0.99, cosine
    assert not torch.equal(exact, bf16)  # autocast did run in bf16
    with pytest.raises(ValueError, match="unknown precision"):
        VisualEncoder("cpu", random_weights=True, precision="int8").embed_frames(frames[:1])
