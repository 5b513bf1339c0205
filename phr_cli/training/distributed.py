"""Training on several processes with torch.distributed.

Every rank holds the whole graph (the model is small: ID embeddings and projections; the
graph's features are the store's) and takes an equal share of each batch's BPR triples;
DistributedDataParallel averages the gradients, so N ranks take the same steps as one
process with the same batch size, up to floating-point summation order. Ranks are started
by `torchrun` (or `phr train --nproc N`, which calls it) and read their place from the
environment it sets; gloo on CPUs, NCCL on GPUs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from phr_cli.devices import resolve_device


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes; one process by default."""

    rank: int = 0
    world: int = 1
    joined_here: bool = False  # this process initialised the group (and so destroys it)

    @property
    def main(self) -> bool:
        """The rank that writes checkpoints and reports progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launched_rank() -> int:
    """The rank torchrun gave this process (0 outside torchrun), before any group exists."""
    return int(os.environ.get("RANK", "0"))


def join(device_name: str) -> tuple[Ranks, torch.device]:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR, …);
    without one, a single process on `device_name`."""
    device = resolve_device(device_name)
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Ranks(), device
    if device.type == "cuda":  # one GPU a rank
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    joined_here = not dist.is_initialized()
    if joined_here:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), joined_here), device


def leave(ranks: Ranks) -> None:
    if ranks.joined_here:
        dist.destroy_process_group()


def mean_over_ranks(value: float, ranks: Ranks, device: torch.device) -> float:
    if not ranks.distributed:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total) / ranks.world


def launch(nproc: int, arguments: list[str]) -> int:
    """Run `phr ARGUMENTS` as `nproc` ranks on this machine with torchrun; its exit code."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "phr_cli", *arguments]
    return subprocess.run(command, check=False).returncode
