"""Training the MLP models on vector data that is sampled afresh every iteration (the 2D toy benchmark)."""

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .losses import kl_divergence, reconstruction_error, weight_schedule
from .models import AsIntroVAEVectorDecoder, AsIntroVAEVectorEncoder
from .objectives import IntrospectiveObjective, ObjectiveConfig
from .train_step import train_step


def train_vector_model(
    sample_fn: Callable[[int, torch.Generator], torch.Tensor],
    objective_config: ObjectiveConfig,
    num_iter: int,
    batch_size: int = 512,
    num_vae_steps: int = 2000,
    latent_dim: int = 2,
    hidden_dims: Sequence[int] = (256, 256, 256),
    learning_rate: float = 2e-4,
    seed: int = 0,
    log_every: int = 100,
    callback: Optional[Callable[[int, Dict[str, float]], None]] = None,
) -> Tuple[AsIntroVAEVectorEncoder, AsIntroVAEVectorDecoder, List[Dict[str, float]]]:
    """
    Train a vector encoder/decoder pair with one of the objectives.

    Args:
        sample_fn (`Callable`): `sample_fn(n, generator)` returns `n x D` fresh data points.
        objective_config (`ObjectiveConfig`): The objective and its hyper-parameters.
        num_iter (`int`): Iterations in all, the plain-VAE warm-up included.
        batch_size (`int`, defaults to 512): Points per iteration.
        num_vae_steps (`int`, defaults to 2000): Plain-VAE warm-up iterations; `c(i)` counts the rest only.
        latent_dim (`int`, defaults to 2), hidden_dims (`Sequence[int]`, defaults to three layers of 256): The MLPs.
        learning_rate (`float`, defaults to 2e-4): Adam learning rate of both networks.
        seed (`int`, defaults to 0): Seeds the weights, the data and the noise.
        log_every (`int`, defaults to 100): Iterations between reading the loss terms on the host.
        callback (`Callable`, *optional*): Called as `callback(iteration, terms)` at each logging iteration.

    Returns:
        The trained encoder and decoder (in eval mode) and the logged loss terms.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    dim = sample_fn(2, torch.Generator().manual_seed(0)).shape[1]
    encoder = AsIntroVAEVectorEncoder(in_features=dim, latent_dim=latent_dim, hidden_dims=tuple(hidden_dims))
    decoder = AsIntroVAEVectorDecoder(out_features=dim, latent_dim=latent_dim, hidden_dims=tuple(hidden_dims))
    opt_e = torch.optim.Adam(encoder.parameters(), lr=learning_rate)
    opt_d = torch.optim.Adam(decoder.parameters(), lr=learning_rate)
    objective = IntrospectiveObjective(objective_config)
    total_adversarial = max(num_iter - num_vae_steps, 1)
    history = []
    for i in range(num_iter):
        x = sample_fn(batch_size, generator)
        vae_step = objective_config.objective == "vae" or i < num_vae_steps
        c = weight_schedule(i - num_vae_steps, total_adversarial, objective_config.schedule)
        terms = train_step(objective, encoder, decoder, opt_e, opt_d, x, latent_dim, c=c, vae_step=vae_step,
                           generator=generator)
        if (i + 1) % log_every == 0 or i + 1 == num_iter:
            host = {k: float(v) for k, v in terms.items()}
            host["iteration"] = i + 1
            history.append(host)
            if callback is not None:
                callback(i + 1, host)
    return encoder.eval(), decoder.eval(), history


@torch.no_grad()
def negative_elbo(encoder, decoder, points: torch.Tensor, loss_type: str = "mse") -> torch.Tensor:
    """Per-point negative ELBO with the deterministic `z = mu`: `kl(mu, logvar) + rec_err(x, G(mu))`."""
    mu, logvar = encoder(points)
    return kl_divergence(mu, logvar) + reconstruction_error(points, decoder(mu), loss_type)


@torch.no_grad()
def sample_points(decoder, num_points: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Decode `z ~ N(0, I)`."""
    z = torch.randn(num_points, decoder.config.latent_dim, generator=generator)
    return decoder(z)
