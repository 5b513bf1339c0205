"""Decoding with PyAV: sampled video frames and 16 kHz mono audio from one file.

Frames are keyframes (the decoder skips everything else, which is ~35x cheaper than a full
decode); a clip with too few keyframes is sampled uniformly, decoding only what leads to
each sampled time; a long video, or one with a great many keyframes, is sampled by seeking.
Frames leave at their full size, RGB and upright (phones record portrait video with a
rotation): the visual encoder resizes them with its weights' own transforms. Audio is mixed
to mono as VGGish's reference does (the mean of the channels, at the native rate), then
resampled. Each result carries a status and a one-line reason.

`decode_guarded` is what worker processes run: it also enforces `DecodeLimits`, the guards
against hostile files (pixel count, memory); the per-file time limit is enforced by the
pool that runs it (see `extract.local.decode_in_pool`).
"""

from __future__ import annotations

import concurrent.futures as futures
import resource
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pebble

from phr_cli.data.decode_options import DecodeLimits, FrameSampling
from phr_cli.data.statuses import SEVERITY, Status


def limit_memory(memory_bytes: int) -> None:
    """Cap this process's address space, so a hostile file fails to allocate instead of
    exhausting the machine. Run in each decoding worker when it starts."""
    if memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))


def decode_guarded(path: Path, sampling: FrameSampling, limits: DecodeLimits) -> DecodedClip:
    """`decode_clip` within `limits`, and never raising for what the file contains."""
    try:
        return decode_clip(path, sampling, limits.max_pixels)
    except MemoryError:
        return DecodedClip(None, None, 0.0, Status.CORRUPT,
                           f"decoding needed more than the {limits.memory_bytes >> 20} MiB allowed")


def timed_out(limits: DecodeLimits) -> DecodedClip:
    """What a file whose decoding ran past `limits.seconds_per_file` gets."""
    return DecodedClip(None, None, 0.0, Status.TIMED_OUT,
                       f"decoding took longer than {limits.seconds_per_file:g} s (--file-timeout)")


def decode_in_time(path: Path, sampling: FrameSampling, limits: DecodeLimits) -> DecodedClip:
    """`decode_guarded` for a worker pool that stops a decoder past the time limit. The
    pool's watchdog looks only every tenth of a second or so, so a decode that ends past
    the limit before it looks is timed out here: the limit holds whatever the watchdog's timing."""
    started = time.monotonic()
    decoded = decode_guarded(path, sampling, limits)
    return timed_out(limits) if time.monotonic() - started > limits.seconds_per_file else decoded


@dataclass
class DecodedClip:
    frames: np.ndarray | None  # (F, H, W, 3) uint8 RGB at the upright frame's size, None when no frame
    audio: np.ndarray | None  # float32 mono at sampling.sample_rate, None when absent
    duration: float
    status: Status
    reason: str
    n_keyframes: int = 0


class _Problems:
    """Collects what went wrong while decoding, then names the worst."""

    def __init__(self) -> None:
        self.found: list[tuple[Status, str]] = []

    def add(self, status: Status, reason: str) -> None:
        self.found.append((status, reason))

    def verdict(self) -> tuple[Status, str]:
        if not self.found:
            return Status.OK, ""
        worst = min(self.found, key=lambda item: SEVERITY.index(item[0]))[0]
        return worst, "; ".join(reason for _, reason in self.found)


def decode_clip(path: Path, sampling: FrameSampling = FrameSampling(),
                max_pixels: int = DecodeLimits.max_pixels) -> DecodedClip:
    """Decode sampled frames and audio; never raises for bad media, reports a status."""
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except PermissionError as error:
        return DecodedClip(None, None, 0.0, Status.UNREADABLE, f"cannot open: {error.strerror}")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        return DecodedClip(None, None, 0.0, Status.CORRUPT, f"not a readable media file: {_message(error)}")
    problems = _Problems()
    with container:
        duration = _duration(container)
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        if video is None and audio is None:
            return DecodedClip(None, None, duration, Status.CORRUPT, "no video or audio stream")
        frames, n_keyframes = (None, 0)
        if video is not None and video.codec_context.width * video.codec_context.height > max_pixels:
            problems.add(Status.TOO_LARGE, f"frames of {video.codec_context.width}x{video.codec_context.height} "
                         f"exceed the {max_pixels:,}-pixel limit; visual features skipped")
        elif video is not None:
            frames, n_keyframes = _sample_frames(container, video, duration, sampling, problems)
        else:
            problems.add(Status.NO_VIDEO, "no video stream")
        samples = None
        if audio is not None:
            samples = _read_audio(container, audio, sampling, problems)
        else:
            problems.add(Status.NO_AUDIO, "no audio stream")
    if frames is None and samples is None:
        status, reason = problems.verdict()
        status = status if status in (Status.TOO_LARGE, Status.TRUNCATED, Status.UNREADABLE) else Status.CORRUPT
        return DecodedClip(None, None, duration, status, reason or "nothing decodable")
    if samples is not None and len(samples) < sampling.min_audio_samples:
        problems.add(Status.TOO_SHORT, f"audio {len(samples) / sampling.sample_rate:.2f} s is shorter "
                     f"than one {sampling.min_audio_samples / sampling.sample_rate:.3f} s example")
    status, reason = problems.verdict()
    return DecodedClip(frames, samples, duration, status, reason, n_keyframes)


