"""`phr recommend` latency: cold (a fresh process), warm (models loaded) and `phr --help`.

On the bundled samples, from the repository root:

    phr extract sample_videos/ --random-weights && phr train
    python bench/recommend_latency.py [--store phr_data/features.h5] [--checkpoint models/gcn-phr.pt]
        [--clip CLIP] [--user U] [--repeat N] [--device auto]

Cold: `phr recommend CLIP --user U --json` as a subprocess, from process start to its exit
(the JSON is printed last), N times. Warm: one Recommender, then recommend() on the clip N
times after a warm-up call, split into decode, encode and score. The clip must be new to
the store (else its stored features are reused and nothing is decoded); by default a fresh
synthetic 3 s clip like the samples is written to a temporary folder. --user defaults to
the checkpoint's first user. Prints one summary line per figure (medians over N).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test support: synthetic media

from phr_cli.serving.recommend import Recommender, Timings
from phr_cli.training.checkpoint import load_checkpoint
from support import media


def phr_command() -> list[str]:
    """The installed `phr` script next to this interpreter, else `python -m phr_cli`."""
    script = Path(sys.executable).with_name("phr")
    if script.exists():
        return [str(script)]
    found = shutil.which("phr")
    return [found] if found else [sys.executable, "-m", "phr_cli"]


def run_seconds(command: list[str]) -> tuple[float, str]:
    """Wall time of a subprocess from start to exit, and its stdout; fails loudly."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    return seconds, done.stdout


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("phr_data/features.h5"))
    parser.add_argument("--checkpoint", type=Path, default=Path("models/gcn-phr.pt"))
    parser.add_argument("--clip", type=Path, help="a video not in the store (default: a new synthetic clip)")
    parser.add_argument("--user", help="a user with training posts (default: the checkpoint's first)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="phr-bench-"))
    try:
        clip = args.clip or media.write_clip(scratch / "new_clip.mp4", 3.0, pattern="ocean",
                                             tone_hz=110.0, noise=0.15, seed=12345)
        user = args.user or load_checkpoint(args.checkpoint).users[0]
        phr = phr_command()

        help_seconds = [run_seconds([*phr, "--help"])[0] for _ in range(args.repeat)]

        recommend = [*phr, "recommend", str(clip), "--user", user, "--json", "--checkpoint",
                     str(args.checkpoint), "--store", str(args.store), "--device", args.device]
        cold_seconds = []
        for _ in range(args.repeat):
            seconds, stdout = run_seconds(recommend)
            json.loads(stdout)  # the output is complete and is JSON only
            cold_seconds.append(seconds)

        started = time.perf_counter()
        recommender = Recommender(args.checkpoint, args.device, store_path=args.store)
        construct_seconds = time.perf_counter() - started
        started = time.perf_counter()
        [first] = recommender.recommend([clip], user)  # loads the encoders and the store
        first_call_seconds = time.perf_counter() - started
        totals, decode, encode, score = [], [], [], []
        for _ in range(args.repeat):
            recommender.timings = Timings()
            started = time.perf_counter()
            recommender.recommend([clip], user)
            totals.append(time.perf_counter() - started)
            decode.append(recommender.timings.decode)
            encode.append(recommender.timings.encode)
            score.append(recommender.timings.score)
    finally:
        shutil.rmtree(scratch)

    device = recommender.device
    print(f"phr --help: {summary(help_seconds)}")
    print(f"cold `phr recommend CLIP --user {user} --json` (process start to output, {args.device}): "
          f"{summary(cold_seconds)}")
    print(f"warm-up on {device}: Recommender() {construct_seconds:.3f} s, first recommend() "
          f"{first_call_seconds:.3f} s (loads the encoders and the store's features)")
    print(f"warm recommend() per clip on {device} (clip status {first.status}): {summary(totals)}")
    print(f"warm split: decode {statistics.median(decode):.3f} s, encode {statistics.median(encode):.3f} s, "
          f"score {statistics.median(score):.3f} s (medians)")


if __name__ == "__main__":
    main()
