"""Process-wide settings that a script changes for its run and gives back afterwards, so that calling a script's
`main` from Python (a notebook, a test) leaves the caller's process as it was."""

import contextlib
from typing import Iterator, Optional

import torch


@contextlib.contextmanager
def torch_threads(num_threads: Optional[int]) -> Iterator[None]:
    """
    Run the block with `torch.set_num_threads(num_threads)` and restore the previous count afterwards.

    Args:
        num_threads (`int`, *optional*): Threads for the block; `None` or 0 leaves the count as it is.
    """
    previous = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