def _message(error: Exception) -> str:
    text = getattr(error, "strerror", None) or str(error)
    return " ".join(str(text).split())


def _duration(container: av.container.InputContainer) -> float:
    if container.duration is not None:
        return container.duration / av.time_base
    durations = [
        float(s.duration * s.time_base) for s in container.streams if s.duration and s.time_base
    ]
    return max(durations, default=0.0)


def _rgb(frames: list[av.VideoFrame]) -> np.ndarray:
    """Frames as (F, H, W, 3) uint8 RGB, upright, at the first frame's size (a stream that
    changes resolution midway is scaled to it; nothing else is resized here)."""
    width, height = frames[0].width, frames[0].height
    # The display matrix's angle is counter-clockwise; every frame of a stream shares it.
    quarter_turns = round(frames[0].rotation / 90) % 4
    rgb = np.stack([frame.to_ndarray(format="rgb24", width=width, height=height) for frame in frames])
    return np.ascontiguousarray(np.rot90(rgb, quarter_turns, axes=(1, 2)) if quarter_turns else rgb)


def _evenly(items: list, count: int) -> list:
    if len(items) <= count:
        return items
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in picks]


def _sample_frames(container, stream, duration, sampling, problems):
    if duration > sampling.long_video_seconds:
        frames = _seek_keyframes(container, stream, duration, sampling, problems)
        return (_rgb(frames) if frames else None), len(frames)
    keyframes = _decode_keyframes(container, stream, sampling, problems)
    if keyframes is None:  # too many to hold: sample them by time instead
        frames = _seek_keyframes(container, stream, duration, sampling, problems)
        return (_rgb(frames) if frames else None), sampling.max_keyframes + 1
    n_keyframes = len(keyframes)
    if n_keyframes < sampling.min_keyframes:
        times = [frame.time for frame in keyframes if frame.time is not None]
        uniform = _decode_uniform(container, stream, duration, times, sampling, problems)
        if len(uniform) > n_keyframes:
            keyframes = uniform
    frames = _evenly(keyframes, sampling.max_frames)
    if not frames:
        problems.add(Status.CORRUPT, "no decodable video frame")
        return None, n_keyframes
    return _rgb(frames), n_keyframes


@contextmanager
def _keyframes_only(stream):
    """Make the decoder skip every frame but keyframes (no full decode), then restore it."""
    stream.codec_context.skip_frame = "NONKEY"
    try:
        yield
    finally:
        stream.codec_context.skip_frame = "DEFAULT"


def _decode_keyframes(container, stream, sampling, problems) -> list[av.VideoFrame] | None:
    """Every keyframe, or None when there are more than `max_keyframes` (memory stays bounded).

    Kept as decoded (YUV, about half the bytes of RGB) until the ones used are chosen."""
    frames: list[av.VideoFrame] = []
    with _keyframes_only(stream):
        try:
            for frame in container.decode(stream):
                if len(frames) == sampling.max_keyframes:
                    return None
                frames.append(frame)
        except av.FFmpegError as error:
            problems.add(Status.TRUNCATED, f"video decoding stopped after {len(frames)} keyframes: {_message(error)}")
    return frames


def _decode_uniform(container, stream, duration, keyframe_times, sampling, problems) -> list[av.VideoFrame]:
    """At each of `fallback_frames` evenly spaced times, the frame a full decode shows there
    (the first at or after it), decoding only what leads to it: from the last keyframe
    before the time (seeking there when it lies ahead of the decoder), and skipping the
    frames that no other frame refers to and that are shown before the time."""
    count = sampling.fallback_frames
    context = stream.codec_context
    targets = [(i + 0.5) * duration / count for i in range(count)] if duration > 0 else []
    frames: list[av.VideoFrame] = []
    reached = -np.inf  # how far the decoder has come, in seconds
    packets = None
    try:
        while len(frames) < count:
            target = targets[len(frames)] if targets else 0.0
            start = max((t for t in keyframe_times if t <= target + 1e-6), default=0.0)
            if packets is None or start > reached + 1e-6:
                container.seek(round(start / stream.time_base), stream=stream, backward=True)
                packets = container.demux(stream)
                reached = start
            packet = next(packets, None)
            if packet is None:
                break
            early = (bool(targets) and packet.pts is not None
                     and float(packet.pts * stream.time_base) < target - 1e-6)
            context.skip_frame = "NONREF" if early else "DEFAULT"
            for frame in packet.decode():
                time = frame.time if frame.time is not None else 0.0
                reached = max(reached, time)
                if not targets:  # unknown duration: the first frames it has
                    frames.append(frame)
                while targets and len(frames) < count and time + 1e-6 >= targets[len(frames)]:
                    frames.append(frame)
    except av.FFmpegError as error:
        if not frames:
            problems.add(Status.TRUNCATED, f"video decoding failed: {_message(error)}")
    finally:
        context.skip_frame = "DEFAULT"
    return frames[:count]


