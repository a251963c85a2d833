"""Whether the hardware computes in bf16 / fp16 natively, and what to say when a requested mixed precision is not.

Mixed precision pays only where the hardware has the arithmetic: elsewhere PyTorch emulates the 16-bit formats in
software and training gets much slower, not faster (measured on an AVX2-only CPU: bf16 autocast 11-15x slower than
float32, `docs/results.md`). `--mixed_precision` keeps its diffusers / Accelerate meaning; the training script
only warns when the requested format will be emulated ([`precision_warning`]).

What counts as native:

- CUDA: bf16 from compute capability 8.0 (Ampere), fp16 from 7.0 (Volta: tensor cores).
- CPU (x86): bf16 with the `avx512_bf16` or `amx_bf16` instructions, fp16 with `avx512_fp16` or `amx_fp16`
  (read from `/proc/cpuinfo`). AVX-512 without them is not enough: oneDNN then converts to float32 for every op.
- CPU (Arm): bf16 with the `bf16` feature, fp16 with `fphp` / `asimdhp`.
- Anything else (other devices, a CPU whose flags cannot be read): unknown, no warning.
"""

import functools
import platform
from typing import Dict, FrozenSet, Optional

import torch

FORMATS = ("bf16", "fp16")

_CPU_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16", "bf16"), "fp16": ("avx512_fp16", "amx_fp16", "fphp", "asimdhp")}
_CUDA_CAPABILITY = {"bf16": (8, 0), "fp16": (7, 0)}


@functools.lru_cache(maxsize=None)
def cpu_flags(path: str = "/proc/cpuinfo") -> FrozenSet[str]:
    """The CPU's feature flags (`flags` on x86, `Features` on Arm) from `/proc/cpuinfo`; empty where unreadable."""
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def cpu_capability() -> str:
    """`torch.backends.cpu.get_cpu_capability()` (the vector instructions torch's kernels use), or `"unknown"`."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):  # pragma: no cover - older torch
        return "unknown"


def native_formats(device) -> Dict[str, Optional[bool]]:
    """
    `{"bf16": ..., "fp16": ...}` for `device`: `True` where the hardware computes in that format natively, `False`
    where PyTorch would emulate it, `None` where this cannot be told.
    """
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return {f: None for f in FORMATS}
        capability = torch.cuda.get_device_capability(device)
        return {f: capability >= _CUDA_CAPABILITY[f] for f in FORMATS}
    if device.type == "cpu":
        flags = cpu_flags()
        if not flags:
            return {f: None for f in FORMATS}
        return {f: any(flag in flags for flag in _CPU_FLAGS[f]) for f in FORMATS}
    return {f: None for f in FORMATS}


def describe_device(device) -> str:
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(device)
        return f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"
    if device.type == "cpu":
        return f"this CPU ({platform.machine() or 'unknown'}, torch kernels: {cpu_capability()})"
    return str(device)


def precision_warning(mixed_precision: Optional[str], device) -> Optional[str]:
    """The warning to log when `mixed_precision` (`"no"`, `"bf16"`, `"fp16"`) will be emulated on `device`, else
    `None`."""
    if mixed_precision not in FORMATS:
        return None
    native = native_formats(device)[mixed_precision]
    if native is not False:
        return None
    device = torch.device(device)
    if device.type == "cpu":
        needs = " or ".join(f for f in _CPU_FLAGS[mixed_precision] if f.startswith(("avx", "amx")))
        why = f"it has no {needs} instructions"
    else:
        needs = ".".join(map(str, _CUDA_CAPABILITY[mixed_precision]))
        why = f"{mixed_precision} runs natively from compute capability {needs}"
    return (f"--mixed_precision {mixed_precision} will be emulated on {describe_device(device)}: {why}, so PyTorch "
            f"converts to float32 around every operation and training runs slower than in full precision (bf16 "
            f"measured 11-15x slower than float32 on an AVX2 CPU, see docs/results.md). Use --mixed_precision no here.")
