"""Tests for support.media (tests/support/media.py): synthetic clips and broken inputs written with PyAV."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from support import media

FPS = 15

EXPECTED = {  # suffix -> (video decoder name, audio decoder names)
    ".mp4": ("h264", {"aac"}),
    ".mov": ("h264", {"aac"}),
    ".mkv": ("h264", {"opus", "libopus"}),
    ".webm": ("vp9", {"opus", "libopus"}),
    ".avi": ("mpeg4", {"mp3", "mp3float"}),
}


def _probe(path: Path) -> dict:
    """Streams, decoded frame count, keyframes and duration of a file."""
    with av.open(str(path)) as c:
        info = {"nv": len(c.streams.video), "na": len(c.streams.audio)}
        if info["nv"]:
            v = c.streams.video[0]
            info.update(vcodec=v.codec_context.name, w=v.width, h=v.height)
            info["kf"] = sum(1 for p in c.demux(v) if p.is_keyframe and p.size)
            c.seek(0)
            info["frames"] = sum(1 for _ in c.decode(video=0))
        if info["na"]:
            a = c.streams.audio[0]
            info.update(acodec=a.codec_context.name, rate=a.rate, ch=a.channels)
        info["dur"] = c.duration / 1e6
    return info


def _audio(path: Path) -> tuple[np.ndarray, int]:
    """Decoded first audio stream, channels averaged, and its sample rate."""
    with av.open(str(path)) as c:
        rate = c.streams.audio[0].rate
        chunks = [f.to_ndarray().reshape(f.layout.nb_channels, -1).mean(0)
                  for f in c.decode(audio=0)]
    return np.concatenate(chunks), rate


@pytest.mark.parametrize("suffix", sorted(EXPECTED))
def test_containers_round_trip(tmp_path: Path, suffix: str) -> None:
    path = media.write_clip(tmp_path / f"clip{suffix}", 1.0, fps=FPS, seed=1)
    info = _probe(path)
    vcodec, acodecs = EXPECTED[suffix]
    assert (info["nv"], info["na"]) == (1, 1)
    assert info["vcodec"] == vcodec and info["acodec"] in acodecs
    assert (info["w"], info["h"]) == (160, 120)
    assert abs(info["frames"] - FPS) <= 1
    assert abs(info["dur"] - 1.0) <= 1.5 / FPS + 0.01


@pytest.mark.parametrize("seconds", [0.5, 2.0])
def test_duration_within_one_frame(tmp_path: Path, seconds: float) -> None:
    info = _probe(media.write_clip(tmp_path / "d.mp4", seconds, fps=FPS))
    assert abs(info["frames"] - seconds * FPS) <= 1
    assert abs(info["dur"] - seconds) <= 1.0 / FPS + 0.01


def test_no_audio_when_tone_is_none(tmp_path: Path) -> None:
    for suffix in (".mp4", ".webm"):
        info = _probe(media.write_clip(tmp_path / f"n{suffix}", 1.0, tone_hz=None))
        assert (info["nv"], info["na"]) == (1, 0)


def test_audio_rate_channels_and_tone(tmp_path: Path) -> None:
    path = media.write_clip(tmp_path / "s.mp4", 1.0, tone_hz=1000.0, sample_rate=48000,
                            channels=2)
    info = _probe(path)
    assert (info["rate"], info["ch"]) == (48000, 2)
    x, rate = _audio(path)
    assert abs(len(x) / rate - 1.0) < 0.1
    peak = np.argmax(np.abs(np.fft.rfft(x))) * rate / len(x)
    assert abs(peak - 1000.0) < 10


def test_opus_gets_a_supported_rate(tmp_path: Path) -> None:
    info = _probe(media.write_clip(tmp_path / "o.mkv", 0.5, sample_rate=44100))
    assert info["rate"] == 48000


def test_vorbis_override_is_stereo(tmp_path: Path) -> None:
    path = media.write_clip(tmp_path / "v.webm", 0.5, vcodec="libvpx", acodec="vorbis")
    info = _probe(path)
    assert (info["vcodec"], info["acodec"], info["ch"]) == ("vp8", "vorbis", 2)


def test_gop_sets_keyframes(tmp_path: Path) -> None:
    assert _probe(media.write_clip(tmp_path / "g.mp4", 2.0, fps=FPS, gop=5))["kf"] == 6
    assert _probe(media.write_clip(tmp_path / "h.mp4", 2.0, fps=FPS))["kf"] == 1


def _decoded(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every frame (RGB) and every audio sample of a clip."""
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        audio = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=-1)
    return frames.astype(np.float32), audio


