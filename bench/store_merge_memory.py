"""Peak memory of the store's writer and merge at the paper's scale: 13,499 vs 134,992 videos.

    python bench/store_merge_memory.py [--videos 134992] [--segment 256]

Each size runs in a fresh process: random features are added and committed as segments
of `--segment` videos (what `phr extract` does), then `finalize` merges them into one
file sorted by key. Prints peak RSS and seconds per size, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = """
import hashlib, json, resource, sys, time
import numpy as np
from pathlib import Path
from phr_cli.data.statuses import Status
from phr_cli.data.store import PostRows, StoreWriter
count, segment, path = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
rng = np.random.default_rng(0)
started = time.perf_counter()
with StoreWriter(path, {"bench": {"weights": "random"}}, {"bench": True}) as writer:
    for i in range(count):
        writer.add(key=hashlib.sha256(str(i).encode()).hexdigest(), path=f"v{i}.mp4", duration=10.0,
                   status=Status.OK, reason="", n_frames=16, n_audio_examples=10,
                   visual=rng.random(2048, dtype=np.float32), acoustic=rng.random(128, dtype=np.float32),
                   visual_mask=True, acoustic_mask=True)
        if (i + 1) % segment == 0:
            writer.commit()
    added = time.perf_counter()
    posts = PostRows([], [], [], [], [], [], np.zeros((0, 384), np.float32), np.zeros((0, 100), np.float32),
                     np.zeros(0, bool))
    writer.finalize(posts, None)
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "add_seconds": added - started, "merge_seconds": time.perf_counter() - added,
                  "file_mib": path.stat().st_size / 2**20}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=134_992)
    parser.add_argument("--segment", type=int, default=256)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="phr-merge-") as scratch:
        for count in (args.videos // 10, args.videos):
            path = Path(scratch) / f"store{count}.h5"
            done = subprocess.run([sys.executable, "-c", RUN, str(count), str(args.segment), str(path)],
                                  capture_output=True, text=True, check=True)
            results[count] = r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"store of {count} videos ({r['file_mib']:.0f} MiB): peak RSS {r['peak_rss_mib']:.0f} MiB; "
                  f"adding {r['add_seconds']:.1f} s, merge {r['merge_seconds']:.1f} s")
            path.unlink()
    small, large = results[args.videos // 10], results[args.videos]
    print(f"10x the videos: peak RSS x{large['peak_rss_mib'] / small['peak_rss_mib']:.2f} "
          f"(the features alone grow by {large['file_mib'] - small['file_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
