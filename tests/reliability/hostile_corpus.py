"""A folder of hostile media: every file a user upload can be, with the statuses phr may
give it. Everything is generated here with PyAV or by editing bytes."""

from __future__ import annotations

import os
from pathlib import Path

from support import media

# name -> statuses phr may give the file (several where FFmpeg's behaviour depends on
# exactly where a cut falls)
EXPECTED: dict[str, set[str]] = {
    "zero bytes.mp4": {"corrupt"},
    "cut at 15%.mp4": {"truncated", "corrupt"},
    "cut at 50%.mp4": {"truncated"},
    "cut at 90%.mp4": {"truncated"},
    "random bytes.avi": {"corrupt"},
    "a text file.mov": {"corrupt"},
    "no streams.mp4": {"corrupt"},
    "audio only.mp4": {"no_video"},
    "fails midway.mp4": {"truncated"},
    "absurd resolution.y4m": {"too_large"},
    "20000 frames.y4m": {"no_audio"},
    "variable frame rate.mp4": {"ok"},
    "rotated.mp4": {"ok"},
    "10-bit.mkv": {"no_audio"},
    "two audio tracks.mkv": {"ok"},
    "claims ten hours.mkv": {"ok"},
    "new\nline.mp4": {"ok"},
    "spaces and ünïcødé 🎬.webm": {"ok"},
}
# Present in the folder but not videos phr should pick up (and must not hang on).
IGNORED = ("loop", "self loop.mp4")


def write_corpus(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    clip = media.write_clip(root.parent / "source.mp4", 2.0, pattern="city", size=(160, 96), gop=5)
    media.write_zero_bytes(root / "zero bytes.mp4")
    for percent in (15, 50, 90):
        media.write_truncated(clip, root / f"cut at {percent}%.mp4", percent / 100)
    media.write_random_bytes(root / "random bytes.avi")
    media.write_text_file(root / "a text file.mov")
    media.write_no_streams(root / "no streams.mp4")
    media.write_audio_only(root / "audio only.mp4", 2.0)
    media.write_corrupted_middle(clip, root / "fails midway.mp4", 0.5, 0.1)
    media.write_y4m_header(root / "absurd resolution.y4m", 12000, 8000)
    media.write_y4m_header(root / "20000 frames.y4m", 16, 16, frames=20000, fps=1000)
    media.write_vfr_clip(root / "variable frame rate.mp4", [30, 200, 10, 500, 40, 1000, 70])
    media.set_rotation(clip, root / "rotated.mp4", 90)
    media.write_10bit_clip(root / "10-bit.mkv", 1.0)
    media.write_multi_audio_clip(root / "two audio tracks.mkv", 2.0, [300, 900])
    long_source = media.write_clip(root.parent / "source.mkv", 2.0, pattern="ocean", size=(96, 64), gop=5)
    media.set_declared_duration(long_source, root / "claims ten hours.mkv", 36000)
    media.write_clip(root / "new\nline.mp4", 1.5, pattern="fire", size=(96, 64), seed=3)
    media.write_clip(root / "spaces and ünïcødé 🎬.webm", 1.5, pattern="forest", size=(96, 64))
    os.symlink(".", root / "loop")
    os.symlink("self loop.mp4", root / "self loop.mp4")
    return root
