"""`phr recommend` latency: cold (process start to output) and warm per clip, in one run.

    phr extract sample_videos/ --random-weights && phr train
    python bench/recommend_latency.py --clip sample_videos/fire_01.mp4 --user u5 [--repeat 5]

Warm figures use one Recommender (models loaded once) on clips that are not in the
store, split into decode, encode and score; cold runs the real command as a subprocess.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from phr_cli.recommend import Recommender, Timings


def timed_command(arguments: list[str], repeat: int) -> float:
    durations = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(arguments, check=True, capture_output=True)
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("models/gcn-phr.pt"))
    parser.add_argument("--clip", type=Path, required=True)
    parser.add_argument("--user", default=None)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    phr = [sys.executable, "-m", "phr_cli"]

    help_seconds = timed_command([*phr, "--help"], args.repeat)
    cold = timed_command([*phr, "recommend", str(args.clip), "--checkpoint", str(args.checkpoint),
                          "--json", "--device", args.device, *(["--user", args.user] if args.user else [])],
                         args.repeat)

    recommender = Recommender(args.checkpoint, args.device)
    scratch = Path(tempfile.mkdtemp(prefix="phr-latency-"))
    try:
        # A fresh copy per run with one extra byte: a new content hash, so nothing is reused.
        copies = []
        for i in range(args.repeat + 1):
            copy = scratch / f"clip{i}{args.clip.suffix}"
            shutil.copyfile(args.clip, copy)
            with open(copy, "ab") as handle:
                handle.write(bytes([i]))
            copies.append(copy)
        recommender.recommend([copies[0]], args.user)  # loads the encoders
        recommender.timings = Timings()
        started = time.perf_counter()
        for copy in copies[1:]:
            recommender.recommend([copy], args.user)
        warm = (time.perf_counter() - started) / args.repeat
    finally:
        shutil.rmtree(scratch)
    t = recommender.timings
    print(f"phr --help: {help_seconds:.2f} s (median of {args.repeat})")
    print(f"recommend cold (process start to JSON): {cold:.2f} s (median of {args.repeat})")
    print(f"recommend warm per clip: {warm * 1000:.0f} ms = decode {t.decode / args.repeat * 1000:.0f} ms "
          f"+ encode {t.encode / args.repeat * 1000:.0f} ms + score {t.score / args.repeat * 1000:.0f} ms")


if __name__ == "__main__":
    main()
