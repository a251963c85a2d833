"""The building blocks of the objectives: reparameterisation, KL divergence, reconstruction error.

Names and conventions follow `docs/algorithm.md`: every function returns per-sample values (shape `B`) unless it
says otherwise, so the objectives can write `mean_b` where the equations do.
"""

from typing import Optional

import torch
from diffusers.utils.torch_utils import randn_tensor

from .config import LOSS_TYPES
from .elbo import reconstruction_nll


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """`z = mu + exp(0.5 logvar) * eps`, `eps ~ N(0, I)` drawn with `generator`."""
    eps = randn_tensor(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-sample `KL(N(mu, exp(logvar)) || N(0, I)) = -0.5 * sum_z (1 + logvar - mu^2 - exp(logvar))`."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


def reconstruction_error(x: torch.Tensor, x_rec: torch.Tensor, loss_type: str = "mse") -> torch.Tensor:
    """
    Per-sample reconstruction error summed over all data dimensions.

    Args:
        x (`torch.Tensor`): Targets, `B x ...`.
        x_rec (`torch.Tensor`): Reconstructions, same shape.
        loss_type (`str`, *optional*, defaults to `"mse"`): `"mse"` (squared error), `"l1"` (absolute error) or
            `"bce"` (binary cross-entropy; `x` in `[0, 1]`, `x_rec` probabilities, e.g. from a decoder with
            `output_activation="sigmoid"`).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}.")
    return reconstruction_nll(x, x_rec, loss_type)  # the ELBO's likelihood term, without a constant
