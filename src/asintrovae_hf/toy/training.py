"""Training the MLP models on vector data that is sampled afresh every iteration (the 2D toy benchmark)."""

import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..errors import CheckpointError, one_line
from ..objectives import elbo
from ..objectives.config import LOSS_TYPES
from ..objectives.losses import kl_divergence
from ..models.autoencoders import AsIntroVAEVectorDecoder, AsIntroVAEVectorEncoder
from ..objectives.introspective import IntrospectiveObjective, ObjectiveConfig
from ..training.train_step import train_step
from .hparams import BATCH_SIZE, HIDDEN_DIMS, LEARNING_RATE, LR_GAMMA, toy_lr_milestones


def train_vector_model(
    sample_fn: Callable[[int, torch.Generator], torch.Tensor],
    objective_config: ObjectiveConfig,
    num_iter: int,
    batch_size: int = BATCH_SIZE,
    latent_dim: int = 2,
    hidden_dims: Sequence[int] = HIDDEN_DIMS,
    learning_rate: float = LEARNING_RATE,
    lr_milestones: Optional[Sequence[int]] = None,
    lr_gamma: float = LR_GAMMA,
    seed: int = 0,
    log_every: int = 100,
    callback: Optional[Callable[[int, Dict[str, float]], None]] = None,
    checkpoint_path: Optional[str] = None,
    checkpoint_every: int = 1000,
    device: Optional[Union[str, torch.device]] = None,
) -> Tuple[AsIntroVAEVectorEncoder, AsIntroVAEVectorDecoder, List[Dict[str, float]]]:
    """
    Train a vector encoder/decoder pair with one of the objectives, as the official 2D loop does.

    Args:
        sample_fn (`Callable`): `sample_fn(n, generator)` returns `n x D` fresh data points.
        objective_config (`ObjectiveConfig`): The objective, its hyper-parameters and its plain-VAE warm-up
            (`num_vae_steps`, counted within `num_iter`).
        num_iter (`int`): Iterations in all, the warm-up included.
        batch_size (`int`, defaults to 512): Points per iteration.
        latent_dim (`int`, defaults to 2), hidden_dims (`Sequence[int]`, defaults to four ReLU layers of 256, the official
            networks): The widths of the MLPs' hidden layers.
        learning_rate (`float`, defaults to 2e-4): Adam learning rate of both networks.
        lr_milestones (`Sequence[int]`, *optional*): Iterations at which both learning rates are multiplied by
            `lr_gamma` (`MultiStepLR`, stepped every iteration); defaults to [`toy_lr_milestones`]`(num_iter)`, the
            official `(10000, 15000)` at 30,000 iterations. Pass `()` for a constant learning rate.
        lr_gamma (`float`, defaults to 0.1): The decay factor.
        seed (`int`, defaults to 0): Seeds the weights, the data and the noise.
        log_every (`int`, defaults to 100): Iterations between reading the loss terms on the host.
        callback (`Callable`, *optional*): Called as `callback(iteration, terms)` at each logging iteration.
        checkpoint_path (`str`, *optional*): Where to keep the state of the run (weights, optimizers, schedulers,
            the generator, the logged terms) every `checkpoint_every` iterations. When the file exists, training
            resumes from it and ends exactly as an uninterrupted run would. The file is replaced atomically and read
            with `torch.load(weights_only=True)`, so loading it runs no code.
        checkpoint_every (`int`, defaults to 1000): Iterations between checkpoints.
        device (`str` or `torch.device`, *optional*): Where the networks train (default: the CPU). The data and all
            noise are still drawn on the CPU from the run's generator and moved there, so a run draws the same random
            numbers on every device, and a checkpoint written on one device resumes on any other; only the
            arithmetic differs.

    Returns:
        The trained encoder and decoder (on the CPU, in eval mode) and the logged loss terms. With `checkpoint_path`,
        the last entry of the terms also holds `seconds`, the training time summed over resumed sessions, and
        `devices`, the devices those sessions trained on.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    dim = sample_fn(2, torch.Generator().manual_seed(0)).shape[1]
    encoder = AsIntroVAEVectorEncoder(in_features=dim, latent_dim=latent_dim, hidden_dims=tuple(hidden_dims))
    decoder = AsIntroVAEVectorDecoder(out_features=dim, latent_dim=latent_dim, hidden_dims=tuple(hidden_dims))
    device = torch.device(device if device is not None else "cpu")
    encoder.to(device), decoder.to(device)
    opt_e = torch.optim.Adam(encoder.parameters(), lr=learning_rate)
    opt_d = torch.optim.Adam(decoder.parameters(), lr=learning_rate)
    milestones = toy_lr_milestones(num_iter) if lr_milestones is None else tuple(lr_milestones)
    schedulers = [torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=lr_gamma)
                  for opt in (opt_e, opt_d)]
    objective = IntrospectiveObjective(objective_config)
    history = []
    start, seconds, started, devices = 0, 0.0, time.time(), []
    if checkpoint_path is not None and os.path.exists(checkpoint_path):
        state = _load_toy_checkpoint(checkpoint_path, num_iter)
        encoder.load_state_dict(state["encoder"])
        decoder.load_state_dict(state["decoder"])
        for target, name in ((opt_e, "opt_e"), (opt_d, "opt_d"), (schedulers[0], "sched_e"),
                             (schedulers[1], "sched_d")):
            target.load_state_dict(state[name])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history = [dict(entry) for entry in state["history"]]
        start, seconds = int(state["iteration"]), float(state["seconds"])
        devices = list(state.get("devices", ["cpu"]))
    if str(device) not in devices:
        devices.append(str(device))
    for i in range(start, num_iter):
        x = sample_fn(batch_size, generator).to(device)
        phase = objective.phase(i, num_iter)
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
        if checkpoint_path is not None and (i + 1) % checkpoint_every == 0 and i + 1 < num_iter:
            _save_toy_checkpoint(checkpoint_path, {
                "iteration": i + 1, "seconds": seconds + time.time() - started, "devices": devices, "history": history,
                "encoder": encoder.state_dict(), "decoder": decoder.state_dict(),
                "opt_e": opt_e.state_dict(), "opt_d": opt_d.state_dict(),
                "sched_e": schedulers[0].state_dict(), "sched_d": schedulers[1].state_dict(),
                "generator": generator.get_state(), "torch_rng": torch.get_rng_state()})
    if checkpoint_path is not None and history:
        history[-1]["seconds"] = round(seconds + time.time() - started, 1)
        history[-1]["devices"] = list(devices)
    return encoder.cpu().eval(), decoder.cpu().eval(), history


def _save_toy_checkpoint(path: str, state: Dict) -> None:
    """Write `state` to `path` through a temporary file, so a kill leaves the previous checkpoint whole."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(state, path + ".partial")
    os.replace(path + ".partial", path)


