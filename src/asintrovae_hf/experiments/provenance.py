"""Where a measurement came from: the code version and the device, written into every experiment record."""

import os
import platform
import subprocess
from typing import Optional

from .. import __version__


def code_version(path: Optional[str] = None) -> str:
    """
    The short commit of the git checkout holding `path` (default: this package's source), with `+dirty` when the
    package's files differ from it; `asintrovae-hf <version>` for an installed package outside a checkout.
    """
    folder = path or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", folder, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        tracked = subprocess.run(["git", "-C", folder, "ls-files", "--error-unmatch", "__init__.py"],
                                 capture_output=True, text=True, timeout=10)
        if head.returncode != 0 or not head.stdout.strip() or tracked.returncode != 0:  # not this package's checkout
            return f"asintrovae-hf {__version__}"
        dirty = subprocess.run(["git", "-C", folder, "status", "--porcelain", "."], capture_output=True, text=True,
                               timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return f"asintrovae-hf {__version__}"


def device_description(threads: int) -> str:
    """`"cpu (<model name>, N torch threads)"`."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu ({cpu}, {threads} torch thread{'s' if threads != 1 else ''})"
