"""Device selection and the CPU memory setting."""

import platform

import pytest
import torch

from transformer_mt.device import keep_freed_cpu_memory, resolve_device
from transformer_mt.errors import TransformerMTError


def test_auto_device_is_cuda_only_when_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"


def test_unknown_device_is_a_clear_error():
    with pytest.raises(TransformerMTError, match="unknown device"):
        resolve_device("tpu7")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_cpu_memory_is_accepted_by_glibc_and_tensors_still_work():
    # mallopt returns 0 for a parameter it does not know: True means both settings took effect.
    assert keep_freed_cpu_memory() is True
    big = torch.ones(5000, 4000)  # 80 MB: above glibc's mmap threshold
    del big
    again = torch.full((5000, 4000), 2.0)
    assert again.sum().item() == 2.0 * 5000 * 4000
