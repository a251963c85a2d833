"""The negative ELBO: the one estimate of `-log p(x)` that scoring, the toy benchmark and OOD detection use.

`negative_elbo` is `KL(q(z|x) || p(z)) - E_q[log p(x|z)]` per sample, or the importance-weighted bound. The
likelihood, the posterior samples and the weighting are explicit arguments, so each caller states its estimate.

This module is also part of the code every saved pipeline ships (it is bundled into `pipeline_asintrovae.py`):
it must import only torch, diffusers and the standard library.
"""

import math
from typing import Callable, List, Optional, Union

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

# `-log p(x|z)` per sample: "gaussian" is a Gaussian of variance 1/2 per value around the decoder's output (the
# squared error plus `D/2 log(pi)`); "mse" and "l1" are the squared and absolute errors without a normalising
# constant (the training losses' scaled likelihoods); "bce" is a Bernoulli (a decoder with a sigmoid output).
LIKELIHOODS = ("gaussian", "mse", "l1", "bce")


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-sample `KL(N(mean, exp(logvar)) || N(0, I)) = 0.5 * sum_z (mean^2 + exp(logvar) - 1 - logvar)`."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def reconstruction_nll(x: torch.Tensor, x_rec: torch.Tensor, likelihood: str = "gaussian") -> torch.Tensor:
    """
    Per-sample `-log p(x | z)` of targets `x` under the decoder's output `x_rec` (both `B x ...`), summed over
    all values; `likelihood` is one of `LIKELIHOODS`.
    """
    if likelihood in ("gaussian", "mse"):
        err = (x - x_rec).pow(2)
    elif likelihood == "l1":
        err = (x - x_rec).abs()
    elif likelihood == "bce":
        err = F.binary_cross_entropy(x_rec.clamp(1e-6, 1 - 1e-6), x, reduction="none")
    else:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}.")
    nll = err.flatten(1).sum(dim=1)
    if likelihood == "gaussian":
        nll = nll + 0.5 * x[0].numel() * math.log(math.pi)
    return nll


def negative_elbo(
    x: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor],
    likelihood: str = "gaussian",
    num_samples: int = 1,
    sample_posterior: bool = True,
    importance_weighted: bool = False,
    generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
    kl: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = gaussian_kl,
) -> torch.Tensor:
    r"""
    Per-sample negative ELBO, `kl(mean, logvar) + mean_k -log p(x | z_k)` in nats, `z_k ~ q(z|x)`.

    Args:
        x (`torch.Tensor`): The data, `B x ...`.
        mean, logvar (`torch.Tensor`): The posterior `q(z|x)`, `B x Z` each.
        decode (`Callable`): Maps `B x Z` latents to the decoder's output, the shape of `x`.
        likelihood (`str`, defaults to `"gaussian"`): One of `LIKELIHOODS` (see there).
        num_samples (`int`, defaults to 1): Posterior samples `z_k` per sample.
        sample_posterior (`bool`, defaults to `True`): Draw `z_k = mean + exp(logvar / 2) * eps` (with
            `randn_tensor` and `generator`, one draw of `B x Z` per `k`); `False` decodes `z = mean` once (a
            deterministic estimate; `num_samples` must then be 1).
        importance_weighted (`bool`, defaults to `False`): Return `-log mean_k p(x, z_k) / q(z_k | x)` (Burda et
            al., 2016) instead; the KL is then estimated from the samples, and `kl` is not used.
        generator (`torch.Generator` or `List[torch.Generator]`, *optional*): Source of `eps`; a list has one per
            sample.
        kl (`Callable`, defaults to `gaussian_kl`): The closed-form KL term. The toy benchmark passes the
            objectives' `kl_divergence` (the same value, summed in another order), so its ELBO is bit for bit the
            training loss's terms.
    """
    if not sample_posterior and (num_samples != 1 or importance_weighted):
        raise ValueError("sample_posterior=False decodes the posterior mean once: num_samples must be 1, and the "
                         "importance-weighted bound needs posterior samples.")
    log_weights, nll = [], []
    for _ in range(num_samples):
        if sample_posterior:
            z = mean + torch.exp(0.5 * logvar) * randn_tensor(mean.shape, generator=generator, device=mean.device,
                                                              dtype=mean.dtype)
        else:
            z = mean
        nll.append(reconstruction_nll(x, decode(z), likelihood))
        if importance_weighted:
            log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1)
            log_qz = -0.5 * ((z - mean).pow(2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(1)
            log_weights.append(-nll[-1] + log_pz - log_qz)
    if importance_weighted:
        return -(torch.logsumexp(torch.stack(log_weights), 0) - math.log(num_samples))
    return torch.stack(nll).mean(0) + kl(mean, logvar)