def _seek_keyframes(container, stream, duration, sampling, problems) -> list[av.VideoFrame]:
    """For long videos: the keyframe at or before each of `max_frames` evenly spaced times."""
    frames: list[av.VideoFrame] = []
    with _keyframes_only(stream):
        try:
            for i in range(sampling.max_frames):
                seconds = (i + 0.5) * duration / sampling.max_frames
                container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
                frame = next(container.decode(stream), None)
                if frame is not None:
                    frames.append(frame)
        except av.FFmpegError as error:
            problems.add(Status.TRUNCATED, f"seeking stopped after {len(frames)} frames: {_message(error)}")
    return frames


def _read_audio(container, stream, sampling, problems) -> np.ndarray | None:
    """Mono float32 at `sampling.sample_rate`, mixed as VGGish's reference mixes: the mean of
    the channels at the native rate, then resampled. (libswresample's own downmix weighs
    the channels: stereo came out sqrt(2) louder, 5.1 louder still.)"""
    to_float = av.AudioResampler(format="fltp")  # the decoded layout and rate, as planar float
    limit = sampling.max_audio_seconds
    mixed: list[np.ndarray] = []
    rate, total = stream.rate or sampling.sample_rate, 0

    def mix(planar: av.AudioFrame) -> None:
        nonlocal rate, total
        mixed.append(planar.to_ndarray().mean(axis=0, dtype=np.float64).astype(np.float32))
        rate, total = planar.sample_rate, total + planar.samples

    try:
        _rewind(container, stream)
        for frame in container.decode(stream):
            frame.pts = None  # the resampler keeps its own timeline; gaps must not shift it
            for planar in to_float.resample(frame):
                mix(planar)
            if total >= limit * rate:
                break
        for planar in to_float.resample(None):
            mix(planar)
    except av.FFmpegError as error:
        problems.add(Status.TRUNCATED, f"audio decoding stopped at {total / rate:.2f} s: {_message(error)}")
    if not mixed:
        problems.add(Status.NO_AUDIO, "audio stream has no decodable samples")
        return None
    mono = _resample(np.concatenate(mixed)[: int(limit * rate)], rate, sampling.sample_rate)
    return mono[: int(limit * sampling.sample_rate)]


def _rewind(container, stream) -> None:
    """Back to the stream's first packet. A seek to 0 is not enough: AAC in MP4 starts with
    priming samples at a negative time, and a decoder started after them gave audio
    shifted by 1,024 samples (an early time goes to the first packet instead)."""
    try:
        container.seek(-1, stream=stream)
    except av.FFmpegError:  # a demuxer that refuses times before the start
        container.seek(0, stream=stream)


def _resample(mono: np.ndarray, rate: int, target: int) -> np.ndarray:
    """libswresample's resampling (bench/README.md measures it against resampy, the
    reference's: they differ only in the top mel band), the whole signal as one frame.

    One frame, alive until the resampler is flushed: frames made from arrays and dropped
    while the resampler still held them came out as other samples (PyAV 18)."""
    frame = av.AudioFrame.from_ndarray(mono[None, :], format="fltp", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
    out = resampler.resample(frame) + resampler.resample(None)
    return np.concatenate([part.to_ndarray().reshape(-1) for part in out]).astype(np.float32, copy=False)


def result_from_pool(future: futures.Future, limits: DecodeLimits) -> DecodedClip:
    """The clip a decoding process (a pebble pool's future) gave, or a status saying why it gave none."""
    try:
        return future.result()
    except TimeoutError:
        return timed_out(limits)
    except pebble.ProcessExpired as error:
        cause = (f"signal {signal.Signals(-error.exitcode).name}" if error.exitcode < 0
                 else f"exit code {error.exitcode}")
        return DecodedClip(None, None, 0.0, Status.CRASHED,
                           f"the decoding process died ({cause}); killed for memory or an FFmpeg crash")
    except Exception as error:  # one bad file must not stop the run
        return DecodedClip(None, None, 0.0, Status.CORRUPT, f"decoder error: {error}")