def test_deterministic_given_seed(tmp_path: Path) -> None:
    # Decoded content, not bytes: x264's output is not byte-exact across runs on a loaded
    # machine, while what a decoder sees of the same seed is the same picture and sound.
    a = _decoded(media.write_clip(tmp_path / "a.mp4", 1.0, pattern="fire", crackle=0.5, seed=7))
    b = _decoded(media.write_clip(tmp_path / "b.mp4", 1.0, pattern="fire", crackle=0.5, seed=7))
    c = _decoded(media.write_clip(tmp_path / "c.mp4", 1.0, pattern="fire", crackle=0.5, seed=8))
    assert a[0].shape == b[0].shape == c[0].shape and a[1].shape == b[1].shape
    same, other = np.abs(a[0] - b[0]).mean(), np.abs(a[0] - c[0]).mean()
    assert same < 0.1 * other, (same, other)  # mean over pixels, of 255 levels
    np.testing.assert_allclose(a[1], b[1], atol=1e-3)
    assert not np.allclose(a[1], c[1], atol=1e-3)


def test_patterns_differ_by_colour(tmp_path: Path) -> None:
    means = {}
    for name in ("ocean", "fire", "forest"):
        path = media.write_clip(tmp_path / f"{name}.mp4", 0.2, pattern=name,
                                tone_hz=None)
        with av.open(str(path)) as c:
            frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
        means[name] = frame.reshape(-1, 3).mean(0)
    assert np.argmax(means["ocean"]) == 2  # blue
    assert np.argmax(means["fire"]) == 0  # red
    assert np.argmax(means["forest"]) == 1  # green


def test_custom_pattern_and_size(tmp_path: Path) -> None:
    pat = media.Pattern(base=(10, 10, 10), shapes=0, texture="plain", grain=0)
    info = _probe(media.write_clip(tmp_path / "p.mp4", 0.4, size=(64, 48), pattern=pat))
    assert (info["w"], info["h"]) == (64, 48)


@pytest.mark.parametrize("suffix", [".m4a", ".mp4", ".wav", ".ogg"])
def test_audio_only(tmp_path: Path, suffix: str) -> None:
    info = _probe(media.write_audio_only(tmp_path / f"a{suffix}", 1.0))
    assert (info["nv"], info["na"]) == (0, 1)
    assert abs(info["dur"] - 1.0) < 0.05


def test_truncated_is_shorter_and_decodes_partway(tmp_path: Path) -> None:
    src = media.write_clip(tmp_path / "full.mp4", 2.0, fps=FPS, gop=5)
    for fraction in (0.3, 0.7):
        dst = media.write_truncated(src, tmp_path / "cut.mp4", fraction)
        assert dst.stat().st_size == int(src.stat().st_size * fraction)
        assert src.read_bytes().startswith(dst.read_bytes())
        frames = 0
        try:  # fast-start MP4: opens; decoding stops early, with or without an error
            with av.open(str(dst)) as c:
                for _ in c.decode(video=0):
                    frames += 1
        except av.error.FFmpegError:
            pass
        assert 0 < frames < 2 * FPS


def test_truncated_without_faststart_fails_at_open(tmp_path: Path) -> None:
    src = media.write_clip(tmp_path / "full.mp4", 1.0, faststart=False)
    dst = media.write_truncated(src, tmp_path / "cut.mp4", 0.5)
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(dst))


def test_zero_bytes(tmp_path: Path) -> None:
    path = media.write_zero_bytes(tmp_path / "z.mp4")
    assert path.stat().st_size == 0
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(path))


def test_random_bytes(tmp_path: Path) -> None:
    a = media.write_random_bytes(tmp_path / "r.mp4", 5000, seed=3)
    b = media.write_random_bytes(tmp_path / "s.mp4", 5000, seed=3)
    assert a.stat().st_size == 5000 and a.read_bytes() == b.read_bytes()
    with pytest.raises(av.error.FFmpegError):
        av.open(str(a))


def test_text_file(tmp_path: Path) -> None:
    path = media.write_text_file(tmp_path / "notes.mp4")
    assert path.read_text(encoding="utf-8").strip()
    with pytest.raises(av.error.FFmpegError):
        av.open(str(path))


def test_copy_clip_is_byte_identical(tmp_path: Path) -> None:
    src = media.write_clip(tmp_path / "x.mp4", 0.3, tone_hz=None)
    dup = media.copy_clip(src, tmp_path / "dup name.mp4")
    assert dup.read_bytes() == src.read_bytes()
