"""Synthetic media for tests and the bundled samples, written with PyAV's FFmpeg.

No ffmpeg command-line tool is needed: every clip is encoded in-process. Content is
deterministic given ``seed`` (pixels and samples; container bytes are also stable for
a given PyAV/FFmpeg build because encoders run single-threaded with bit-exact flags).

Containers and codecs are chosen from the file suffix (see ``CODECS``):

======  ============  ==========================
suffix  video         audio
======  ============  ==========================
.mp4    libx264       aac
.mov    libx264       aac
.mkv    libx264       libopus (48 kHz)
.webm   libvpx-vp9    libopus (48 kHz)
.avi    mpeg4         libmp3lame
======  ============  ==========================
"""

from __future__ import annotations

import math
import shutil
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

__all__ = [
    "AUDIO_CODECS",
    "CODECS",
    "PATTERNS",
    "Pattern",
    "copy_clip",
    "set_declared_duration",
    "set_rotation",
    "write_10bit_clip",
    "write_audio_only",
    "write_clip",
    "write_corrupted_middle",
    "write_multi_audio_clip",
    "write_no_streams",
    "write_random_bytes",
    "write_text_file",
    "write_truncated",
    "write_vfr_clip",
    "write_y4m_header",
    "write_zero_bytes",
]

#: suffix -> (video encoder, audio encoder)
CODECS: dict[str, tuple[str, str]] = {
    ".mp4": ("libx264", "aac"),
    ".mov": ("libx264", "aac"),
    ".mkv": ("libx264", "libopus"),
    ".webm": ("libvpx-vp9", "libopus"),
    ".avi": ("mpeg4", "libmp3lame"),
}

#: audio-only suffix -> audio encoder
AUDIO_CODECS: dict[str, str] = {
    ".m4a": "aac",
    ".mp4": "aac",
    ".mp3": "libmp3lame",
    ".wav": "pcm_s16le",
    ".ogg": "libopus",
    ".opus": "libopus",
    ".mka": "libopus",
    ".mkv": "libopus",
    ".flac": "flac",
}

Texture = Literal["plain", "waves", "flicker", "leaves", "grid"]


@dataclass(frozen=True)
class Pattern:
    """Visual content of a synthetic clip.

    ``base``/``accent`` are RGB colours of the background and the moving shapes;
    ``shapes`` discs move at ``speed`` pixels per frame; ``texture`` adds structure
    (``waves``: drifting horizontal bands, ``flicker``: per-frame brightness jumps and
    a hot bottom edge, ``leaves``: fixed blotches, ``grid``: lit windows);
    ``grain`` is per-pixel noise (0..255 scale).
    """

    base: tuple[int, int, int] = (128, 128, 128)
    accent: tuple[int, int, int] = (240, 240, 240)
    shapes: int = 3
    speed: float = 2.0
    texture: Texture = "plain"
    grain: float = 4.0


#: Named patterns, one per sample topic plus a neutral one.
PATTERNS: dict[str, Pattern] = {
    "plain": Pattern(),
    "ocean": Pattern((20, 70, 170), (200, 230, 255), 2, 0.8, "waves", 3.0),
    "fire": Pattern((200, 60, 10), (255, 200, 40), 5, 2.5, "flicker", 10.0),
    "forest": Pattern((30, 110, 40), (150, 200, 60), 3, 0.6, "leaves", 5.0),
    "city": Pattern((95, 95, 100), (250, 230, 120), 4, 6.0, "grid", 4.0),
}


