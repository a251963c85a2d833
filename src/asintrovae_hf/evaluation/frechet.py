r"""The Frechet distance between Gaussians fitted to features (the FID's formula).

    d^2 = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

with the matrix square root of `scipy.linalg.sqrtm`. When the product is singular (scipy warns, or the root is not
finite), `eps * I` is added to both covariances and the distance is that of the regularised pair (identical inputs
still give 0, not the `-2 D eps` of regularising the root alone). An imaginary part of the root that is numerical
noise is dropped; a large one is an error. From features, `mu` is the mean and `S` the unbiased (`N - 1`)
covariance, as in the FID.
"""

import warnings
from typing import Sequence, Union

import numpy as np
import torch

from ..errors import require

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence]


def as_numpy(points: ArrayLike) -> np.ndarray:
    """`points` (a tensor, array or nested sequence) as a float64 NumPy array; a tensor is detached and moved to the
    CPU first."""
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().double().numpy()
    return np.asarray(points, dtype=np.float64)


def frechet_distance(
    mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike, eps: float = 1e-6
) -> float:
    """
    Frechet distance between `N(mu1, sigma1)` and `N(mu2, sigma2)`:
    `||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2))`.

    Args:
        mu1 (`np.ndarray`): Mean, `D`.
        sigma1 (`np.ndarray`): Covariance, `D x D`.
        mu2 (`np.ndarray`): Mean, `D`.
        sigma2 (`np.ndarray`): Covariance, `D x D`.
        eps (`float`, defaults to 1e-6): Added to both diagonals when `sigma1 sigma2` is singular (common for ReLU
            features with dead units).

    Returns:
        `float`: the squared distance (the FID when the features are Inception's).

    Raises:
        `ValueError`: on mismatched shapes, or when the square root has a non-negligible imaginary part.
    """
    require("scipy", purpose="The Frechet distance (FID)", extra="eval")
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(as_numpy(mu1)), np.atleast_1d(as_numpy(mu2))
    sigma1, sigma2 = np.atleast_2d(as_numpy(sigma1)), np.atleast_2d(as_numpy(sigma2))
    if mu1.shape != mu2.shape:
        raise ValueError(f"The means have different shapes: {mu1.shape} and {mu2.shape}.")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise ValueError(f"The covariances must be D x D with D = {mu1.shape[0]}: got {sigma1.shape}, {sigma2.shape}.")

    diff = mu1 - mu2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    singular = any(issubclass(w.category, linalg.LinAlgWarning) for w in caught)
    if singular or not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        sigma1, sigma2 = sigma1 + offset, sigma2 + offset  # the distance between the regularised Gaussians
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(np.diagonal(covmean).imag)) if covmean.size else 0.0
        scale = max(1.0, float(np.max(np.abs(covmean.real))) if covmean.size else 1.0)
        if imag > 1e-3 * scale:
            raise ValueError(f"The covariance product's square root has an imaginary part of {imag:.3g}.")
        covmean = covmean.real
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)
    return float(value)


def frechet_distance_from_features(feats1: ArrayLike, feats2: ArrayLike, eps: float = 1e-6) -> float:
    """
    Frechet distance between Gaussians fitted to two feature sets (mean, unbiased covariance), e.g. the FID.

    Args:
        feats1 (`np.ndarray` or `torch.Tensor`): `N1 x D` features (`N1 >= 2`).
        feats2 (`np.ndarray` or `torch.Tensor`): `N2 x D` features (`N2 >= 2`).
        eps (`float`, defaults to 1e-6): See [`frechet_distance`].

    Returns:
        `float`: the distance.
    """
    feats1, feats2 = as_numpy(feats1), as_numpy(feats2)
    for name, feats in (("feats1", feats1), ("feats2", feats2)):
        if feats.ndim != 2 or feats.shape[0] < 2:
            raise ValueError(f"{name} must be N x D with N >= 2, got shape {feats.shape}.")
    if feats1.shape[1] != feats2.shape[1]:
        raise ValueError(f"Feature sizes differ: {feats1.shape[1]} and {feats2.shape[1]}.")
    mu1, mu2 = feats1.mean(0), feats2.mean(0)
    sigma1 = np.atleast_2d(np.cov(feats1, rowvar=False))
    sigma2 = np.atleast_2d(np.cov(feats2, rowvar=False))
    return frechet_distance(mu1, sigma1, mu2, sigma2, eps=eps)
