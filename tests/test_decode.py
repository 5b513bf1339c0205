import os

import numpy as np
import pytest

from phr_cli.data.decode import decode_clip, decode_in_time
from phr_cli.data.decode_options import DecodeLimits, FrameSampling
from phr_cli.data.statuses import Status
from support import media


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm", ".avi", ".mov"])
def test_containers_decode_frames_and_16k_mono_audio(tmp_path, suffix):
    path = media.write_clip(tmp_path / f"clip{suffix}", 2.0, size=(96, 64), sample_rate=44100, channels=2)
    clip = decode_clip(path)
    assert clip.status == Status.OK, clip.reason
    assert clip.frames.dtype == np.uint8 and clip.frames.shape[1:] == (64, 96, 3)  # full size
    assert abs(len(clip.audio) - 2.0 * 16000) < 0.1 * 16000  # encoder padding aside
    assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1


def test_keyframes_are_used_when_there_are_enough(tmp_path):
    path = media.write_clip(tmp_path / "gop.mp4", 4.0, fps=10, gop=5, size=(96, 64))
    clip = decode_clip(path, FrameSampling(min_keyframes=4, max_frames=16))
    assert clip.n_keyframes == 8 and len(clip.frames) == 8


def test_few_keyframes_fall_back_to_uniform_sampling(tmp_path):
    path = media.write_clip(tmp_path / "onekey.mp4", 3.0, fps=10, size=(96, 64))
    clip = decode_clip(path, FrameSampling(min_keyframes=4, fallback_frames=6))
    assert clip.n_keyframes == 1 and len(clip.frames) == 6
    # Uniform samples of a moving pattern differ from each other.
    assert len({frame.tobytes() for frame in clip.frames}) == 6


def test_frame_cap_and_long_video_seek_sampling(tmp_path):
    path = media.write_clip(tmp_path / "long.mp4", 6.0, fps=10, gop=5, size=(96, 64))
    capped = decode_clip(path, FrameSampling(max_frames=4))
    assert capped.n_keyframes == 12 and len(capped.frames) == 4
    seeked = decode_clip(path, FrameSampling(max_frames=4, long_video_seconds=1.0))
    assert len(seeked.frames) == 4


def test_frames_keep_their_full_size_for_the_encoders_transforms(tmp_path):
    path = media.write_clip(tmp_path / "wide.mp4", 1.0, size=(320, 120), tone_hz=None)
    assert decode_clip(path).frames.shape[1:] == (120, 320, 3)


@pytest.mark.parametrize("gop", [None, 40, 30])  # 1, 3 and 4 keyframes (B-frames on)
def test_uniform_fallback_seeks_yet_picks_the_frames_a_full_decode_picks(tmp_path, gop):
    path = media.write_clip(tmp_path / "clip.mp4", 4.0, fps=25, gop=gop, size=(96, 64), pattern="city")
    clip = decode_clip(path, FrameSampling(min_keyframes=5, fallback_frames=8))
    assert len(clip.frames) == 8
    np.testing.assert_array_equal(clip.frames, media.full_decode_uniform(path, 8))


def test_no_audio_too_short_and_audio_only(tmp_path):
    silent = decode_clip(media.write_clip(tmp_path / "silent.mp4", 1.5, tone_hz=None, size=(96, 64)))
    assert silent.status == Status.NO_AUDIO and silent.audio is None and silent.frames is not None
    short = decode_clip(media.write_clip(tmp_path / "short.mp4", 0.5, size=(96, 64)))
    assert short.status == Status.TOO_SHORT and "shorter than one" in short.reason
    song = decode_clip(media.write_audio_only(tmp_path / "song.m4a", 2.0))
    assert song.status == Status.NO_VIDEO and song.frames is None and len(song.audio) > 15600


@pytest.mark.parametrize("make", [
    lambda d: media.write_zero_bytes(d / "zero.mp4"),
    lambda d: media.write_random_bytes(d / "random.mp4"),
    lambda d: media.write_text_file(d / "text.mkv"),
])
def test_unreadable_media_is_corrupt_with_a_reason(tmp_path, make):
    clip = decode_clip(make(tmp_path))
    assert clip.status == Status.CORRUPT and clip.reason and clip.frames is None


def test_truncated_file_keeps_what_decoded(tmp_path):
    full = media.write_clip(tmp_path / "full.mp4", 3.0, size=(96, 64))
    clip = decode_clip(media.write_truncated(full, tmp_path / "cut.mp4", 0.5))
    assert clip.status in (Status.TRUNCATED, Status.CORRUPT)
    if clip.status == Status.TRUNCATED:
        assert clip.frames is not None or clip.audio is not None


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_permission_denied_is_unreadable(tmp_path):
    path = media.write_clip(tmp_path / "locked.mp4", 1.0, size=(96, 64))
    path.chmod(0)
    assert decode_clip(path).status == Status.UNREADABLE


def test_unicode_and_space_in_path(tmp_path):
    path = media.write_clip(tmp_path / "été à la plage.mp4", 1.2, size=(96, 64))
    assert decode_clip(path).status == Status.OK


def test_a_decode_that_ends_past_the_time_limit_is_timed_out(tmp_path):
    # A pool's watchdog may look too late to stop a quick decode; the limit holds anyway.
    clip = media.write_clip(tmp_path / "clip.mp4", 1.2, pattern="ocean", tone_hz=220.0, size=(64, 48), seed=1)
    late = decode_in_time(clip, FrameSampling(), DecodeLimits(seconds_per_file=1e-9))
    assert late.status == Status.TIMED_OUT and late.frames is None
    assert late.reason == "decoding took longer than 1e-09 s (--file-timeout)"
    assert decode_in_time(clip, FrameSampling(), DecodeLimits()).status == Status.OK
