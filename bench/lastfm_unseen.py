"""Hashtags nobody used before: GCN-PHR with the text map against the caption-words baseline on Last.fm 2K.

    python bench/lastfm_unseen.py ../shared/datasets/lastfm-2k [--work DIR] [--epochs N] [--patience N]

Every (user, artist) post of HetRec 2011 Last.fm 2K, without the 5-core that bench/lastfm.py
applies (new tags are the norm on a real platform, most of them rare), goes through the
product's path: `extract` (the artist's name as caption), `train` on the time split (the
latest 10 % tested), then `training.unseen`: the test posts' tags that training never saw
join the candidates, and the model (its new columns from the text map, from the mean
representation, or none; with the words match fitted on the validation posts or without)
is compared with the caption-words baseline. A checkpoint already in --work is evaluated again
without training. Prints one table (Markdown), the notes, one summary line, and the words
match's trade-off on the test posts: at the fitted scale, each offset's unseen R@K against its
seen P@K (K of the fit), the fitted offset among them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from lastfm import write_manifest

from phr_cli.data.dataset import Dataset
from phr_cli.devices import resolve_device
from phr_cli.extract import ExtractOptions, extract
from phr_cli.model.config import ModelConfig
from phr_cli.model.hashtag_text import HashtagEmbedder
from phr_cli.ranking.new_hashtags import HeldScores
from phr_cli.training.checkpoint import Checkpoint, load_checkpoint
from phr_cli.training.config import TrainConfig
from phr_cli.training.train import train_from_store
from phr_cli.training.unseen import evaluate_unseen, grown_scorer, split_cases, text_map, unseen_hashtags

TARGET_RATIO = 1.10  # the bar: the model's unseen R@5 over the caption-words baseline's


def prepare(dataset: Path, work: Path, epochs: int, patience: int, device: str) -> Path:
    """The store and the time split's checkpoint in work (each made only when missing)."""
    posts_dir, store, checkpoint = work / "posts", work / "features.h5", work / "gcn-phr-time.pt"
    if not store.is_file():
        n_posts = write_manifest(dataset, posts_dir, min_count=1)
        report = extract(posts_dir, store, ExtractOptions(device=device, random_weights=True))
        print(f"lastfm-unseen extract: {n_posts} posts (no core filter), text features in {report.seconds:.1f} s")
    if not checkpoint.is_file():
        started = time.perf_counter()
        outcome = train_from_store(store, checkpoint, ModelConfig(),
                                   TrainConfig(epochs=epochs, patience=patience, device=device), split_by="time")
        print(f"lastfm-unseen train: {len(outcome.result.history)} epochs, best {outcome.result.best_epoch}, "
              f"{time.perf_counter() - started:.0f} s")
    return checkpoint


def trade_off(data: Dataset, checkpoint: Checkpoint, match: dict, device: str,
              shifts: tuple[float, ...] = (-2, -1, -0.5, 0, 0.5, 1, 2, 3, 4, 5, 6, 8, 16)) -> list[str]:
    """Markdown rows: offset (the fitted one moved by shift × the spread of the known top scores,
    the unit of the fit's scales), unseen R@K and seen P@K on the test posts, with the text map's
    scorer and the fitted scale."""
    embedder = HashtagEmbedder.for_provenance(checkpoint.provenance, device)
    new = unseen_hashtags(data, data.split.test)
    cases, seen, unseen = split_cases(data, data.split.test, new)
    scorer = grown_scorer(checkpoint, new, text_map(checkpoint, embedder, resolve_device(device)),
                          resolve_device(device))
    held = HeldScores.of(scorer, data.posts, cases, data.graph.n_hashtags, torch.as_tensor(embedder(new)),
                         match["k"])
    n_seen = torch.as_tensor([len(s) for s in seen])
    n_unseen = torch.as_tensor([len(u) for u in unseen])
    rows = [f"| offset | unseen R@{held.k} | seen P@{held.k} |", "|---|---|---|"]
    for shift in shifts:
        offset = match["offset"] + shift * held.spread()
        new_hits, known_hits = held.hits(match["scale"], offset)
        recall = float((new_hits[n_unseen > 0] / n_unseen[n_unseen > 0]).mean())
        precision = float((known_hits[n_seen > 0] / held.k).mean())
        mark = " (fitted)" if shift == 0 else ""
        rows.append(f"| {offset:.3f}{mark} | {recall:.4f} | {precision:.4f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="folder of the Last.fm 2K files")
    parser.add_argument("--work", type=Path, default=Path("bench_work/lastfm-unseen"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--patience", type=int, default=3, help="epochs without a validation gain before stopping")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prepare-only", action="store_true", help="make the store and checkpoint, then stop")
    args = parser.parse_args()
    started = time.perf_counter()
    checkpoint_path = prepare(args.dataset, args.work, args.epochs, args.patience, args.device)
    if args.prepare_only:
        return
    checkpoint = load_checkpoint(checkpoint_path)
    data = Dataset.for_checkpoint(args.work / "features.h5", checkpoint.split, checkpoint.provenance,
                                  checkpoint_path)
    report = evaluate_unseen(data, checkpoint, resolve_device(args.device))
    print(report.markdown())
    for name, note in report.notes.items():
        print(f"- {name}: {note}")
    print(f"lastfm-unseen: {report.summary_line()}; target ratio {TARGET_RATIO:.2f}×; "
          f"{time.perf_counter() - started:.0f} s")
    if report.words_match is not None:
        print("\n".join(trade_off(data, checkpoint, report.words_match, args.device)))


if __name__ == "__main__":
    main()
