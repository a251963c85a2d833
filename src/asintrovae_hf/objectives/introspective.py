"""What the objectives of the introspective VAE family share: the base class, the encoder step's output, the plain
VAE loss and the schedule of the steps. Each method is one file (`vae.py`, `introvae.py`, `soft_introvae.py`,
`as_introvae.py`), registered by name (`registry.py`); [`IntrospectiveObjective`] builds the registered class of its
config's `objective`.

One iteration of an introspective method is an encoder step followed by a decoder step, each with its own
optimizer. [`IntrospectiveObjective.encoder_step`] and [`IntrospectiveObjective.decoder_step`] compute the two
losses; the caller backpropagates each into one network only (see [`asintrovae_hf.training.train_step`]).

Random draws, in order, so a test can replay them: the encoder step draws `eps` for `z`, then for `z_rec`, then
for `z_fake` (only the introspective VAEs that decode them); the decoder step draws `eps` for `z_rec`, then for
`z_fake`. The noise batch `z_f` is drawn by the caller once per iteration and passed to both steps.

Work is not done twice: the decoder weights do not change during the encoder step, so `fake = G(z_f)`,
`rec = G(z)` and `L_rec` of the encoder step are exactly the decoder step's `G(z_f)`, `G(z.detach())` and `L_rec`.
They are computed once, with their graph ([`IntrospectiveObjective.real_and_fake`]), and the decoder step
backpropagates through them into the decoder ([`IntrospectiveObjective.decoder_inputs`]).
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch

from .config import ObjectiveConfig, Phase, weight_schedule
from .losses import kl_divergence, reconstruction_error, reparameterize
from .registry import get_objective

__all__ = ["EncoderStepOutput", "IntrospectiveObjective", "ObjectiveConfig", "RealAndFake"]


@dataclass
class EncoderStepOutput:
    """
    The encoder loss and what the decoder step reuses.

    Args:
        loss (`torch.Tensor`): `L_E`.
        terms (`Dict[str, torch.Tensor]`): Detached loss terms for logging.
        z (`torch.Tensor`): The latents of the real batch (`reparam(E(x))`).
        z_f (`torch.Tensor`): The noise batch.
        rec (`torch.Tensor`): `G(z)`, with its graph into the decoder.
        fake (`torch.Tensor`): `G(z_f)`, with its graph into the decoder.
        loss_rec (`torch.Tensor`): `L_rec = mean_b rec_err(x, rec)`, with its graph.
        adversarial_loss (`torch.Tensor`): The part of `L_E` that is not the VAE loss (IntroVAE's hinge term; the
            `expELBO` terms of Soft-IntroVAE and AS-IntroVAE), with its graph; for measuring its gradient.
    """

    loss: torch.Tensor
    terms: Dict[str, torch.Tensor]
    z: torch.Tensor
    z_f: Optional[torch.Tensor] = None
    rec: Optional[torch.Tensor] = None
    fake: Optional[torch.Tensor] = None
    loss_rec: Optional[torch.Tensor] = None
    labels: Optional[torch.Tensor] = None
    fake_labels: Optional[torch.Tensor] = None
    adversarial_loss: Optional[torch.Tensor] = None

    def without_graph(self) -> "EncoderStepOutput":
        """Only the latents (`z` detached, `z_f`): the decoder step then recomputes `G(z_f)`, `G(z)` and `L_rec`, so
        no graph stays alive in between (gradient accumulation over several micro-batches)."""
        return EncoderStepOutput(loss=self.loss.detach(), terms=self.terms, z=self.z.detach(), z_f=self.z_f,
                                 labels=self.labels, fake_labels=self.fake_labels)


def _upcast(t: torch.Tensor) -> torch.Tensor:
    """Losses are computed in float32 even when the networks run under bf16/fp16 autocast."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


