"""Running means of the loss terms between two reads on the host, and the NaN check that comes with each read."""

import math
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch


class LossBuffer:
    """
    Collects the (device) loss terms of each step and reads them on the host only when asked, so the training loop
    does not wait for the device at every step.
    """

    def __init__(self):
        self.steps: List[int] = []
        self.terms: List[Dict[str, torch.Tensor]] = []

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, step: int, terms: Dict[str, torch.Tensor]) -> None:
        self.steps.append(step)
        self.terms.append(terms)

    def flush(self) -> Tuple[Optional[Tuple[int, Dict[str, float]]], Dict[str, float]]:
        """
        Read and clear the buffer. Returns `(first_bad, means)`: the first step whose terms are not all finite (with
        those terms), or `None`, and the mean of each term over the buffered steps.
        """
        host = [{k: float(v) for k, v in t.items()} for t in self.terms]
        bad = next(((s, h) for s, h in zip(self.steps, host) if not all(math.isfinite(v) for v in h.values())), None)
        means = {k: float(np.mean([h[k] for h in host if k in h])) for k in host[-1]} if host else {}
        self.steps, self.terms = [], []
        return bad, means
