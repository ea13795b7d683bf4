"""Device and numeric precision: one place that decides where and how tensors compute."""

from __future__ import annotations

import contextlib
import ctypes
import sys

import torch

from .errors import TransformerMTError


def usable_devices() -> str:
    """The device names this torch can run here, for messages."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return "auto or cpu (this machine has no CUDA device)"
    return f"auto, cpu, cuda or cuda:N with N from 0 to {count - 1}"


def resolve_device(name: str | None = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else is checked: transformer-mt computes on the CPU and on
    CUDA devices, so other types torch knows (meta holds no data, mps, xpu, ...) are refused here, not by a
    traceback later."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name) if isinstance(name, (str, torch.device)) else None
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index not in (None, 0)):
        raise TransformerMTError(f"device {name!r} is not one transformer-mt runs on; use {usable_devices()}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TransformerMTError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise TransformerMTError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA "
                                 f"device(s); use {usable_devices()}")
    return device


def autocast(device: torch.device, precision: str):
    """Context manager running the forward pass in the configured precision."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16":
        if device.type != "cuda":
            raise TransformerMTError("training.precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast(device.type, dtype=torch.bfloat16)


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """The precision to train in, and why: ``auto`` picks what the hardware computes natively.

    bf16 on CUDA devices that support it and on CPUs with AVX-512 BF16 or AMX; fp16 (with a
    grad scaler) on older CUDA devices; fp32 elsewhere, where bf16 would be emulated and slower.
    """
    if precision != "auto":
        return precision, "set in the config"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        # Compute capability 8 (Ampere) and later have bf16 tensor cores; earlier GPUs (T4, V100) only
        # emulate bf16, which torch.cuda.is_bf16_supported() also counts.
        if torch.cuda.get_device_capability(device)[0] >= 8:
            return "bf16", f"auto: {name} computes bf16 natively"
        return "fp16", f"auto: {name} has no bf16; fp16 with a gradient scaler"
    if device.type == "cpu":
        if cpu_has_fast_bf16():
            return "bf16", "auto: this CPU has native bf16 instructions (AVX-512 BF16 or AMX)"
        return "fp32", "auto: this CPU has no native bf16 instructions (AVX-512 BF16 or AMX), where bf16 is slower"
    return "fp32", f"auto: no mixed precision chosen for {device.type} devices"


def cpu_info(field: str) -> str:
    """The value of ``field`` (e.g. "model name", "vendor_id") for the first CPU in /proc/cpuinfo; "" where
    there is no such file or field (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name.strip() == field:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_flags() -> set[str]:
    """The first CPU's instruction-set flags from /proc/cpuinfo (e.g. "avx512f", "amx_bf16"); empty where
    there are none (not Linux, not x86)."""
    return set(cpu_info("flags").split())


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX).

    Without them bf16 matmuls are emulated and far slower than fp32.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX512", "AVX512_BF16", "AMX"):
        return False
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def configure_process(num_threads: int = 0, reuse_cpu_memory: bool = True) -> None:
    """Process-wide settings for training and translating; call once, from the program's entry point.

    The transformer-mt command and the scripts call it (train with ``training.num_threads``).
    A program that uses the Python API decides for itself: these change the whole process, so
    constructing a Trainer or Translator never makes them. ``num_threads``: torch's CPU threads
    (0 leaves torch's default, all cores). ``reuse_cpu_memory``: see keep_freed_cpu_memory
    (~11% faster fp32 training and ~6% faster beam search on CPU, measured here).
    """
    if num_threads:
        torch.set_num_threads(num_threads)
    if reuse_cpu_memory:
        keep_freed_cpu_memory()


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters, from glibc's malloc.h


def keep_freed_cpu_memory() -> bool:
    """Let glibc's malloc reuse freed memory for large CPU tensors instead of returning it to the OS.

    PyTorch's CPU allocator is plain malloc, and glibc serves blocks above 32 MB (a batch's
    tokens x vocabulary logits and their gradient) with a fresh mmap each time and unmaps them on
    free, so every update page-faults its biggest tensors in again: a 58 MB copy took 25 ms this
    way and 5 ms from reused memory, and CPU training in fp32 ran ~11% faster with reuse. The cost
    is that the process keeps its peak memory until it exits. Returns False where the C library
    is not glibc (macOS, musl), where nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    # No mmap for large blocks: they come from the heap and are reused; never trim the heap.
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
