"""What decoding is asked: how frames and audio are sampled from a clip (`FrameSampling`)
and the guards against hostile files (`DecodeLimits`). Apart from decode.py, so that they
import without PyAV: `phr extract`'s and `phr serve`'s options read their defaults here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FrameSampling:
    """How frames and audio are taken from a clip; recorded in the store."""

    min_keyframes: int = 4  # fewer keyframes than this: sample uniformly instead
    max_frames: int = 16  # cap on frames per clip (evenly spaced over the clip)
    fallback_frames: int = 8  # frames taken by uniform sampling
    long_video_seconds: float = 600.0  # longer videos are sampled by seeking
    max_keyframes: int = 256  # more keyframes (an all-intra file): sampled by seeking too
    max_audio_seconds: float = 600.0
    sample_rate: int = 16000
    min_audio_samples: int = 15600  # one VGGish example (0.975 s at 16 kHz)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DecodeLimits:
    """Guards against hostile files. Not recorded in the store: they never change the
    features of a file they let through."""

    seconds_per_file: float = 300.0  # enforced by the worker pool, which stops the process
    max_pixels: int = 8192 * 8192  # larger frames are not decoded (visual masked)
    memory_bytes: int = 4 << 30  # address space of a decoding process (0: unlimited)
