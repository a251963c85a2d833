"""One training iteration: the encoder update, then the decoder update, each with its own optimizer.

Neither network is frozen with `requires_grad_(False)`. Each backward pass is restricted to the parameters of the
network it trains (`backward(inputs=...)`): autograd then skips the other network's weight gradients entirely,
and under DDP every wrapped network sees either all of its gradient hooks fire or none, which keeps gradient
synchronisation correct without `find_unused_parameters`.
"""

from typing import Callable, Dict, Optional

import torch
from diffusers.utils.torch_utils import randn_tensor

from .objectives import IntrospectiveObjective


def _default_backward(loss: torch.Tensor, **kwargs) -> None:
    loss.backward(**kwargs)


def _trainable(module: torch.nn.Module) -> list:
    return [p for p in module.parameters() if p.requires_grad]


def train_step(
    objective: IntrospectiveObjective,
    encoder: torch.nn.Module,
    decoder: torch.nn.Module,
    encoder_optimizer: torch.optim.Optimizer,
    decoder_optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    latent_dim: int,
    c: float = 1.0,
    vae_step: bool = False,
    backward: Optional[Callable] = None,
    generator: Optional[torch.Generator] = None,
) -> Dict[str, torch.Tensor]:
    """
    Run one iteration and return its detached loss terms (device tensors: no host sync here).

    Args:
        objective (`IntrospectiveObjective`): The losses.
        encoder, decoder (`torch.nn.Module`): The networks, possibly wrapped (DDP, `torch.compile`).
        encoder_optimizer, decoder_optimizer (`torch.optim.Optimizer`): One optimizer per network.
        x (`torch.Tensor`): The real batch.
        latent_dim (`int`): Size of the latent vector, for the noise batch `z_f`.
        c (`float`, defaults to 1.0): The schedule weight `c(i)`.
        vae_step (`bool`, defaults to `False`): Train a plain VAE this iteration (warm-up, or the `vae`
            objective): one loss, both networks updated together.
        backward (`Callable`, *optional*): `accelerator.backward`, or `loss.backward` when omitted.
        generator (`torch.Generator`, *optional*): Source of all noise in the iteration.
    """
    backward = backward or _default_backward
    if vae_step or not objective.is_introspective:
        loss, terms = objective.vae_loss(encoder, decoder, x, generator)
        encoder_optimizer.zero_grad(set_to_none=True)
        decoder_optimizer.zero_grad(set_to_none=True)
        backward(loss)
        encoder_optimizer.step()
        decoder_optimizer.step()
        return terms

    z_f = randn_tensor((x.shape[0], latent_dim), generator=generator, device=x.device, dtype=torch.float32)

    encoder_output = objective.encoder_step(encoder, decoder, x, z_f, c, generator)
    encoder_optimizer.zero_grad(set_to_none=True)
    # The graph stays alive: the decoder step reuses G(z_f), G(z) and L_rec from it.
    backward(encoder_output.loss, inputs=_trainable(encoder), retain_graph=True)
    encoder_optimizer.step()
    encoder_optimizer.zero_grad(set_to_none=True)  # frees the gradients before the decoder step

    loss_decoder, decoder_terms = objective.decoder_step(encoder, decoder, x, encoder_output, c, generator)
    decoder_optimizer.zero_grad(set_to_none=True)
    backward(loss_decoder, inputs=_trainable(decoder))
    decoder_optimizer.step()
    decoder_optimizer.zero_grad(set_to_none=True)

    terms = dict(encoder_output.terms)
    terms.update(decoder_terms)
    terms["c"] = torch.tensor(objective.effective_c(c))
    return terms
