r"""The estimators of the 2D toy benchmark: histogram KL and JSD, and the grid-normalized ELBO.

This docstring is the project's definition of the estimators. They restate what the Soft-IntroVAE 2D code
(`calculate_sample_kl`, `calculate_elbo_with_grid` in `soft_intro_vae_2d/train_soft_intro_vae_2d.py`) computes.

## Histogram KL and JSD ([`histogram_kl_jsd`])

Both point sets are histogrammed over the square `[lo, hi]^2` in `bins x bins` equal bins (bin edges
`linspace(lo, hi, bins + 1)` on each axis; a point on the upper edge falls in the last bin, as in
`numpy.histogram2d`). Each histogram becomes a density

    p_k = count_k / (N_in * A),      A = ((hi - lo) / bins)^2 (the bin area)

for the real points and likewise `q_k` for the generated points. `N_in` is the number of points *inside* the square:
points outside are dropped and the density is renormalised over the square (it integrates to 1 there). This is what
the reference does (`numpy.histogram2d(..., density=True)` divides by the in-range total). Pass
`normalize_by="all"` to divide by the number of all points instead (then the density integrates to the fraction
inside). If no point of a set lies inside, its density is taken as 0 in every bin (numpy would give NaN). Then

    KL  = (1 / bins) * sum_k p_k (log p_k - log(q_k + 1e-14))                              (terms with p_k = 0 are 0)
    m_k = (p_k + q_k) / 2
    JSD = 0.5 * (1 / bins) * sum_k m_k ((log m_k - log(p_k + 1e-14)) + (log m_k - log(q_k + 1e-14)))
                                                                                           (terms with m_k = 0 are 0)

The `1 / bins` is PyTorch's `kl_div(..., reduction="batchmean")` on a `bins x bins` tensor; note the JSD's
direction: `KL(m || p) + KL(m || q)` (the reference's argument order), not the textbook `KL(p || m) + KL(q || m)`.
Neither quantity is a divergence between the distributions in the usual normalisation (the sums are over densities,
not probabilities, and are divided by `bins`, not multiplied by the bin area); they are the reference's units.
Saturation: when no generated point falls in a bin holding real data, every `log(q_k + 1e-14)` is `log 1e-14` and
`KL = (1/bins) sum_k p_k (log p_k + 32.24)` no longer depends on the model (report the JSD beside it). Identical
point sets give `KL = JSD = 0` (up to the `1e-14` offsets, about `1e-14 / p` per bin).

## Grid-normalized ELBO ([`grid_normalized_elbo`])

With `e(x) >= 0` the per-point negative ELBO that the caller supplies (in the reference: `kl(mu, logvar) +
sum (x - G(mu))^2`, deterministic `z = mu`, `beta_kl = beta_rec = 1`), real points `x_1..x_N` and the
`grid_size x grid_size` grid `g_j` of `linspace(lo, hi, grid_size)` on each axis (endpoints included):

    gnELBO = mean_i [ e(x_i) / (sum_j e(g_j) + sum_i' e(x_i')) ]
           = mean_i e(x_i) / (sum_j e(g_j) + sum_i e(x_i))

It is the share of the real points' negative ELBO in the total over grid and real points: *lower is better* (the
model gives the data a smaller negative ELBO than the rest of the square). The reference normalises the negative
ELBO itself, not `exp(-e)`, so this is not a normalised likelihood. The value depends on `N` (the real points are
part of the normaliser): the reference evaluates `100` batches of `128`, so `N = 12,800` (the function's default
batch of 512 would give 51,200, but the call site passes 128), on a `1,024 x 1,024` grid over the dataset's square.
Sums are accumulated in float64 here (the reference sums in float32).

## Mode coverage ([`mode_coverage`])

For data made of `K` isotropic Gaussians of standard deviation `s` (8 Gaussians), the two counts that GAN and VAE
papers report on this data: a generated point is *high quality* when it lies within `3 s` of some centre, and a mode
is *covered* when at least 1 % of the generated points lie within `3 s` of its centre. Reported: the number of modes
covered (of `K`) and the share of high-quality points.
"""

from typing import Callable, Optional, Tuple, Union

import numpy as np
import torch

from ...evaluation.frechet import ArrayLike, as_numpy

LOG_EPS = 1e-14


