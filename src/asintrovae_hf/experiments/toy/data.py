"""The 2D toy datasets of the Soft-IntroVAE / AS-IntroVAE benchmark: 8 Gaussians, 2 spirals, checkerboard, rings.

Every sampler reproduces, in distribution, what the Soft-IntroVAE 2D code trains and evaluates on:

- `8gaussians`: 8 isotropic Gaussians of std `0.02 / 1.414`, equal weights, centred at `2 (cos a, sin a) / 1.414`
  for `a` in multiples of 45 degrees (radius about 1.414). Extent inside `[-1.5, 1.5]^2`; evaluated on `[-2, 2]^2`.
- `2spirals`: two interleaved spiral arms (one the point reflection of the other) of 1.5 turns, radius up to about
  3.3, with uniform and Gaussian (std 0.1) jitter. Extent about `[-3.5, 3.5]^2`; evaluated on `[-4, 4]^2`.
- `checkerboard`: uniform over the 8 cells of one colour of a 4 x 4 board of 2 x 2 cells. Extent `[-4, 4)^2`;
  evaluated on `[-4, 4]^2`.
- `rings`: 4 concentric circles of radii 3, 2.25, 1.5, 0.75, equal weights, Gaussian noise of std 0.08. Extent about
  `[-3.3, 3.3]^2`; evaluated on `[-4, 4]^2`.

Only `8gaussians` lies in `[-2, 2]^2`. The reference code evaluates the other three on `[-4, 4]^2`: its `main.py`
passes `scale = 2` for them, and its histogram square and ELBO grid are `[-2 scale, 2 scale]^2`. Use
[`toy_eval_range`] to get the square of a dataset; the data are left at the reference's scale.

`8gaussians` is the reference's `ToyDataset("8Gaussians")` (the data the 2D benchmark trains on), not its
`sample_2d_data("8gaussians")`, a differently scaled variant (centres at radius about 2.8) that the benchmark never
uses. For `rings`, the reference draws points with replacement from `n` equally spaced angles per circle; this module
draws the angle uniformly, which is the same distribution up to that discretisation.
"""

import math
from typing import Dict, Optional, Tuple

import torch

TOY_DATASETS: Tuple[str, ...] = ("8gaussians", "2spirals", "checkerboard", "rings")

TOY_EVAL_RANGES: Dict[str, Tuple[float, float]] = {
    "8gaussians": (-2.0, 2.0),
    "2spirals": (-4.0, 4.0),
    "checkerboard": (-4.0, 4.0),
    "rings": (-4.0, 4.0),
}

_ALIASES = {name.lower(): name for name in TOY_DATASETS}


def canonical_name(name: str) -> str:
    key = str(name).lower()
    if key not in _ALIASES:
        raise ValueError(f"Unknown toy dataset {name!r}; choose one of {', '.join(TOY_DATASETS)}.")
    return _ALIASES[key]


def toy_eval_range(name: str) -> Tuple[float, float]:
    """
    The evaluation square `[lo, hi]^2` that the Soft-IntroVAE 2D code uses for `name`.

    Args:
        name (`str`): One of [`TOY_DATASETS`] (case-insensitive).

    Returns:
        `Tuple[float, float]`: `(-2, 2)` for `8gaussians`, `(-4, 4)` for the others.
    """
    return TOY_EVAL_RANGES[canonical_name(name)]


def _eight_gaussians(n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    centres = 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    which = torch.randint(0, 8, (n,), generator=generator)
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64) * 0.02
    return (centres[which] + noise) / 1.414


def toy_modes(name: str) -> Optional[Tuple[torch.Tensor, float]]:
    """
    The modes of a toy dataset made of isotropic Gaussians: `(centres, std)`, `centres` a float64 `K x 2` tensor.
    `None` for the datasets that have no discrete modes (`2spirals`, `checkerboard`, `rings`).
    """
    if canonical_name(name) != "8gaussians":
        return None
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    return 2.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1) / 1.414, 0.02 / 1.414


def _two_spirals(n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    half = (n + 1) // 2
    t = torch.sqrt(torch.rand(half, generator=generator, dtype=torch.float64)) * (3 * math.pi)  # 540 degrees
    x = -torch.cos(t) * t + torch.rand(half, generator=generator, dtype=torch.float64) * 0.5
    y = torch.sin(t) * t + torch.rand(half, generator=generator, dtype=torch.float64) * 0.5
    arm = torch.stack([x, y], dim=1)
    points = torch.cat([arm, -arm], dim=0)[:n] / 3
    points = points + 0.1 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return points[torch.randperm(n, generator=generator)]


def _checkerboard(n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    x1 = torch.rand(n, generator=generator, dtype=torch.float64) * 4 - 2
    row = torch.randint(0, 2, (n,), generator=generator).to(torch.float64) * 2
    x2 = torch.rand(n, generator=generator, dtype=torch.float64) - row + torch.floor(x1) % 2
    return torch.stack([x1, x2], dim=1) * 2


def _rings(n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    radii = torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64) * 3.0
    which = torch.randint(0, 4, (n,), generator=generator)
    angle = torch.rand(n, generator=generator, dtype=torch.float64) * (2 * math.pi)
    points = radii[which, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return points + 0.08 * torch.randn(n, 2, generator=generator, dtype=torch.float64)


_SAMPLERS = {
    "8gaussians": _eight_gaussians,
    "2spirals": _two_spirals,
    "checkerboard": _checkerboard,
    "rings": _rings,
}


def sample_toy_data(name: str, num_samples: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """
    Draw points from a 2D toy dataset.

    Args:
        name (`str`):
            One of [`TOY_DATASETS`]: `"8gaussians"`, `"2spirals"`, `"checkerboard"`, `"rings"` (case-insensitive, so
            the reference's `"8Gaussians"` works too).
        num_samples (`int`):
            Number of points.
        generator (`torch.Generator`, *optional*):
            A CPU generator that makes the draw reproducible; the global torch RNG when omitted.

    Returns:
        `torch.FloatTensor`: `num_samples x 2` points, in random order. See [`toy_eval_range`] for the square each
        dataset is evaluated on.

    Raises:
        `ValueError`: for an unknown `name` (the message lists the valid ones) or a negative `num_samples`.
    """
    sampler = _SAMPLERS[canonical_name(name)]
    num_samples = int(num_samples)
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}.")
    if num_samples == 0:
        return torch.empty(0, 2)
    return sampler(num_samples, generator).to(torch.float32)
