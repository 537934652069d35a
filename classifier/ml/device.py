"""The device is configuration: resolved here, in one place, and passed in everywhere else."""

from __future__ import annotations

import contextlib
import functools
import os

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cpu"``; ``"cuda"``/``"cuda:N"`` (an error
    when CUDA is not available: a configured GPU that is absent is not silently replaced)."""
    if isinstance(device, torch.device):
        return device
    device = (device or "auto").strip().lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available on this machine")
        return torch.device(device)
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', not {device!r}")


def set_threads(n: int | None = None) -> int:
    """Set intra-op CPU threads (default: the CPUs this process may use). Returns the number."""
    if n is None:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover
            n = os.cpu_count() or 1
    n = max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@functools.lru_cache(maxsize=None)
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX-BF16)."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line
                    break
    except OSError:
        return False
    return (" avx512_bf16" in flags or " amx_bf16" in flags) and torch.backends.mkldnn.is_available()


def autocast(device: torch.device, precision: str):
    """Context for the forward pass: ``"fp32"`` (none), ``"bf16"`` or ``"fp16"`` autocast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype)


def default_precision(device: torch.device) -> str:
    """The fastest precision worth trying on the device (the engine still checks agreement)."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"
