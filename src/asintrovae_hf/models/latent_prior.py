"""A fitted latent sampler: a Gaussian mixture over a trained pipeline's latent space.

Sampling from `N(0, I)` decodes latents the encoder never produced where the aggregate posterior leaves holes in the
prior. [`GaussianMixtureLatentPrior`] is a density fitted after training to the posterior means of the training
split (the "ex-post density estimation" idea, as pythae's GMM sampler does), saved with the pipeline as its optional
`latent_prior` component (`latent_prior/config.json` and `diffusion_pytorch_model.safetensors`) and used with
`pipe(..., latent_sampler="fitted")`.

Sampling and `log_prob` need torch only. Fitting ([`fit_latent_prior`], [`GaussianMixtureLatentPrior.from_latents`])
uses scikit-learn's `GaussianMixture` (EM with k-means initialisation), in the `train` and `eval` extras.

This file is also the code a saved pipeline ships in its `latent_prior/` folder, so it imports nothing from this
package and only torch, numpy, diffusers and the standard library at its top (scikit-learn is imported where a fit
needs it, through importlib).
"""

import importlib
import math
from typing import List, Optional, Union

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

COVARIANCE_TYPES = ("diag", "full")


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"GaussianMixtureLatentPrior: {name} must be a positive integer, got {str(value)[:80]!r}.")


class GaussianMixtureLatentPrior(ModelMixin, ConfigMixin):
    r"""
    A mixture of `num_components` Gaussians over `latent_dim`-dimensional latents.

    Parameters:
        latent_dim (`int`): Size `Z` of the latents (the pipeline's `latent_dim`).
        num_components (`int`, *optional*, defaults to 10): Mixture components `K`.
        covariance_type (`str`, *optional*, defaults to `"diag"`): `"diag"` (buffer `covariances` is `K x Z`: the
            variances) or `"full"` (`K x Z x Z` covariance matrices).

    Buffers (saved as safetensors): `weights` (`K`, summing to 1), `means` (`K x Z`), `covariances`. A fresh one is
    `K` copies of `N(0, I)` with equal weights, i.e. the standard prior.
    """

    @register_to_config
    def __init__(self, latent_dim: int = 2, num_components: int = 10, covariance_type: str = "diag"):
        super().__init__()
        _check_positive_int("latent_dim", latent_dim)
        _check_positive_int("num_components", num_components)
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"GaussianMixtureLatentPrior: covariance_type must be one of {COVARIANCE_TYPES}, got "
                             f"{str(covariance_type)[:80]!r}.")
        k, z = num_components, latent_dim
        self.register_buffer("weights", torch.full((k,), 1.0 / k))
        self.register_buffer("means", torch.zeros(k, z))
        covariances = torch.ones(k, z) if covariance_type == "diag" else torch.eye(z).repeat(k, 1, 1)
        self.register_buffer("covariances", covariances)

    # ---- fitting --------------------------------------------------------------------------------------------------

    @classmethod
    def from_latents(cls, latents, num_components: int = 10, covariance_type: str = "diag", seed: int = 0,
                     reg_covar: float = 1e-6, max_iter: int = 500, n_init: int = 1) -> "GaussianMixtureLatentPrior":
        r"""
        Fit the mixture to `N x Z` latents with scikit-learn's `GaussianMixture` (EM, k-means initialisation seeded
        by `seed`, `reg_covar` added to the variances). Needs scikit-learn (`pip install "asintrovae-hf[eval]"`).
        """
        points = torch.as_tensor(latents).detach().cpu().double().numpy() if not isinstance(latents, np.ndarray) \
            else np.asarray(latents, dtype=np.float64)
        if points.ndim != 2 or not np.isfinite(points).all():
            raise ValueError(f"from_latents: expected finite N x Z latents, got shape {tuple(points.shape)}.")
        _check_positive_int("num_components", num_components)
        if len(points) < num_components:
            raise ValueError(f"from_latents: {num_components} components need at least as many latents, got "
                             f"{len(points)}.")
        try:
            mixture_module = importlib.import_module("sklearn.mixture")
        except ImportError:
            raise ImportError("Fitting a latent prior needs scikit-learn, which is not installed: pip install "
                              "'asintrovae-hf[eval]'") from None
        gmm = mixture_module.GaussianMixture(n_components=num_components, covariance_type=covariance_type,
                                             random_state=seed, reg_covar=reg_covar, max_iter=max_iter,
                                             n_init=n_init)
        gmm.fit(points)
        prior = cls(latent_dim=points.shape[1], num_components=num_components, covariance_type=covariance_type)
        weights = torch.from_numpy(gmm.weights_).double()
        with torch.no_grad():
            prior.weights.copy_((weights / weights.sum()).float())
            prior.means.copy_(torch.from_numpy(gmm.means_).float())
            prior.covariances.copy_(torch.from_numpy(gmm.covariances_).float())
        return prior.eval()

    # ---- sampling and density -------------------------------------------------------------------------------------

    def _checked(self):
        """The buffers in float64, after checking they make a mixture (a hand-edited or damaged file is refused)."""
        weights, means, covariances = (b.detach().double().cpu() for b in (self.weights, self.means, self.covariances))
        if not (torch.isfinite(weights).all() and (weights >= 0).all() and abs(float(weights.sum()) - 1) < 1e-3):
            raise ValueError("GaussianMixtureLatentPrior: its weights must be finite, non-negative and sum to 1; "
                             "refit it with fit_latent_prior.")
        if not (torch.isfinite(means).all() and torch.isfinite(covariances).all()):
            raise ValueError("GaussianMixtureLatentPrior: its means and covariances must be finite.")
        if self.config.covariance_type == "diag":
            if not (covariances > 0).all():
                raise ValueError("GaussianMixtureLatentPrior: its variances must be positive.")
            scales = covariances.sqrt()
        else:
            scales, info = torch.linalg.cholesky_ex(covariances)
            if (info != 0).any():
                raise ValueError("GaussianMixtureLatentPrior: its covariance matrices must be positive definite.")
        return weights / weights.sum(), means, scales

    def _draw(self, count: int, generator: Optional[torch.Generator], weights, means, scales) -> torch.Tensor:
        device = generator.device if generator is not None else torch.device("cpu")
        components = torch.multinomial(weights.to(device), count, replacement=True, generator=generator).cpu()
        noise = torch.randn(count, means.shape[1], generator=generator, device=device, dtype=torch.float64).cpu()
        if scales.dim() == 2:
            return means[components] + scales[components] * noise
        return means[components] + torch.einsum("nij,nj->ni", scales[components], noise)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
               device: Optional[Union[str, torch.device]] = None, dtype: Optional[torch.dtype] = None
               ) -> torch.Tensor:
        r"""
        Draw `num_samples x latent_dim` latents: a component by its weight, then a Gaussian draw from it.

        Args:
            num_samples (`int`): How many latents.
            generator (`torch.Generator` or `List[torch.Generator]`, *optional*): Makes the draw deterministic; a
                list of `num_samples` generators draws each latent with its own (so a latent does not depend on the
                rest of the batch). The draw runs on the generator's device (the CPU without one), in float64.
            device, dtype (*optional*): Where the latents go; default the buffers' device and dtype.
        """
        _check_positive_int("num_samples", num_samples)
        weights, means, scales = self._checked()
        if isinstance(generator, (list, tuple)):
            if len(generator) != num_samples:
                raise ValueError(f"Got {len(generator)} generators for {num_samples} samples; give one per sample.")
            latents = torch.cat([self._draw(1, g, weights, means, scales) for g in generator])
        else:
            latents = self._draw(num_samples, generator, weights, means, scales)
        return latents.to(device=device or self.means.device, dtype=dtype or self.means.dtype)

    @torch.no_grad()
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """The mixture's log-density of `B x Z` latents, in nats (a `B` tensor, float64)."""
        weights, means, scales = self._checked()
        z = torch.as_tensor(z).detach().double().cpu()
        if z.dim() != 2 or z.shape[1] != means.shape[1]:
            raise ValueError(f"log_prob: expected B x {means.shape[1]} latents, got shape {tuple(z.shape)}.")
        dim = means.shape[1]
        diff = z[:, None, :] - means[None]  # B x K x Z
        if scales.dim() == 2:
            mahalanobis = (diff / scales[None]).pow(2).sum(-1)
            log_det = 2 * scales.log().sum(-1)
        else:
            solved = torch.linalg.solve_triangular(scales[None], diff[..., None], upper=False)[..., 0]
            mahalanobis = solved.pow(2).sum(-1)
            log_det = 2 * torch.diagonal(scales, dim1=-2, dim2=-1).log().sum(-1)
        log_components = -0.5 * (mahalanobis + log_det[None] + dim * math.log(2 * math.pi))
        return torch.logsumexp(log_components + weights.clamp_min(1e-300).log()[None], dim=1)

    def forward(self, num_samples: int, generator=None) -> torch.Tensor:
        return self.sample(num_samples, generator=generator)