Network = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class RealAndFake:
    """
    The start of every encoder step (`docs/algorithm.md`, section 4), with its graph: `fake = G(z_f)`,
    `z = reparam(E(x))`, `rec = G(z)`, `L_rec = mean_b rec(x, rec)` and `KL_real = mean_b kl(E(x))`.
    """

    z: torch.Tensor
    z_f: torch.Tensor
    rec: torch.Tensor
    fake: torch.Tensor
    loss_rec: torch.Tensor
    kl_real: torch.Tensor
    labels: Optional[torch.Tensor] = None
    fake_labels: Optional[torch.Tensor] = None

    def output(self, loss: torch.Tensor, adversarial_loss: torch.Tensor, **terms: torch.Tensor) -> EncoderStepOutput:
        """The encoder step's output for `L_E = loss`, its part `adversarial_loss` and the method's `terms` to log."""
        terms = {"loss_rec": self.loss_rec, "kl_real": self.kl_real, **terms, "loss_encoder": loss}
        return EncoderStepOutput(loss=loss, terms={k: v.detach() for k, v in terms.items()}, z=self.z, z_f=self.z_f,
                                 rec=self.rec, fake=self.fake, loss_rec=self.loss_rec, labels=self.labels,
                                 fake_labels=self.fake_labels, adversarial_loss=adversarial_loss)


