"""Autocast precision of ResNet50 and VGGish against fp32, on real decoded clips.

    python bench/encoder_precision.py sample_videos/ [--device cuda] [--precisions bf16 fp16]

Per clip, the store's features (mean over frames / examples) at each precision are
compared with fp32: cosine similarity and relative L2 error, worst and median over clips,
plus the encode time ratio measured in the same run. Random weights unless --weights-dir
has the real files (then the figures describe the real features).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from phr_cli.data.decode import decode_clip
from phr_cli.data.decode_options import FrameSampling
from phr_cli.data.posts import read_posts
from phr_cli.devices import resolve_device
from phr_cli.encoders.pipeline import Encoders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", nargs="+", default=["bf16"])
    parser.add_argument("--weights-dir", type=Path)
    args = parser.parse_args()
    clips = [decode_clip(path, FrameSampling()) for path in read_posts(args.videos).videos()]
    clips = [clip for clip in clips if clip.frames is not None or clip.audio is not None]
    random = args.weights_dir is None

    def features(precision: str) -> tuple[dict[str, np.ndarray], float]:
        encoders = Encoders(resolve_device(args.device), args.weights_dir, random, precision)
        encoders.encode_clips(clips[:1], 64)  # warm-up
        started = time.perf_counter()
        encoded = encoders.encode_clips(clips, 64)
        seconds = time.perf_counter() - started
        return {m: [e[m] for e in encoded] for m in ("visual", "acoustic")}, seconds

    reference, reference_seconds = features("fp32")
    for precision in args.precisions:
        other, seconds = features(precision)
        for modality in ("visual", "acoustic"):
            pairs = [(a, b) for a, b in zip(reference[modality], other[modality]) if a is not None]
            cosine = np.array([np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) for a, b in pairs])
            relative = np.array([np.linalg.norm(a - b) / np.linalg.norm(a) for a, b in pairs])
            print(f"{precision} vs fp32, {modality} ({len(pairs)} clips, {'random' if random else 'real'} "
                  f"weights, {args.device}): cosine min {cosine.min():.5f} median {np.median(cosine):.5f}; "
                  f"relative L2 error max {relative.max():.4f} median {np.median(relative):.4f}")
        print(f"{precision} encode time: {seconds / reference_seconds:.2f}x fp32's in this run "
              f"({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
