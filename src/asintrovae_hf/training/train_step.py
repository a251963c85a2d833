"""One training iteration: the encoder update, then the decoder update, each with its own optimizer.

Neither network is frozen with `requires_grad_(False)`. Each backward pass is restricted to the parameters of the
network it trains (`backward(inputs=...)`): autograd then skips the other network's weight gradients entirely,
and under DDP every wrapped network sees either all of its gradient hooks fire or none, which keeps gradient
synchronisation correct without `find_unused_parameters`.

Gradient accumulation: an iteration may take several micro-batches. The encoder's gradient is accumulated over all
of them before the encoder update, then the decoder's (computed with the updated encoder) before the decoder
update, each micro-batch's loss divided by their number. The noise batch `z_f` is drawn once for the whole
iteration and split. With per-sample generators (a list, one per sample) every sample draws the same noise whether
it sits in one batch or in a micro-batch, and the update equals the big batch's exactly (each micro-batch's loss weighted by its share of the samples) for the objectives whose
losses are batch means of per-sample terms (VAE, Soft-IntroVAE); IntroVAE's hinge acts on batch means and
AS-IntroVAE's distance on the whole batch, so for them (and for BatchNorm statistics) accumulation approximates it.
"""

import contextlib
import functools
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from diffusers.utils.torch_utils import is_compiled_module, randn_tensor

from ..objectives.introspective import IntrospectiveObjective

Generator = Optional[Union[torch.Generator, List[torch.Generator]]]


def _default_backward(loss: torch.Tensor, **kwargs) -> None:
    loss.backward(**kwargs)


def _trainable(module: torch.nn.Module) -> list:
    return [p for p in module.parameters() if p.requires_grad]


def _split_generator(generator: Generator, sizes: Sequence[int]) -> List[Generator]:
    if not isinstance(generator, list):
        return [generator] * len(sizes)
    if len(generator) != sum(sizes):
        raise ValueError(f"Got {len(generator)} generators for {sum(sizes)} samples; give one per sample.")
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [generator[s : s + n] for s, n in zip(starts, sizes)]


def _retainable_compiled_graphs(*modules: torch.nn.Module):
    """
    A context in which `torch.compile`d modules' backward graphs can be kept (`retain_graph=True`), or a no-op.

    AOTAutograd's "donated buffers" let a compiled backward reuse its saved tensors' memory, and then it refuses a
    retained graph ("This backward function was compiled with non-empty donated buffers ...", seen with torch 2.14
    on CPU). The switch is read when a training graph compiles, at the first forward in grad mode, which happens in
    [`train_step`], and again when its backward runs. Written by hand: neither torch.compile nor Accelerate offers a
    public option for it.
    """
    if not any(is_compiled_module(m) for m in modules):
        return contextlib.nullcontext()
    try:
        from torch._functorch import config as functorch_config
    except ImportError:  # another torch layout
        return contextlib.nullcontext()
    if not hasattr(functorch_config, "donated_buffer"):
        return contextlib.nullcontext()
    return functorch_config.patch(donated_buffer=False)


def _keeps_compiled_graphs(step: Callable) -> Callable:
    """Run `step(objective, encoder, decoder, ...)` with [`_retainable_compiled_graphs`] of its networks."""

    @functools.wraps(step)
    def wrapper(objective, encoder, decoder, *args, **kwargs):
        with _retainable_compiled_graphs(encoder, decoder):
            return step(objective, encoder, decoder, *args, **kwargs)

    return wrapper


def _draw_labels(labels: torch.Tensor, generator) -> torch.Tensor:
    """Labels for the fake batch: drawn from the real batch's labels, uniformly with replacement."""
    generator = generator[0] if isinstance(generator, list) else generator
    index = torch.randint(0, len(labels), (len(labels),), generator=generator,
                          device=generator.device if generator is not None else labels.device)
    return labels[index.to(labels.device)]


def _mean_terms(all_terms: List[Dict[str, torch.Tensor]], weights: List[float]) -> Dict[str, torch.Tensor]:
    if len(all_terms) == 1:
        return all_terms[0]
    return {k: sum(w * t[k] for w, t in zip(weights, all_terms)) for k in all_terms[0]}