class IntrospectiveObjective:
    r"""
    Losses and schedule of one training iteration; the base of VAE, IntroVAE, Soft-IntroVAE and AS-IntroVAE.

    `IntrospectiveObjective(config)` builds the class registered for `config.objective`.
    `encoder(x)` must return `(mu, logvar)` and `decoder(z)` the data (the `forward` of this package's models,
    possibly wrapped by DDP or `torch.compile`).

    A method is a subclass, registered by name ([`register_objective`]). It overrides [`encoder_step`] and
    [`decoder_step`] (introspective methods) or nothing (a VAE: [`vae_loss`] every step), and sets what the rest of
    the package reads from the registry: its `name` (`--objective`), `display_name` and `description` (model cards
    and tables), `defaults` (per dataset, e.g. `{"digits": {"beta_neg": 64.0}}`), `is_introspective` (an encoder
    step and a decoder step per iteration, else one VAE step) and `uses_c` (its terms are weighed by `c(i)`).

    Args:
        config (`ObjectiveConfig`, *optional*): Hyper-parameters; keyword arguments build one when omitted (their
            `objective` defaults to the class's `name`).
    """

    name: Optional[str] = None
    display_name: str = ""
    description: str = ""
    defaults: Mapping[str, Mapping[str, Any]] = {}
    is_introspective: bool = True
    uses_c: bool = False

    def __new__(cls, config: Optional[ObjectiveConfig] = None, **kwargs):
        if cls is IntrospectiveObjective:
            name = config.objective if config is not None else kwargs.get("objective", ObjectiveConfig.objective)
            cls = get_objective(name)
        return super().__new__(cls)

    def __init__(self, config: Optional[ObjectiveConfig] = None, **kwargs):
        if config is not None and kwargs:
            raise ValueError("Pass either an ObjectiveConfig or keyword arguments, not both.")
        if config is None:
            kwargs.setdefault("objective", self.name)
        self.config = config if config is not None else ObjectiveConfig(**kwargs)

    def effective_c(self, c: float) -> float:
        """The `c` the objective uses: `c` if it weighs its terms with `c(i)`, else 1."""
        return c if self.uses_c else 1.0

    def phase(self, step: int, total_steps: int) -> Phase:
        r"""
        The phase of training step `step` (0-based) of `total_steps` (`docs/algorithm.md`, Eq. 12): a plain-VAE step
        (the warm-up, or a non-introspective objective) or an adversarial one, and the weight `c` of that step.

        `c(i)` counts adversarial steps only: `i = step - num_vae_steps` of `T = total_steps - num_vae_steps`. `c`
        is 1 for an objective that does not use `c`, and 0 during the warm-up.
        """
        cfg = self.config
        vae = not self.is_introspective or step < cfg.num_vae_steps
        if not self.uses_c:
            return Phase(vae, 1.0)
        adversarial_step = max(step - cfg.num_vae_steps, 0)
        total_adversarial = max(total_steps - cfg.num_vae_steps, 1)
        return Phase(vae, weight_schedule(adversarial_step, total_adversarial, cfg.schedule))

    def _rec_err(self, x: torch.Tensor, x_rec: torch.Tensor) -> torch.Tensor:
        return reconstruction_error(_upcast(x), _upcast(x_rec), self.config.loss_type)

    @staticmethod
    def _encode(encoder: Network, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = encoder(x) if y is None else encoder(x, y)
        return _upcast(mu), _upcast(logvar)

    @staticmethod
    def _decode(decoder: Network, z: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        return decoder(z) if y is None else decoder(z, y)

    @staticmethod
    def scale(x: torch.Tensor) -> float:
        """`s = 1 / (C*H*W)` for images, `1 / D` for vectors."""
        return 1.0 / x[0].numel()

    def vae_loss(
        self,
        encoder: Network,
        decoder: Network,
        x: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        labels: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """The plain VAE loss `beta_rec L_rec + beta_kl KL_real` (Eq. 5), for both networks at once."""
        cfg = self.config
        mu, logvar = self._encode(encoder, x, labels)
        z = reparameterize(mu, logvar, generator)
        rec = self._decode(decoder, z, labels)
        loss_rec = self._rec_err(x, rec).mean()
        kl_real = kl_divergence(mu, logvar).mean()
        loss = cfg.beta_rec * loss_rec + cfg.beta_kl * kl_real
        terms = {"loss": loss, "loss_rec": loss_rec, "kl_real": kl_real}
        return loss, {k: v.detach() for k, v in terms.items()}

    def real_and_fake(
        self,
        encoder: Network,
        decoder: Network,
        x: torch.Tensor,
        z_f: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        labels: Optional[torch.Tensor] = None,
        fake_labels: Optional[torch.Tensor] = None,
    ) -> RealAndFake:
        """`fake = G(z_f)`; `(mu, logvar) = E(x)`; `z = reparam(mu, logvar)`; `rec = G(z)`; `L_rec`, `KL_real`."""
        fake = self._decode(decoder, z_f, fake_labels)
        mu, logvar = self._encode(encoder, x, labels)
        z = reparameterize(mu, logvar, generator)
        rec = self._decode(decoder, z, labels)
        loss_rec = self._rec_err(x, rec).mean()
        kl_real = kl_divergence(mu, logvar).mean()
        return RealAndFake(z=z, z_f=z_f, rec=rec, fake=fake, loss_rec=loss_rec, kl_real=kl_real, labels=labels,
                           fake_labels=fake_labels)

    def decoder_inputs(
        self, decoder: Network, x: torch.Tensor, encoder_output: EncoderStepOutput
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        The decoder step's `rec = G(z.detach())`, `fake = G(z_f)` and `L_rec = mean_b rec(x, rec)`: the encoder
        step's (same decoder weights), recomputed when it holds no graph ([`EncoderStepOutput.without_graph`]).
        """
        rec, fake, loss_rec = encoder_output.rec, encoder_output.fake, encoder_output.loss_rec
        if rec is None:
            fake = self._decode(decoder, encoder_output.z_f, encoder_output.fake_labels)
            rec = self._decode(decoder, encoder_output.z.detach(), encoder_output.labels)
            loss_rec = self._rec_err(x, rec).mean()
        return rec, fake, loss_rec

    def encoder_step(
        self,
        encoder: Network,
        decoder: Network,
        x: torch.Tensor,
        z_f: torch.Tensor,
        c: float = 1.0,
        generator: Optional[torch.Generator] = None,
        labels: Optional[torch.Tensor] = None,
        fake_labels: Optional[torch.Tensor] = None,
    ) -> EncoderStepOutput:
        """
        The encoder loss `L_E` of one iteration.

        Args:
            encoder, decoder: The networks (see the class docstring).
            x (`torch.Tensor`): The real batch.
            z_f (`torch.Tensor`): The noise batch `z_f ~ N(0, I)`, shared with the decoder step.
            c (`float`, defaults to 1.0): The schedule weight `c(i)` (objectives that use it).
            generator (`torch.Generator`, *optional*): Source of the reparameterisation noise.
            labels, fake_labels (`torch.Tensor`, *optional*): Class-conditional models: the labels of the real
                batch (also those of its reconstructions) and of the fake batch.
        """
        raise ValueError(f"The {self.config.objective!r} objective has no separate encoder step; use `vae_loss`.")

    def decoder_step(
        self,
        encoder: Network,
        decoder: Network,
        x: torch.Tensor,
        encoder_output: EncoderStepOutput,
        c: float = 1.0,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """
        The decoder loss `L_G` of the same iteration, after the encoder has been updated.

        Args:
            encoder, decoder: The networks.
            x (`torch.Tensor`): The real batch.
            encoder_output (`EncoderStepOutput`): The encoder step's output (see [`decoder_inputs`]).
            c (`float`, defaults to 1.0): The schedule weight `c(i)`.
            generator (`torch.Generator`, *optional*): Source of the reparameterisation noise.
        """
        raise ValueError(f"The {self.config.objective!r} objective has no separate decoder step; use `vae_loss`.")
