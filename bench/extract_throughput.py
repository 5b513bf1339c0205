"""Extraction throughput: end-to-end videos/s next to the decode-only ceiling, one run.

    python bench/extract_throughput.py sample_videos/ [--workers N] [--repeat R] [--device D]

Decode-only runs the same worker pool and sampling as `phr extract`, without encoders.
Prints one summary line per figure. Uses random encoder weights (speed does not depend
on the weight values).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from phr_cli.data.decode_options import FrameSampling
from phr_cli.data.posts import read_posts
from phr_cli.encoders.pipeline import content_key
from phr_cli.extract import ExtractOptions, extract
from phr_cli.extract.local import decode_in_pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", type=Path)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    paths = {content_key(p): p for p in read_posts(args.videos).videos() if p.exists()}
    sampling = FrameSampling()
    started = time.perf_counter()
    frames = sum(0 if clip.frames is None else len(clip.frames)
                 for _, _, clip in decode_in_pool(paths, args.workers, sampling))
    decode_seconds = time.perf_counter() - started

    scratch = Path(tempfile.mkdtemp(prefix="phr-bench-"))
    try:
        report = extract(args.videos, scratch / "features.h5", ExtractOptions(
            device=args.device, workers=args.workers, batch_size=args.batch_size,
            random_weights=True, sampling=sampling))
    finally:
        shutil.rmtree(scratch)
    decode_rate = len(paths) / decode_seconds
    print(f"decode-only: {len(paths)} videos, {frames} frames in {decode_seconds:.2f} s = "
          f"{decode_rate:.2f} videos/s ({args.workers} workers)")
    print(f"extract end-to-end: {report.extracted} videos in {report.seconds - report.load_seconds:.2f} s "
          f"after {report.load_seconds:.2f} s of model loading = "
          f"{report.videos_per_second:.2f} videos/s, {report.videos_per_second / decode_rate:.1%} "
          "of decode-only")
    rest = report.seconds - report.load_seconds - report.decode_wait_seconds - report.encode_seconds \
        - report.write_seconds - report.text_seconds
    print(f"extract time split: waiting for decoders {report.decode_wait_seconds:.2f} s, "
          f"encode {report.encode_seconds:.2f} s, write {report.write_seconds:.2f} s, "
          f"text {report.text_seconds:.2f} s, model loading "
          f"{report.load_seconds:.2f} s, the rest "
          f"{rest:.2f} s")


if __name__ == "__main__":
    main()