@_keeps_compiled_graphs
def train_step(
    objective: IntrospectiveObjective,
    encoder: torch.nn.Module,
    decoder: torch.nn.Module,
    encoder_optimizer: torch.optim.Optimizer,
    decoder_optimizer: torch.optim.Optimizer,
    x: Union[torch.Tensor, Sequence[torch.Tensor]],
    latent_dim: int,
    c: float = 1.0,
    vae_step: bool = False,
    backward: Optional[Callable] = None,
    generator: Generator = None,
    max_grad_norm: Optional[float] = None,
    clip_grad_norm: Optional[Callable] = None,
    micro_batch_generators: Optional[List[torch.Generator]] = None,
    labels: Optional[Union[torch.Tensor, Sequence[torch.Tensor]]] = None,
    measure_gradients: bool = False,
) -> Dict[str, torch.Tensor]:
    """
    Run one iteration and return its detached loss terms (device tensors: no host sync here): a VAE step
    ([`train_vae_step`]) in the warm-up and for objectives that are not introspective, else an encoder step and a
    decoder step ([`train_introspective_step`]).

    Args:
        objective (`IntrospectiveObjective`): The losses.
        encoder, decoder (`torch.nn.Module`): The networks, possibly wrapped (DDP, `torch.compile`).
        encoder_optimizer, decoder_optimizer (`torch.optim.Optimizer`): One optimizer per network.
        x (`torch.Tensor` or a sequence of them): The real batch, or its micro-batches (gradient accumulation).
        latent_dim (`int`): Size of the latent vector, for the noise batch `z_f`.
        c (`float`, defaults to 1.0): The schedule weight `c(i)` of this step ([`IntrospectiveObjective.phase`]).
        vae_step (`bool`, defaults to `False`): A plain-VAE iteration, one loss for both networks (the warm-up:
            [`IntrospectiveObjective.phase`]); objectives that are not introspective take one every step.
        backward (`Callable`, *optional*): `accelerator.backward`, or `loss.backward` when omitted.
        generator (`torch.Generator` or `List[torch.Generator]`, *optional*): Source of all noise in the iteration;
            a list gives each sample its own generator.
        max_grad_norm (`float`, *optional*): Clip each network's gradient to this norm before its update.
        clip_grad_norm (`Callable`, *optional*): `accelerator.clip_grad_norm_` (unscales fp16 gradients first), or
            `torch.nn.utils.clip_grad_norm_` when omitted.
        micro_batch_generators (`List[torch.Generator]`, *optional*): Instead of `generator`, one generator per
            micro-batch, each the source of its micro-batch's noise (`z_f` included), as each process of a
            multi-process run has its own: one process with `k` micro-batches then draws what `k` processes would.
        labels (`torch.Tensor` or a sequence of them, *optional*): Class-conditional models: the labels of `x` (per
            micro-batch). The fake batch draws its labels from them (uniformly, with replacement: the data's label
            distribution), after `z_f`.
        measure_gradients (`bool`, defaults to `False`): Also return the norms of the encoder's gradient from the
            adversarial part of `L_E` (`grad_norm_adversarial`) and from its VAE part (`grad_norm_vae`), over the
            encoder's trainable parameters, summed over micro-batches (this process's; the weights are unchanged).
    """
    batches = MicroBatches.split(x, labels, generator, micro_batch_generators)
    backward = backward or _default_backward
    update = functools.partial(_update, max_grad_norm=max_grad_norm,
                               clip_grad_norm=clip_grad_norm or torch.nn.utils.clip_grad_norm_)
    if vae_step or not objective.is_introspective:
        return train_vae_step(objective, encoder, decoder, encoder_optimizer, decoder_optimizer, batches, backward,
                              update)
    return train_introspective_step(objective, encoder, decoder, encoder_optimizer, decoder_optimizer, batches,
                                    latent_dim, c, backward, update, measure_gradients)


@dataclass
class MicroBatches:
    """
    The real batch of one iteration as micro-batches (one for no accumulation), each with its labels, its source of
    noise and its weight (its share of the samples: the weighted sum of their losses is the big batch's mean).
    `generator` draws the noise batch of the whole iteration, which is then split, unless each micro-batch has its
    own generator (`noise_per_micro_batch`).
    """

    images: List[torch.Tensor]
    labels: List[Optional[torch.Tensor]]
    generators: List[Generator]
    weights: List[float]
    generator: Generator = None
    noise_per_micro_batch: bool = False

    @classmethod
    def split(cls, x, labels, generator: Generator, micro_batch_generators) -> "MicroBatches":
        images = [x] if torch.is_tensor(x) else list(x)
        sizes = [len(m) for m in images]
        label_batches = [None] * len(images) if labels is None else (
            [labels] if torch.is_tensor(labels) else list(labels))
        if micro_batch_generators is not None:
            if generator is not None or len(micro_batch_generators) != len(images):
                raise ValueError(f"Give either generator or one of micro_batch_generators per micro-batch "
                                 f"({len(images)}), not {len(micro_batch_generators)} and a generator.")
            generators = list(micro_batch_generators)
        else:
            generators = _split_generator(generator, sizes)
        return cls(images, label_batches, generators, [n / sum(sizes) for n in sizes], generator,
                   noise_per_micro_batch=micro_batch_generators is not None)

    @property
    def sizes(self) -> List[int]:
        return [len(m) for m in self.images]

    def noise(self, latent_dim: int) -> List[torch.Tensor]:
        """The noise batch `z_f`, per micro-batch: drawn once and split, or by each micro-batch's generator."""
        device = self.images[0].device
        # in the data's dtype (float32 under autocast too; float64 for float64 networks)
        dtype = self.images[0].dtype
        if self.noise_per_micro_batch:
            return [randn_tensor((n, latent_dim), generator=g, device=device, dtype=dtype)
                    for n, g in zip(self.sizes, self.generators)]
        return list(randn_tensor((sum(self.sizes), latent_dim), generator=self.generator, device=device,
                                 dtype=dtype).split(self.sizes))


