"""Peak memory of `phr extract` against the number of videos: N and 10×N clips, one run.

    python bench/extract_memory.py [--videos N] [--device D]

Each extraction runs in a fresh process (random encoder weights, one frame a clip, tiny
clips, encoder batches of 8 frames so that both sizes fill them: the point is what grows
with the count, not the encoders' activations); its peak RSS is read
from getrusage. (Decoding workers are capped by their own address-space limit; getrusage
cannot measure them here, as a spawned child's peak includes the parent's pages at fork.)
Prints one summary line a size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test support: synthetic media

from support import media

RUN = """
import json, resource, sys
from pathlib import Path
from phr_cli.data.decode_options import FrameSampling
from phr_cli.extract import ExtractOptions, extract
report = extract(Path(sys.argv[1]), Path(sys.argv[2]), ExtractOptions(
    device=sys.argv[3], workers=2, random_weights=True, batch_size=8, commit_every=8,
    sampling=FrameSampling(min_keyframes=1, max_frames=1, fallback_frames=1)))
print(json.dumps({"extracted": report.extracted, "seconds": report.seconds,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_videos(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    lines = ["video,user,caption"]
    for i in range(count):
        media.write_clip(folder / f"v{i:05d}.mp4", 0.2, size=(32, 32), fps=5, seed=i,
                         pattern=["ocean", "fire", "city", "forest"][i % 4], tone_hz=300 + i % 500)
        lines.append(f"v{i:05d}.mp4,user{i % 50},clip {i} #tag{i % 40}")
    (folder / "posts.csv").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="phr-memory-") as scratch:
        results = {}
        for count in (args.videos, 10 * args.videos):
            folder = Path(scratch) / f"videos{count}"
            write_videos(folder, count)
            done = subprocess.run([sys.executable, "-c", RUN, str(folder), str(folder / "features.h5"),
                                   args.device], capture_output=True, text=True, check=True)
            results[count] = json.loads(done.stdout.strip().splitlines()[-1])
            r = results[count]
            print(f"extract {count} videos: peak RSS {r['peak_rss_mib']:.0f} MiB, {r['seconds']:.1f} s")
        small, large = results[args.videos], results[10 * args.videos]
        print(f"10x the videos: peak RSS x{large['peak_rss_mib'] / small['peak_rss_mib']:.2f}")


if __name__ == "__main__":
    main()
