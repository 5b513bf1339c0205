"""The uniform fallback's decode time against FFmpeg's keyframe pass, on the same files, one run.

    python bench/fallback_decode.py [--seconds 10] [--size 1280x720] [--repeat 3]

Clips with 1, 2 and 3 keyframes (fewer than `FrameSampling.min_keyframes`, so phr samples
`fallback_frames` times uniformly) are written here with FFmpeg (x264, B-frames on). Per
clip, best of `--repeat`:
- keyframe pass: every keyframe decoded, the rest skipped (`skip_frame = NONKEY`), which
  phr runs first on every clip;
- full decode: every frame from the start up to the last sampled time (the fallback before
  it learned to seek), picking the first frame at or after each time;
- phr's fallback (`decode._decode_uniform`): from the last keyframe before each time,
  skipping frames nothing refers to; and whether it picks the same frames.
Times are for picking the frames (no RGB conversion, which both do for the same 8 frames).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test support: synthetic media

from phr_cli.data import decode
from phr_cli.data.decode_options import FrameSampling
from support import media


def keyframe_pass(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONKEY"
        return [frame.time for frame in container.decode(stream)]


def phr_fallback(path: Path, keyframe_times: list[float], sampling: FrameSampling) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        duration = container.duration / av.time_base
        frames = decode._decode_uniform(container, stream, duration, keyframe_times, sampling,
                                        decode._Problems())
        return [frame.to_ndarray(format="rgb24") for frame in frames]


def best(repeat: int, run) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.split("x"))
    sampling = FrameSampling()
    frames = round(args.seconds * args.fps)
    with tempfile.TemporaryDirectory(prefix="phr-fallback-") as scratch:
        for keyframes in (1, 2, 3):
            path = media.write_clip(Path(scratch) / f"{keyframes}kf.mp4", args.seconds, size=(width, height),
                                    fps=args.fps, gop=-(-frames // keyframes), pattern="city", tone_hz=None)
            key_seconds, times = best(args.repeat, lambda path=path: keyframe_pass(path))
            full_seconds, expected = best(args.repeat,
                lambda path=path: list(media.full_decode_uniform(path, sampling.fallback_frames)))
            phr_seconds, got = best(args.repeat, lambda path=path, times=times: phr_fallback(path, times, sampling))
            same = len(got) == len(expected) and all(np.array_equal(a, b) for a, b in zip(got, expected))
            print(f"{width}x{height}, {args.seconds:g} s, {len(times)} keyframe(s): keyframe pass "
                  f"{key_seconds * 1000:.0f} ms; full decode to the last time {full_seconds * 1000:.0f} ms "
                  f"= {full_seconds / key_seconds:.1f}x the keyframe pass; phr's fallback "
                  f"{phr_seconds * 1000:.0f} ms = {phr_seconds / key_seconds:.1f}x the keyframe pass, "
                  f"{phr_seconds / full_seconds:.2f}x the full decode; same {len(got)} frames: {same}")


if __name__ == "__main__":
    main()
