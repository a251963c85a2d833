"""The training objectives of the introspective VAE family, written as `docs/algorithm.md` writes them.

One iteration of an introspective method is an encoder step followed by a decoder step, each with its own
optimizer. [`IntrospectiveObjective.encoder_step`] and [`IntrospectiveObjective.decoder_step`] compute the two
losses; the caller backpropagates each into one network only (see [`asintrovae_hf.training.train_step`]).

Random draws, in order, so a test can replay them: the encoder step draws `eps` for `z`, then for `z_rec`, then
for `z_fake` (only the introspective VAEs that decode them); the decoder step draws `eps` for `z_rec`, then for
`z_fake`. The noise batch `z_f` is drawn by the caller once per iteration and passed to both steps.

Work is not done twice: the decoder weights do not change during the encoder step, so `fake = G(z_f)`,
`rec = G(z)` and `L_rec` of the encoder step are exactly the decoder step's `G(z_f)`, `G(z.detach())` and `L_rec`.
They are computed once, with their graph, and the decoder step backpropagates through them into the decoder.
"""

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from .as_distance import as_distance
from .losses import kl_divergence, reconstruction_error, reparameterize
from .config import OBJECTIVES, ObjectiveConfig

__all__ = ["OBJECTIVES", "EncoderStepOutput", "IntrospectiveObjective", "ObjectiveConfig"]

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


