"""Device names are resolved once, to a torch.device, or refused in one line; the host allocator's setting."""

from __future__ import annotations

import platform
import sys

import pytest
import torch

from phr_cli.devices import DeviceError, keep_freed_memory, resolve_device
from phr_cli.errors import PhrError


def test_a_device_resolves_once_to_a_torch_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    already = torch.device("cpu")
    assert resolve_device(already) is already


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CPU", ""])
def test_an_unknown_device_name_is_a_phr_error(name):
    with pytest.raises(DeviceError, match="unknown device") as caught:
        resolve_device(name)
    assert isinstance(caught.value, PhrError) and "\n" not in str(caught.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_without_cuda_is_a_phr_error():
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda")


def test_freed_memory_is_kept_where_the_c_library_is_glibc():
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is glibc
