"""Device choice shared by extraction, training, evaluation and recommendation.

A device name ("auto", "cpu", "cuda", "cuda:N") is resolved once, where a command starts
(or where a training rank joins); everything below takes the `torch.device`.
"""

from __future__ import annotations

import torch

from phr_cli.errors import ConfigError

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
    if isinstance(name, torch.device):
        return name
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but CUDA is not available")
    return torch.device(name)