def _update(optimizer: torch.optim.Optimizer, module: torch.nn.Module, max_grad_norm: Optional[float],
            clip_grad_norm: Callable) -> None:
    if max_grad_norm is not None:
        clip_grad_norm(_trainable(module), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def train_vae_step(
    objective: IntrospectiveObjective,
    encoder: torch.nn.Module,
    decoder: torch.nn.Module,
    encoder_optimizer: torch.optim.Optimizer,
    decoder_optimizer: torch.optim.Optimizer,
    batches: MicroBatches,
    backward: Callable,
    update: Callable,
) -> Dict[str, torch.Tensor]:
    """A plain-VAE iteration (`docs/algorithm.md`, Eq. 5): one loss, both networks updated together."""
    encoder_optimizer.zero_grad(set_to_none=True)
    decoder_optimizer.zero_grad(set_to_none=True)
    all_terms = []
    for xk, gk, w, yk in zip(batches.images, batches.generators, batches.weights, batches.labels):
        loss, terms = objective.vae_loss(encoder, decoder, xk, gk, labels=yk)
        backward(loss * w if w != 1.0 else loss)
        all_terms.append(terms)
    update(encoder_optimizer, encoder)
    update(decoder_optimizer, decoder)
    return _mean_terms(all_terms, batches.weights)


def train_introspective_step(
    objective: IntrospectiveObjective,
    encoder: torch.nn.Module,
    decoder: torch.nn.Module,
    encoder_optimizer: torch.optim.Optimizer,
    decoder_optimizer: torch.optim.Optimizer,
    batches: MicroBatches,
    latent_dim: int,
    c: float,
    backward: Callable,
    update: Callable,
    measure_gradients: bool = False,
) -> Dict[str, torch.Tensor]:
    """An introspective iteration: the encoder step and update, then the decoder step and update (see
    [`train_step`] for the arguments)."""
    z_fs = batches.noise(latent_dim)
    single = len(batches.images) == 1
    encoder_optimizer.zero_grad(set_to_none=True)
    outputs, gradient_parts = [], {}
    fake_label_batches = [None if yk is None else _draw_labels(yk, gk)
                          for yk, gk in zip(batches.labels, batches.generators)]
    for xk, zk, gk, w, yk, yfk in zip(batches.images, z_fs, batches.generators, batches.weights, batches.labels,
                                      fake_label_batches):
        out = objective.encoder_step(encoder, decoder, xk, zk, c, gk, labels=yk, fake_labels=yfk)
        if measure_gradients:
            _add_gradient_norms(gradient_parts, out, w, _trainable(encoder))
        # One micro-batch: the graph stays alive, the decoder step reuses G(z_f), G(z) and L_rec from it (compiled
        # networks too: `_keeps_compiled_graphs`).
        backward(out.loss if single else out.loss * w, inputs=_trainable(encoder), retain_graph=single)
        outputs.append(out if single else out.without_graph())
    update(encoder_optimizer, encoder)  # also frees the gradients before the decoder step

    decoder_optimizer.zero_grad(set_to_none=True)
    all_terms = []
    for out, xk, gk, w in zip(outputs, batches.images, batches.generators, batches.weights):
        loss_decoder, decoder_terms = objective.decoder_step(encoder, decoder, xk, out, c, gk)
        backward(loss_decoder * w if w != 1.0 else loss_decoder, inputs=_trainable(decoder))
        all_terms.append({**out.terms, **decoder_terms})
    update(decoder_optimizer, decoder)

    terms = _mean_terms(all_terms, batches.weights)
    terms["c"] = torch.tensor(objective.effective_c(c))
    for name, parts in gradient_parts.items():
        terms[name] = torch.sqrt(sum(g.double().pow(2).sum() for g in parts)).float()
    return terms


def _add_gradient_norms(parts: Dict[str, list], out, weight: float, params: list) -> None:
    """Accumulate (into `parts`) the encoder's gradients from the adversarial and the VAE parts of one micro-batch's
    `L_E`, without touching `.grad`."""
    losses = {"grad_norm_adversarial": out.adversarial_loss, "grad_norm_vae": out.loss - out.adversarial_loss}
    for name, loss in losses.items():
        grads = torch.autograd.grad(loss * weight, params, retain_graph=True, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]
        previous = parts.get(name)
        parts[name] = grads if previous is None else [a + b for a, b in zip(previous, grads)]
