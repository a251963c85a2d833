"""Training the MLP models on vector data that is sampled afresh every iteration (the 2D toy benchmark)."""

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..losses import kl_divergence, reconstruction_error
from ..models import AsIntroVAEVectorDecoder, AsIntroVAEVectorEncoder
from ..objectives import IntrospectiveObjective, ObjectiveConfig
from ..train_step import train_step
from .hparams import BATCH_SIZE, LEARNING_RATE, LR_GAMMA, toy_lr_milestones


def train_vector_model(
    sample_fn: Callable[[int, torch.Generator], torch.Tensor],
    objective_config: ObjectiveConfig,
    num_iter: int,
    batch_size: int = BATCH_SIZE,
    latent_dim: int = 2,
    hidden_dims: Sequence[int] = (256, 256, 256),
    learning_rate: float = LEARNING_RATE,
    lr_milestones: Optional[Sequence[int]] = None,
    lr_gamma: float = LR_GAMMA,
    seed: int = 0,
    log_every: int = 100,
    callback: Optional[Callable[[int, Dict[str, float]], None]] = None,
) -> Tuple[AsIntroVAEVectorEncoder, AsIntroVAEVectorDecoder, List[Dict[str, float]]]:
    """
    Train a vector encoder/decoder pair with one of the objectives, as the official 2D loop does.

    Args:
        sample_fn (`Callable`): `sample_fn(n, generator)` returns `n x D` fresh data points.
        objective_config (`ObjectiveConfig`): The objective, its hyper-parameters and its plain-VAE warm-up
            (`num_vae_steps`, counted within `num_iter`).
        num_iter (`int`): Iterations in all, the warm-up included.
        batch_size (`int`, defaults to 512): Points per iteration.
        latent_dim (`int`, defaults to 2), hidden_dims (`Sequence[int]`, defaults to three layers of 256): The MLPs.
        learning_rate (`float`, defaults to 2e-4): Adam learning rate of both networks.
        lr_milestones (`Sequence[int]`, *optional*): Iterations at which both learning rates are multiplied by
            `lr_gamma` (`MultiStepLR`, stepped every iteration); defaults to [`toy_lr_milestones`]`(num_iter)`, the
            official `(10000, 15000)` at 30,000 iterations. Pass `()` for a constant learning rate.
        lr_gamma (`float`, defaults to 0.1): The decay factor.
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
    milestones = toy_lr_milestones(num_iter) if lr_milestones is None else tuple(lr_milestones)
    schedulers = [torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=lr_gamma)
                  for opt in (opt_e, opt_d)]
    objective = IntrospectiveObjective(objective_config)
    history = []
    for i in range(num_iter):
        x = sample_fn(batch_size, generator)
        phase = objective_config.phase(i, num_iter)
        terms = train_step(objective, encoder, decoder, opt_e, opt_d, x, latent_dim, c=phase.c, vae_step=phase.vae,
                           generator=generator)
        for scheduler in schedulers:
            scheduler.step()
        if (i + 1) % log_every == 0 or i + 1 == num_iter:
            host = {k: float(v) for k, v in terms.items()}
            host["iteration"] = i + 1
            host["lr"] = schedulers[0].get_last_lr()[0]
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