@torch.no_grad()
def encode_means(pipeline, images, batch_size: int = 256, class_labels=None) -> torch.Tensor:
    """The posterior means `E[q(z | x)]` of `images` (anything `pipeline.encode` takes), `batch_size` at a time."""
    if isinstance(images, torch.Tensor):
        parts = []
        for start in range(0, len(images), batch_size):
            labels = None if class_labels is None else class_labels[start: start + batch_size]
            parts.append(pipeline.encode(images[start: start + batch_size], class_labels=labels)
                         .latent_dist.mean.float().cpu())
        return torch.cat(parts)
    return pipeline.encode(images, class_labels=class_labels).latent_dist.mean.float().cpu()


def fit_latent_prior(pipeline, images, num_components: int = 10, seed: int = 0, covariance_type: str = "diag",
                     batch_size: int = 256, class_labels=None, **fit_kwargs) -> GaussianMixtureLatentPrior:
    r"""
    Fit a [`GaussianMixtureLatentPrior`] to the posterior means of `images` (the training split) under `pipeline`'s
    encoder, with scikit-learn's `GaussianMixture` (needs scikit-learn). The result is on the CPU in float32; attach
    it with `pipe.latent_prior = prior` and save it with `pipe.save_pretrained(...)`.

    Examples:
        ```py
        >>> from asintrovae_hf.evaluation.heldout import split_images
        >>> train, _ = split_images("digits", "train", pipe.encoder.config.sample_size)
        >>> pipe.latent_prior = fit_latent_prior(pipe, train, num_components=10)
        >>> images = pipe(batch_size=16, latent_sampler="fitted", generator=torch.manual_seed(0)).images
        ```
    """
    latents = encode_means(pipeline, images, batch_size=batch_size, class_labels=class_labels)
    return GaussianMixtureLatentPrior.from_latents(latents, num_components=num_components,
                                                   covariance_type=covariance_type, seed=seed, **fit_kwargs)