def _load_toy_checkpoint(path: str, num_iter: int) -> Dict:
    """Read a toy checkpoint without running code; a damaged file or one from a longer run is refused by name."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"the toy checkpoint {path} cannot be read ({one_line(error)}); delete it "
                              "to start this run afresh.") from error
    if not isinstance(state, dict) or not 0 < int(state.get("iteration", -1)) < num_iter:
        raise CheckpointError(f"the toy checkpoint {path} is not a checkpoint of a {num_iter}-iteration run; "
                              "delete it to start this run afresh.")
    return state


@torch.no_grad()
def negative_elbo_at_posterior_mean(encoder, decoder, points: torch.Tensor, loss_type: str = "mse") -> torch.Tensor:
    """
    Per-point negative ELBO with the deterministic `z = mu`: `kl(mu, logvar) + rec_err(x, G(mu))`, the training
    loss's terms ([`objectives.elbo.negative_elbo`] with the objectives' `kl_divergence` and `loss_type`'s error).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}.")
    mu, logvar = encoder(points)
    return elbo.negative_elbo(points, mu, logvar, decoder, likelihood=loss_type, sample_posterior=False,
                              kl=kl_divergence)


@torch.no_grad()
def sample_points(decoder, num_points: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Decode `z ~ N(0, I)`."""
    z = torch.randn(num_points, decoder.config.latent_dim, generator=generator)
    return decoder(z)