def _texture(p: Pattern, t: int, h: int, w: int, fixed: np.ndarray,
             rng: np.random.Generator) -> np.ndarray:
    """Brightness gain (h, w) for frame ``t`` of a texture."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if p.texture == "waves":
        drift = 0.02 * p.speed * t
        phase = 2 * math.pi * (yy / 24.0 + 0.15 * np.sin(xx / 20.0) - drift)
        return 1.0 + 0.3 * np.sin(phase)
    if p.texture == "flicker":
        return (0.75 + 0.5 * rng.random()) * (0.6 + 0.6 * yy / h)
    if p.texture == "leaves":
        return 1.0 + 0.35 * fixed
    if p.texture == "grid":
        lit = ((yy % 16) < 6) & ((xx % 14) < 6) & (fixed > 0)
        return np.where(lit, 1.8, 0.8 + 0.1 * np.sin(yy / 9.0))
    return np.ones((h, w), np.float32)


def _frames(p: Pattern, n: int, size: tuple[int, int], seed: int):
    """Yield ``n`` RGB uint8 frames (h, w, 3) of pattern ``p``."""
    w, h = size
    rng = np.random.default_rng(seed)
    fixed = rng.standard_normal((h // 8 + 1, w // 8 + 1)).astype(np.float32)
    fixed = np.kron(fixed, np.ones((8, 8), np.float32))[:h, :w]
    pos = rng.random((p.shapes, 2)) * (w, h)
    ang = rng.random(p.shapes) * 2 * math.pi
    vel = np.stack([np.cos(ang), np.sin(ang)], 1) * p.speed
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.asarray(p.base, np.float32)
    accent = np.asarray(p.accent, np.float32)
    radius = max(3.0, min(w, h) / 10)
    for t in range(n):
        img = _texture(p, t, h, w, fixed, rng)[..., None] * base
        for x, y in pos:
            disc = (xx - x) ** 2 + (yy - y) ** 2 < radius**2
            img[disc] = accent
        if p.grain:
            img += rng.normal(0, p.grain, img.shape).astype(np.float32)
        pos = (pos + vel) % (w, h)
        yield np.clip(img, 0, 255).astype(np.uint8)


#: channel count -> FFmpeg layout name
LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def _audio(seconds: float, rate: int, channels: int, tone_hz: float, noise: float,
           pulse_hz: float, crackle: float, seed: int, equal_channels: bool = False) -> np.ndarray:
    """Float32 samples (channels, n) in [-1, 1]: tone, gating, noise, clicks."""
    rng = np.random.default_rng(seed + 1)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    sig = 0.4 * np.sin(2 * math.pi * tone_hz * t)
    if pulse_hz > 0:  # short rising chirps/beeps: gate + upward glide within each pulse
        frac = (t * pulse_hz) % 1.0
        sig = 0.4 * np.sin(2 * math.pi * tone_hz * (t + 0.5 * frac * t)) * (frac < 0.35)
    sig = sig + noise * rng.standard_normal(n)
    if crackle > 0:
        clicks = rng.random(n) < 30.0 / rate
        sig = sig + crackle * clicks * rng.uniform(-1, 1, n)
    out = np.repeat(sig[None, :], channels, 0)
    if channels > 1 and not equal_channels:  # small inter-channel difference so stereo is really stereo
        out[1:] *= 0.8
    return np.clip(out, -1, 1).astype(np.float32)


def _pick_rate(codec: str, rate: int) -> int:
    """``rate`` if the encoder supports it, else its nearest supported rate."""
    rates = av.codec.Codec(codec, "w").audio_rates
    if not rates or rate in rates:
        return rate
    return min(rates, key=lambda r: (abs(r - rate), -r))


def _add_audio(out: av.container.OutputContainer, codec: str, rate: int, channels: int):
    """Add an audio stream; returns (stream, rate, channels) actually used."""
    rate = _pick_rate(codec, rate)
    if codec == "vorbis":  # FFmpeg's native Vorbis encoder is stereo-only
        channels = 2
    stream = out.add_stream(codec, rate=rate)
    stream.layout = LAYOUTS[channels]
    stream.codec_context.thread_count = 1
    if av.codec.Codec(codec, "w").experimental:  # e.g. FFmpeg's native vorbis encoder
        stream.codec_context.options = {"strict": "experimental"}
    return stream, rate, channels


def _encode_audio(out: av.container.OutputContainer, stream, samples: np.ndarray,
                  rate: int) -> None:
    """Encode planar float samples (channels, n) in 1024-sample frames, then flush."""
    layout = LAYOUTS[samples.shape[0]]
    for start in range(0, samples.shape[1], 1024):
        chunk = np.ascontiguousarray(samples[:, start:start + 1024])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _open_out(path: Path, faststart: bool) -> av.container.OutputContainer:
    """Open an output container with bit-exact, optionally fast-start options."""
    opts = {"fflags": "+bitexact"}
    if faststart and path.suffix.lower() in (".mp4", ".mov", ".m4a"):
        opts["movflags"] = "+faststart"
    return av.open(str(path), "w", container_options=opts)


def write_clip(path: str | Path, seconds: float, *, size: tuple[int, int] = (160, 120),
               fps: int = 15, pattern: Pattern | str = "plain",
               tone_hz: float | None = 440.0, noise: float = 0.0, pulse_hz: float = 0.0,
               crackle: float = 0.0, sample_rate: int = 44100, channels: int = 1,
               gop: int | None = None, vcodec: str | None = None,
               acodec: str | None = None, faststart: bool = True,
               seed: int = 0, equal_channels: bool = False, lossless: bool = False) -> Path:
    """Write a synthetic video clip and return its path.

    ``round(seconds * fps)`` frames (at least one) of ``pattern`` (a ``Pattern`` or a
    name in ``PATTERNS``) at ``size`` (width, height). Audio: a ``tone_hz`` sine plus
    white ``noise`` (std), optionally gated into rising chirps at ``pulse_hz`` and with
    ``crackle`` clicks, at ``sample_rate`` (moved to the encoder's nearest supported
    rate, e.g. 48 kHz for Opus) with 1 or 2 ``channels`` (FFmpeg's native ``vorbis``
    encoder is stereo-only, so it always gets 2); ``tone_hz=None`` writes no
    audio stream. Codecs come from the suffix (``CODECS``) unless ``vcodec``/``acodec``
    are given. ``gop`` sets the keyframe interval in frames (scene-cut keyframes off for
    x264, so a clip has ``ceil(frames / gop)`` keyframes); ``None`` keeps the encoder
    default (x264: 250, so short clips get one keyframe). ``lossless`` (x264 only) decodes to
    exactly the frames written: x264's lossy output here is not the same from run to run
    (a few of 30 encodes of the same frames differ, by up to 115 in a pixel), which a test
    that trains on the decoded frames would inherit. ``faststart`` puts the MP4/MOV
    index first, so a truncated file still opens and decodes partway (stopping early,
    with or without an ``InvalidDataError`` depending on where the cut falls); without
    it a truncated MP4 loses its index and fails at open ("moov atom not found").
    """
    path = Path(path)
    dv, da = CODECS.get(path.suffix.lower(), CODECS[".mp4"])
    pat = PATTERNS[pattern] if isinstance(pattern, str) else pattern
    n = max(1, round(seconds * fps))
    with _open_out(path, faststart) as out:
        vs = out.add_stream(vcodec or dv, rate=fps)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        vs.codec_context.thread_count = 1
        opts = {"crf": "30"} if (vcodec or dv) in ("libx264", "libvpx-vp9") else {}
        if lossless:
            assert (vcodec or dv) == "libx264", "lossless clips are written with x264"
            opts = {"qp": "0"}
        if gop is not None:
            vs.codec_context.gop_size = gop
            if (vcodec or dv) == "libx264":
                opts["x264-params"] = f"scenecut=0:min-keyint={gop}"
        vs.codec_context.options = opts
        audio = None
        if tone_hz is not None:
            audio = _add_audio(out, acodec or da, sample_rate, channels)
        for i, rgb in enumerate(_frames(pat, n, size, seed)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        if audio is not None:
            stream, rate, chans = audio
            samples = _audio(n / fps, rate, chans, tone_hz, noise, pulse_hz,
                             crackle, seed, equal_channels)
            _encode_audio(out, stream, samples, rate)
    return path


def write_audio_only(path: str | Path, seconds: float, *, tone_hz: float = 440.0,
                     noise: float = 0.0, sample_rate: int = 44100, channels: int = 1,
                     seed: int = 0, equal_channels: bool = False) -> Path:
    """Write a file with one audio stream and no video (codec from ``AUDIO_CODECS``);
    ``channels`` and ``equal_channels`` as in ``write_clip``."""
    path = Path(path)
    codec = AUDIO_CODECS.get(path.suffix.lower(), "aac")
    with _open_out(path, True) as out:
        stream, rate, chans = _add_audio(out, codec, sample_rate, channels)
        samples = _audio(seconds, rate, chans, tone_hz, noise, 0.0, 0.0, seed, equal_channels)
        _encode_audio(out, stream, samples, rate)
    return path


def write_truncated(src: str | Path, dst: str | Path, fraction: float) -> Path:
    """Copy the first ``fraction`` (0..1) of ``src``'s bytes to ``dst``."""
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def write_zero_bytes(path: str | Path) -> Path:
    """Create an empty file (0 bytes) at ``path``."""
    path = Path(path)
    path.write_bytes(b"")
    return path


