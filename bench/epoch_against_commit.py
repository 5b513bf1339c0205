"""A Last.fm training epoch with this tree's code against an earlier commit's, in one run.

    python bench/epoch_against_commit.py --store STORE                  # against a98f19d
    python bench/epoch_against_commit.py --store STORE --commit REV --repeats 3

Issue 13's speed target compares a training epoch at batch 4,096 with the code of the day
it was filed (commit a98f19d, whose default model had no evidence terms, item IDs or
self-loop). The commit is checked out into a temporary git worktree; each version then
trains its own default model through its own `train_from_store` (random-post split, seed
0, `--epochs` epochs, one thread) in a fresh process, the two alternating `--repeats`
times. The fastest training pass of each counts (a shared machine disturbs some). This
tree runs as `phr` runs it, with the host allocator keeping freed memory
(`devices.keep_freed_memory`); `--allocator both` also times it without, and the old
commit with it, to separate that setting from the code. `--content-only` also times this
tree's model without graph propagation: what a step costs before any message passing. The store must be in a format
the old commit reads (store format 1 for a98f19d).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Runs in each version's own tree: the modules moved into packages after a98f19d.
CHILD = """
import json, sys, torch
from pathlib import Path
torch.set_num_threads(1)
if sys.argv[3] == "kept":
    try:
        from phr_cli.devices import keep_freed_memory
    except ImportError:  # an older commit: the same mallopt calls
        import ctypes
        def keep_freed_memory():
            mallopt = ctypes.CDLL("libc.so.6").mallopt
            return any(mallopt(-3, size) for size in (1 << 30, 32 << 20)) and bool(mallopt(-1, 1 << 30))
    assert keep_freed_memory(), "glibc's mallopt did not apply"
try:
    from phr_cli.model.config import NetworkConfig
    from phr_cli.model.config import ModelConfig
    from phr_cli.training.train import TrainConfig, train_from_store
    content_only = ModelConfig(NetworkConfig(propagate=False))
except ImportError:  # an older commit's flat modules and configuration
    from phr_cli.model import ModelConfig
    from phr_cli.train import TrainConfig, train_from_store
    content_only = ModelConfig(propagate=False)
model_config = content_only if sys.argv[5] == "content-only" else ModelConfig()
outcome = train_from_store(Path(sys.argv[1]), Path(sys.argv[2]), model_config,
                           TrainConfig(epochs=int(sys.argv[4]), batch_size=4096, device="cpu",
                                       patience=int(sys.argv[4])), resume=False)
print(json.dumps([h["train_seconds"] for h in outcome.result.history]))
"""


def train_seconds(tree: Path, store: Path, checkpoint: Path, allocator: str, epochs: int, model: str) -> list[float]:
    """The training pass of each epoch, in seconds, of the version in `tree`."""
    environment = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", CHILD, str(store), str(checkpoint), allocator, str(epochs),
                             model],
                            env=environment, cwd=tree, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{tree}: training failed: {result.stderr.strip().splitlines()[-1]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--commit", default="a98f19d", help="the earlier code (default: the day issue 13 was filed)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--allocator", choices=("kept", "both"), default="kept",
                        help="kept: this tree as phr runs it; both: each version with and without")
    parser.add_argument("--content-only", action="store_true",
                        help="also time this tree's model without propagation (`--content-only`): the step's floor")
    args = parser.parse_args()
    store = args.store.resolve()
    with tempfile.TemporaryDirectory() as scratch:
        old_tree = Path(scratch) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), args.commit],
                       check=True, capture_output=True)
        try:
            runs = [("this tree", ROOT, "kept", "default"), (args.commit, old_tree, "default", "default")]
            if args.allocator == "both":
                runs += [("this tree", ROOT, "default", "default"), (args.commit, old_tree, "kept", "default")]
            if args.content_only:
                runs.append(("this tree, content-only", ROOT, "kept", "content-only"))
            fastest: dict[tuple[str, str], float] = {}
            for repeat in range(args.repeats):
                for run, (name, tree, allocator, model) in enumerate(runs):
                    checkpoint = Path(scratch) / f"speed-{repeat}-{run}.pt"
                    seconds = train_seconds(tree, store, checkpoint, allocator, args.epochs, model)
                    key = (name, allocator)
                    fastest[key] = min([fastest.get(key, float("inf")), *seconds])
                    print(f"{name} (allocator {allocator}): " + ", ".join(f"{s:.2f}" for s in seconds)
                          + f" s per epoch; load {os.getloadavg()[0]:.1f}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], check=False)
    new, old = fastest[("this tree", "kept")], fastest[(args.commit, "default")]
    print(f"epoch at batch 4096, one thread, fastest of {args.repeats}: this tree {new:.2f} s, {args.commit} "
          f"{old:.2f} s: {old / new:.2f}x faster")
    if args.allocator == "both":
        new_default, old_kept = fastest[("this tree", "default")], fastest[(args.commit, "kept")]
        print(f"  allocator alike: default {old / new_default:.2f}x ({new_default:.2f} s), kept "
              f"{old_kept / new:.2f}x ({args.commit} {old_kept:.2f} s)")
    if args.content_only:
        floor = fastest[("this tree, content-only", "kept")]
        print(f"  this tree without propagation: {floor:.2f} s, {old / floor:.2f}x faster than {args.commit}")


if __name__ == "__main__":
    main()