class IntrospectiveObjective:
    r"""
    Losses of one training iteration for VAE, IntroVAE, Soft-IntroVAE and AS-IntroVAE.

    `encoder(x)` must return `(mu, logvar)` and `decoder(z)` the data (the `forward` of this package's models,
    possibly wrapped by DDP or `torch.compile`).

    Args:
        config (`ObjectiveConfig`, *optional*): Hyper-parameters; keyword arguments build one when omitted.
    """

    def __init__(self, config: Optional[ObjectiveConfig] = None, **kwargs):
        if config is not None and kwargs:
            raise ValueError("Pass either an ObjectiveConfig or keyword arguments, not both.")
        self.config = config if config is not None else ObjectiveConfig(**kwargs)

    @property
    def is_introspective(self) -> bool:
        return self.config.objective != "vae"

    @property
    def squash(self) -> bool:
        return self.config.objective == "as-introvae" and self.config.squash

    def effective_c(self, c: float) -> float:
        """Soft-IntroVAE is AS-IntroVAE with `c = 1`; the other objectives do not use `c`."""
        return c if self.config.uses_c else 1.0

    def _squash(self, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(t) if self.squash else t

    def _dis(self, mu_r, logvar_r, mu_f, logvar_f, reduction: str) -> torch.Tensor:
        """`dis = AS(rec posteriors, fake posteriors)` after the optional squash, times `dis_scale`."""
        cfg = self.config
        dis = as_distance(
            self._squash(mu_r),
            self._squash(logvar_r),
            self._squash(mu_f),
            self._squash(logvar_f),
            reduction=reduction,
            include_constant=cfg.include_constant,
        )
        return cfg.dis_scale * dis

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
        """The plain VAE loss `beta_rec L_rec + beta_kl KL_real`, for both networks at once."""
        cfg = self.config
        mu, logvar = self._encode(encoder, x, labels)
        z = reparameterize(mu, logvar, generator)
        rec = self._decode(decoder, z, labels)
        loss_rec = self._rec_err(x, rec).mean()
        kl_real = kl_divergence(mu, logvar).mean()
        loss = cfg.beta_rec * loss_rec + cfg.beta_kl * kl_real
        terms = {"loss": loss, "loss_rec": loss_rec, "kl_real": kl_real}
        return loss, {k: v.detach() for k, v in terms.items()}

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
            c (`float`, defaults to 1.0): The schedule weight `c(i)` (AS-IntroVAE only).
            generator (`torch.Generator`, *optional*): Source of the reparameterisation noise.
            labels, fake_labels (`torch.Tensor`, *optional*): Class-conditional models: the labels of the real
                batch (also those of its reconstructions) and of the fake batch.
        """
        if not self.is_introspective:
            raise ValueError("The 'vae' objective has no separate encoder step; use `vae_loss`.")
        cfg = self.config
        s = self.scale(x)
        c = self.effective_c(c)

        # 1. fake = G(z_f); (mu, logvar) = E(x); z = reparam(mu, logvar); rec = G(z)
        y, y_f = labels, fake_labels
        fake = self._decode(decoder, z_f, y_f)
        mu, logvar = self._encode(encoder, x, y)
        z = reparameterize(mu, logvar, generator)
        rec = self._decode(decoder, z, y)

        # 2. L_rec, KL_real
        loss_rec = self._rec_err(x, rec).mean()
        kl_real = kl_divergence(mu, logvar).mean()
        terms = {"loss_rec": loss_rec, "kl_real": kl_real}

        mu_r, logvar_r = self._encode(encoder, rec.detach(), y)
        mu_f, logvar_f = self._encode(encoder, fake.detach(), y_f)

        if cfg.objective == "introvae":
            kl_rec = kl_divergence(mu_r, logvar_r).mean()
            kl_fake = kl_divergence(mu_f, logvar_f).mean()
            hinge = torch.relu(cfg.margin - kl_rec) + torch.relu(cfg.margin - kl_fake)
            adversarial = s * cfg.beta_neg * hinge / 2
            loss = s * (cfg.beta_rec * loss_rec + cfg.beta_kl * kl_real) + adversarial
            terms.update(kl_rec=kl_rec, kl_fake=kl_fake)
        else:
            # 3. For y in {rec, fake}: z_y = reparam(E(y)), y_rec = G(z_y), per-sample KL_y and R_y
            rec_rec = self._decode(decoder, reparameterize(mu_r, logvar_r, generator), y)
            rec_fake = self._decode(decoder, reparameterize(mu_f, logvar_f, generator), y_f)
            kl_rec = kl_divergence(mu_r, logvar_r)
            kl_fake = kl_divergence(mu_f, logvar_f)
            # R_rec's target: rec.detach() (docs/algorithm.md, Eq. 15) or the attached rec (reference code)
            r_rec = self._rec_err(rec.detach() if cfg.detach_rec_target else rec, rec_rec)
            r_fake = self._rec_err(fake.detach(), rec_fake)

            # 4. dis = AS(rec posteriors, fake posteriors); it vanishes from the loss once c = 1
            if c < 1.0:
                dis = self._dis(mu_r, logvar_r, mu_f, logvar_f, cfg.encoder_reduction)
            else:
                dis = torch.zeros((), device=x.device)

            # 5. expELBO_y = mean_b exp(-2 s (beta_rec R_y + beta_neg (c KL_y + (1 - c) dis)))
            exp_elbo_rec = torch.exp(-2 * s * (cfg.beta_rec * r_rec + cfg.beta_neg * (c * kl_rec + (1 - c) * dis))).mean()
            exp_elbo_fake = torch.exp(-2 * s * (cfg.beta_rec * r_fake + cfg.beta_neg * (c * kl_fake + (1 - c) * dis))).mean()

            # 6. L_E = s (beta_rec L_rec + beta_kl KL_real) + 0.25 (expELBO_rec + expELBO_fake)
            adversarial = 0.25 * (exp_elbo_rec + exp_elbo_fake)
            loss = s * (cfg.beta_rec * loss_rec + cfg.beta_kl * kl_real) + adversarial
            terms.update(
                kl_rec=kl_rec.mean(),
                kl_fake=kl_fake.mean(),
                exp_elbo_rec=exp_elbo_rec,
                exp_elbo_fake=exp_elbo_fake,
                dis_encoder=dis,
            )
        terms["loss_encoder"] = loss
        terms = {k: v.detach() for k, v in terms.items()}
        return EncoderStepOutput(loss=loss, terms=terms, z=z, z_f=z_f, rec=rec, fake=fake, loss_rec=loss_rec,
                                 labels=y, fake_labels=y_f, adversarial_loss=adversarial)

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
            encoder_output (`EncoderStepOutput`): The encoder step's output; its `rec`, `fake` and `loss_rec`
                are this step's `G(z.detach())`, `G(z_f)` and `L_rec` (same decoder weights), recomputed from its
                `z` and `z_f` when it holds no graph ([`EncoderStepOutput.without_graph`]).
            c (`float`, defaults to 1.0): The schedule weight `c(i)`.
            generator (`torch.Generator`, *optional*): Source of the reparameterisation noise.
        """
        cfg = self.config
        s = self.scale(x)
        c = self.effective_c(c)

        # 1. fake = G(z_f); rec = G(z.detach()); L_rec = mean_b rec_err(x, rec)
        fake, rec, loss_rec = encoder_output.fake, encoder_output.rec, encoder_output.loss_rec
        if rec is None:
            fake = self._decode(decoder, encoder_output.z_f, encoder_output.fake_labels)
            rec = self._decode(decoder, encoder_output.z.detach(), encoder_output.labels)
            loss_rec = self._rec_err(x, rec).mean()

        # 2. (mu_r, logvar_r) = E(rec), (mu_f, logvar_f) = E(fake)
        y, y_f = encoder_output.labels, encoder_output.fake_labels
        mu_r, logvar_r = self._encode(encoder, rec, y)
        mu_f, logvar_f = self._encode(encoder, fake, y_f)

        if cfg.objective == "introvae":
            kl_rec = kl_divergence(mu_r, logvar_r).mean()
            kl_fake = kl_divergence(mu_f, logvar_f).mean()
            loss = s * (cfg.beta_rec * loss_rec + 0.5 * cfg.beta_kl * (kl_rec + kl_fake))
            terms = {"kl_rec_decoder": kl_rec, "kl_fake_decoder": kl_fake}
        else:
            # rec_rec = G(reparam(mu_r, logvar_r).detach()), rec_fake = G(reparam(mu_f, logvar_f).detach())
            rec_rec = self._decode(decoder, reparameterize(mu_r, logvar_r, generator).detach(), y)
            rec_fake = self._decode(decoder, reparameterize(mu_f, logvar_f, generator).detach(), y_f)

            # 3. L_rr, L_ff
            loss_rr = self._rec_err(rec.detach(), rec_rec).mean()
            loss_ff = self._rec_err(fake.detach(), rec_fake).mean()

            # 4. KL_r, KL_f (after the optional squash), dis = AS(r, f)
            kl_r = kl_divergence(self._squash(mu_r), self._squash(logvar_r)).mean()
            kl_f = kl_divergence(self._squash(mu_f), self._squash(logvar_f)).mean()
            if c < 1.0:
                dis = self._dis(mu_r, logvar_r, mu_f, logvar_f, cfg.decoder_reduction)
            else:
                dis = torch.zeros((), device=x.device)

            # 5. L_G = s (beta_rec L_rec + 0.5 beta_kl (c (KL_r + KL_f) + (1 - c) dis)
            #             + 0.5 gamma_r beta_rec (L_rr + L_ff))
            loss = s * (
                cfg.beta_rec * loss_rec
                + 0.5 * cfg.beta_kl * (c * (kl_r + kl_f) + (1 - c) * dis)
                + 0.5 * cfg.gamma_r * cfg.beta_rec * (loss_rr + loss_ff)
            )
            terms = {
                "kl_rec_decoder": kl_r,
                "kl_fake_decoder": kl_f,
                "loss_rr": loss_rr,
                "loss_ff": loss_ff,
                "dis_decoder": dis,
            }
        terms["loss_decoder"] = loss
        return loss, {k: v.detach() for k, v in terms.items()}