def histogram_density(
    points: ArrayLike, bins: int = 100, range_: Tuple[float, float] = (-2.0, 2.0), normalize_by: str = "inside"
) -> np.ndarray:
    """
    The `bins x bins` density histogram of 2D points over the square `range_ x range_`.

    Args:
        points (`np.ndarray` or `torch.Tensor`): `N x 2` points.
        bins (`int`, defaults to 100): Bins per axis.
        range_ (`Tuple[float, float]`, defaults to `(-2, 2)`): The square's `(lo, hi)` on both axes.
        normalize_by (`str`, defaults to `"inside"`):
            `"inside"`: `count / (N_inside * bin_area)` (the reference, `numpy.histogram2d(density=True)`);
            `"all"`: `count / (N * bin_area)`, so points outside the square still count in `N`.

    Returns:
        `np.ndarray`: float64 `bins x bins` densities; all zeros when no point lies inside the square.
    """
    points = as_numpy(points)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be N x 2, got shape {points.shape}.")
    if normalize_by not in ("inside", "all"):
        raise ValueError(f"normalize_by must be 'inside' or 'all', got {normalize_by!r}.")
    lo, hi = float(range_[0]), float(range_[1])
    if not hi > lo:
        raise ValueError(f"range_ must be (lo, hi) with lo < hi, got {range_}.")
    counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=bins, range=[[lo, hi], [lo, hi]])
    total = counts.sum() if normalize_by == "inside" else float(len(points))
    if total == 0:
        return np.zeros_like(counts)
    bin_area = ((hi - lo) / bins) ** 2
    return counts / (total * bin_area)


