"""
What every benchmark section measures with: the time of a call (best of several runs after a warm-up, the device
synchronised), the peak memory of a call, and the plain-text tables the results are printed as.

The peak memory of a call is the peak of the bytes of live tensors above what was allocated when it began:

- On CUDA: `torch.cuda.max_memory_allocated()` minus the memory allocated before the call.
- On the CPU: the same quantity, from the CPU allocator's own events: the call runs once under
  `torch.profiler.profile(profile_memory=True)`, which records every tensor allocation and free (size and time);
  the peak is the maximum of their running sum. This counts exactly the bytes of live tensors, like the CUDA
  figure, and is neither blurred by the rest of the process (as `ru_maxrss` is: the interpreter, torch's own
  libraries and freed-but-cached pages) nor dependent on the C allocator. Profiling slows the call down, so
  timings come from separate, unprofiled runs.
"""

import contextlib
import math
import os
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
from torch.profiler import ProfilerActivity, profile

GIB = 2.0**30
MIB = 2.0**20


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Seconds of the fastest of `repeats` runs of `fn`, after one warm-up run."""
    fn()
    sync(device)
    best = math.inf
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 (the profiler's start/stop lines are written there from C++)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_bytes(fn: Callable[[], None], device: torch.device) -> int:
    """Peak bytes of tensors allocated by `fn` above what was allocated before it (see the module docstring)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return max(0, torch.cuda.max_memory_allocated(device) - base)
    if device.type != "cpu":
        raise ValueError(f"peak memory is measured on 'cpu' and 'cuda' devices only, got {device.type!r}.")
    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return peak_from_events(prof)


def peak_from_events(prof) -> int:
    """Peak of the running sum of the CPU allocations and frees a profiler recorded (frees first at equal times)."""
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: (e.start_ns(), e.nbytes()))
    live = peak = 0
    for e in events:
        if e.device_type() == torch.autograd.DeviceType.CPU:
            live += e.nbytes()
            peak = max(peak, live)
    return peak


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return f"{value:.2e}"
    return str(value)


def format_table(rows: List[Dict], columns: Optional[List[str]] = None) -> str:
    """A plain-text table of `rows` (missing entries shown as `-`)."""
    if not rows:
        return "(no rows)"
    if columns is None:
        columns = []
        for row in rows:
            columns += [k for k in row if k not in columns]
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