def write_random_bytes(path: str | Path, n: int = 4096, seed: int = 0) -> Path:
    """Write ``n`` pseudo-random bytes (deterministic given ``seed``)."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).bytes(n))
    return path


def write_text_file(path: str | Path, text: str = "This is not a video.\n") -> Path:
    """Write plain UTF-8 text, typically under a video suffix such as ``.mp4``."""
    path = Path(path)
    path.write_text(text, encoding="utf-8")
    return path


def copy_clip(src: str | Path, dst: str | Path) -> Path:
    """Byte-identical copy (duplicate content under another name)."""
    return Path(shutil.copyfile(src, dst))


# Hostile media: files that are valid containers but odd, or damaged in specific ways.


def write_no_streams(path: str | Path) -> Path:
    """A valid MP4 with no tracks at all: an `ftyp` box and a `moov` holding only `mvhd`."""
    mvhd = struct.pack(">I4sIIIII", 108, b"mvhd", 0, 0, 0, 1000, 0)
    mvhd += struct.pack(">IH10x9I24xI", 0x00010000, 0x0100,
                        0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000, 1)
    moov = struct.pack(">I4s", 8 + len(mvhd), b"moov") + mvhd
    ftyp = struct.pack(">I4s4sI4s", 20, b"ftyp", b"isom", 512, b"isom")
    path = Path(path)
    path.write_bytes(ftyp + moov)
    return path


def write_y4m_header(path: str | Path, width: int, height: int, frames: int = 0,
                     fps: int = 25) -> Path:
    """A raw YUV4MPEG2 file of ``frames`` grey 4:2:0 frames; with ``frames=0`` only the
    header, so any resolution can be declared at no cost."""
    path = Path(path)
    frame = b"FRAME\n" + bytes([128]) * (width * height * 3 // 2)
    with open(path, "wb") as handle:
        handle.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            handle.write(frame)
    return path


def write_vfr_clip(path: str | Path, gaps_ms: list[int], *, size: tuple[int, int] = (96, 64),
                   seed: int = 0) -> Path:
    """A clip whose frames are ``gaps_ms`` milliseconds apart (variable frame rate), every
    frame a keyframe, with a 440 Hz tone as long as the clip."""
    path = Path(path)
    pts = np.concatenate([[0], np.cumsum(gaps_ms)]).astype(int)
    with _open_out(path, True) as out:
        vs = out.add_stream("libx264", rate=1000)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        vs.time_base = Fraction(1, 1000)
        vs.codec_context.thread_count = 1
        vs.codec_context.options = {"crf": "30", "x264-params": "keyint=1:scenecut=0"}
        stream, rate, chans = _add_audio(out, "aac", 44100, 1)
        for i, rgb in enumerate(_frames(PATTERNS["ocean"], len(pts), size, seed)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = int(pts[i]), Fraction(1, 1000)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        seconds = (pts[-1] + gaps_ms[-1]) / 1000
        _encode_audio(out, stream, _audio(seconds, rate, chans, 440.0, 0.0, 0.0, 0.0, seed), rate)
    return path


def write_multi_audio_clip(path: str | Path, seconds: float, tones_hz: list[float], *,
                           size: tuple[int, int] = (96, 64), seed: int = 0) -> Path:
    """A clip (suffix .mkv or .mp4) with one audio track per tone in ``tones_hz``."""
    path = Path(path)
    fps = 15
    with _open_out(path, True) as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        vs.codec_context.thread_count = 1
        tracks = [_add_audio(out, "aac", 44100, 1) for _ in tones_hz]
        n = max(1, round(seconds * fps))
        for i, rgb in enumerate(_frames(PATTERNS["city"], n, size, seed)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        for (stream, rate, chans), tone in zip(tracks, tones_hz):
            _encode_audio(out, stream, _audio(n / fps, rate, chans, tone, 0.0, 0.0, 0.0, seed), rate)
    return path


def write_10bit_clip(path: str | Path, seconds: float, *, size: tuple[int, int] = (96, 64),
                     seed: int = 0) -> Path:
    """A 10-bit 4:2:0 clip (FFV1, lossless, every frame a keyframe) with no audio."""
    path = Path(path)
    fps = 10
    with _open_out(path, False) as out:
        vs = out.add_stream("ffv1", rate=fps)
        vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p10le"
        n = max(1, round(seconds * fps))
        for i, rgb in enumerate(_frames(PATTERNS["forest"], n, size, seed)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p10le")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
    return path


def _mp4_box_payload(data: bytes | bytearray, box: bytes) -> int:
    """Offset just past the type field of the first ``box`` (a naive scan: enough for the
    files this module writes)."""
    return data.index(box) + 4


def set_rotation(src: str | Path, dst: str | Path, degrees: int) -> Path:
    """Copy an MP4/MOV, giving its first track a display matrix that turns the picture
    ``degrees`` clockwise, as a phone recording in portrait does (90)."""
    data = bytearray(Path(src).read_bytes())
    at = _mp4_box_payload(data, b"tkhd")
    version = data[at]
    matrix_at = at + (52 if version == 1 else 40)
    cos, sin = round(math.cos(math.radians(degrees))), round(math.sin(math.radians(degrees)))
    one = 0x10000
    struct.pack_into(">9i", data, matrix_at, cos * one, sin * one, 0, -sin * one, cos * one, 0,
                     0, 0, 0x40000000)
    dst = Path(dst)
    dst.write_bytes(bytes(data))
    return dst


def set_declared_duration(src: str | Path, dst: str | Path, seconds: float) -> Path:
    """Copy a Matroska file whose header claims ``seconds`` of duration while its frames
    stay as they were: a lying header. (Assumes the muxer's 1 ms timecode scale.)"""
    data = bytearray(Path(src).read_bytes())
    marker = b"\x44\x89\x88"  # EBML id of Segment/Info/Duration, then "8-byte float"
    at = data.index(marker) + len(marker)
    struct.pack_into(">d", data, at, seconds * 1000.0)
    dst = Path(dst)
    dst.write_bytes(bytes(data))
    return dst


def write_corrupted_middle(src: str | Path, dst: str | Path, start: float, length: float,
                           seed: int = 0) -> Path:
    """Copy ``src`` with the bytes from fraction ``start`` to ``start + length`` replaced
    by random bytes: a stream that decodes, then fails part-way."""
    data = bytearray(Path(src).read_bytes())
    first, last = int(len(data) * start), int(len(data) * (start + length))
    data[first:last] = np.random.default_rng(seed).bytes(last - first)
    dst = Path(dst)
    dst.write_bytes(bytes(data))
    return dst


def full_decode_uniform(path: Path, count: int) -> np.ndarray:
    """The uniform fallback's frames as a full decode picks them, (count, H, W, 3) RGB: the
    first frame at or after each of count evenly spaced times (the reference the seeking
    fallback must equal, in tests and in bench/fallback_decode.py)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = container.duration / av.time_base
        targets = [(i + 0.5) * duration / count for i in range(count)]
        picked = []
        for frame in container.decode(stream):
            while len(picked) < count and frame.time + 1e-6 >= targets[len(picked)]:
                picked.append(frame.to_ndarray(format="rgb24"))
            if len(picked) == count:
                break
        return np.stack(picked)
