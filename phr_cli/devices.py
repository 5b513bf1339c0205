"""Device choice shared by extraction, training, evaluation and recommendation, and the
host allocator's setting for them.

A device name ("auto", "cpu", "cuda", "cuda:N") is resolved once, where a command starts
(or where a training rank joins); everything below takes the `torch.device`. torch is
imported when a name is resolved: checking a name (the configurations do) needs none.
"""

from __future__ import annotations

import ctypes
import sys
from typing import TYPE_CHECKING

from phr_cli.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_NAMES = ("auto", "cpu", "cuda")


class DeviceError(ConfigError):
    """An unknown device name, or CUDA asked for where there is none."""


def check_device_name(name: str) -> str:
    """`name` when phr knows it (auto, cpu, cuda, cuda:N), else a DeviceError."""
    index = name[len("cuda:"):] if name.startswith("cuda:") else None
    if name not in DEVICE_NAMES and not (index is not None and index.isdigit()):
        raise DeviceError(f"unknown device {name!r}: use auto, cpu or cuda")
    return name


def resolve_device(name: str | torch.device) -> torch.device:
    """'auto' is CUDA when present, else the CPU; asking for CUDA without it is an error.
    A `torch.device` is returned as it is."""
    import torch

    if isinstance(name, torch.device):
        return name
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but CUDA is not available")
    return torch.device(name)


# glibc's mallopt parameters, and the sizes below which freed blocks stay with the process:
# 1 GiB where glibc accepts it, else the 32 MiB that every 64-bit glibc accepts for mmap.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEPT_BLOCK_BYTES = (1 << 30, 32 << 20)


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed blocks for reuse instead of returning them to the system;
    True where it applied (Linux with glibc), False elsewhere (macOS, musl: left as they are).

    A training step on a CPU allocates and frees tens of MiB of temporaries. By default each
    block over glibc's threshold is a fresh mapping whose pages are filled anew every step:
    on Last.fm an epoch is measurably shorter with freed memory kept (bench/README.md, "A Last.fm
    epoch against an earlier commit"). The same
    effect as running under jemalloc or tcmalloc, which PyTorch's CPU tuning advice
    suggests; the process keeps its peak memory until it exits.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    kept_mapped = any(mallopt(M_MMAP_THRESHOLD, size) for size in KEPT_BLOCK_BYTES)
    kept_trimmed = bool(mallopt(M_TRIM_THRESHOLD, KEPT_BLOCK_BYTES[0]))
    return kept_mapped and kept_trimmed