def kl_jsd_from_densities(p: np.ndarray, q: np.ndarray, bins: Optional[int] = None) -> Tuple[float, float]:
    """
    The histogram KL and JSD (see the module docstring) of two density histograms `p` (real) and `q` (generated).

    Args:
        p (`np.ndarray`): Real densities, `bins x bins`.
        q (`np.ndarray`): Generated densities, same shape.
        bins (`int`, *optional*): The divisor; defaults to `p.shape[0]` (the reference's `batchmean`).

    Returns:
        `Tuple[float, float]`: `(kl, jsd)`.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {p.shape} and {q.shape}.")
    bins = p.shape[0] if bins is None else bins
    log_p_eps = np.log(p + LOG_EPS)
    log_q_eps = np.log(q + LOG_EPS)

    pos = p > 0
    kl = np.sum(p[pos] * (np.log(p[pos]) - log_q_eps[pos])) / bins

    m = 0.5 * (p + q)
    pos = m > 0
    log_m = np.log(m[pos])
    jsd = 0.5 * np.sum(m[pos] * ((log_m - log_p_eps[pos]) + (log_m - log_q_eps[pos]))) / bins
    return float(kl), float(jsd)


def histogram_kl_jsd(
    real_points: ArrayLike,
    generated_points: ArrayLike,
    bins: int = 100,
    range_: Tuple[float, float] = (-2.0, 2.0),
    normalize_by: str = "inside",
) -> Tuple[float, float]:
    """
    Histogram KL and JSD between real and generated 2D points, the Soft-IntroVAE 2D estimators.

    See the module docstring for the exact formulas. The paper's setting is 5,000 points of each, 100 bins, and the
    dataset's square (`[-2, 2]` for 8 Gaussians, `[-4, 4]` for the others in the reference; see
    `asintrovae_hf.experiments.toy.toy_eval_range`).

    Args:
        real_points (`np.ndarray` or `torch.Tensor`): `N x 2` real points (give `p`).
        generated_points (`np.ndarray` or `torch.Tensor`): `M x 2` generated points (give `q`).
        bins (`int`, defaults to 100): Bins per axis; also the divisor of both sums.
        range_ (`Tuple[float, float]`, defaults to `(-2, 2)`): The square.
        normalize_by (`str`, defaults to `"inside"`): See [`histogram_density`]; `"inside"` is the reference.

    Returns:
        `Tuple[float, float]`: `(kl, jsd)`, both `>= 0` up to the `1e-14` offsets; lower is better.
    """
    p = histogram_density(real_points, bins=bins, range_=range_, normalize_by=normalize_by)
    q = histogram_density(generated_points, bins=bins, range_=range_, normalize_by=normalize_by)
    return kl_jsd_from_densities(p, q, bins=bins)


@torch.no_grad()
def _batched_sum_and_values(
    neg_elbo_fn: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor, batch_size: int, keep: bool
):
    total = 0.0
    values = []
    for start in range(0, len(points), batch_size):
        chunk = points[start : start + batch_size]
        out = neg_elbo_fn(chunk)
        out = torch.as_tensor(out).detach().reshape(-1).to("cpu", torch.float64)
        if out.numel() != len(chunk):
            raise ValueError(f"neg_elbo_fn must return one value per point: got {out.numel()} for {len(chunk)}.")
        total += float(out.sum())
        if keep:
            values.append(out)
    return total, (torch.cat(values) if keep else None)


def grid_normalized_elbo(
    neg_elbo_fn: Callable[[torch.Tensor], torch.Tensor],
    real_points: ArrayLike,
    grid_size: int = 1024,
    range_: Tuple[float, float] = (-2.0, 2.0),
    batch_size: int = 16384,
    device: Optional[Union[str, torch.device]] = None,
) -> float:
    """
    The grid-normalized ELBO of the Soft-IntroVAE 2D code (lower is better).

    `mean_i e(x_i) / (sum_grid e(g) + sum_i e(x_i))`, with `e` the per-point negative ELBO; see the module docstring.

    Args:
        neg_elbo_fn (`Callable[[torch.Tensor], torch.Tensor]`):
            Maps `B x 2` float32 points to their `B` negative ELBOs (the reference: `kl + squared error`, `z = mu`).
            Called under `torch.no_grad()`, one batch at a time.
        real_points (`np.ndarray` or `torch.Tensor`): `N x 2` real points (the reference uses 12,800).
        grid_size (`int`, defaults to 1024): Grid points per axis.
        range_ (`Tuple[float, float]`, defaults to `(-2, 2)`): The square of the grid.
        batch_size (`int`, defaults to 16384): Points per call of `neg_elbo_fn`, so the grid never sits in memory at
            once as network activations.
        device (`str` or `torch.device`, *optional*): Where the batches are sent before `neg_elbo_fn` (default: CPU).

    Returns:
        `float`: the score, in `(0, 1 / N]` for a non-negative `e`.
    """
    real = torch.as_tensor(as_numpy(real_points), dtype=torch.float32)
    if real.ndim != 2 or real.shape[1] != 2 or len(real) == 0:
        raise ValueError(f"real_points must be N x 2 with N > 0, got shape {tuple(real.shape)}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    fn = neg_elbo_fn if device is None else (lambda pts: neg_elbo_fn(pts.to(device)))

    real_sum, real_values = _batched_sum_and_values(fn, real, batch_size, keep=True)
    axis = torch.linspace(float(range_[0]), float(range_[1]), int(grid_size))
    grid_sum = 0.0
    rows_per_batch = max(1, batch_size // int(grid_size))
    for start in range(0, int(grid_size), rows_per_batch):
        xs = axis[start : start + rows_per_batch]
        block = torch.stack([xs.repeat_interleave(len(axis)), axis.repeat(len(xs))], dim=1)
        grid_sum += _batched_sum_and_values(fn, block, batch_size, keep=False)[0]
    normaliser = grid_sum + real_sum
    return float((real_values / normaliser).mean())


def mode_coverage(
    points: ArrayLike, centres: ArrayLike, std: float, num_std: float = 3.0, min_share: float = 0.01
) -> Tuple[int, float]:
    """
    Modes covered and the share of high-quality points (see the module docstring).

    Args:
        points (`np.ndarray` or `torch.Tensor`): `N x 2` generated points.
        centres (`np.ndarray` or `torch.Tensor`): `K x 2` mode centres.
        std (`float`): The modes' standard deviation.
        num_std (`float`, defaults to 3): The radius, in standard deviations.
        min_share (`float`, defaults to 0.01): The share of points a mode needs to count as covered.

    Returns:
        `Tuple[int, float]`: `(modes covered, share of points within num_std * std of a centre)`.
    """
    points, centres = as_numpy(points).astype(np.float64), as_numpy(centres).astype(np.float64)
    if points.ndim != 2 or centres.ndim != 2 or points.shape[1] != centres.shape[1]:
        raise ValueError(f"points must be N x D and centres K x D, got {points.shape} and {centres.shape}.")
    if len(points) == 0:
        return 0, 0.0
    distances = np.linalg.norm(points[:, None, :] - centres[None, :, :], axis=-1)  # N x K
    near = distances <= num_std * std
    nearest = distances.argmin(axis=1)
    good = near[np.arange(len(points)), nearest]
    per_mode = np.bincount(nearest[good], minlength=len(centres))
    return int((per_mode >= min_share * len(points)).sum()), float(good.mean())
