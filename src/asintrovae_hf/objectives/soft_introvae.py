"""Soft-IntroVAE (`docs/algorithm.md`, Eq. 15-17): the encoder minimises a soft exponential of the ELBO of
reconstructions and fakes, the decoder maximises their ELBO."""

from typing import Dict, Optional, Tuple

import torch

from .introspective import EncoderStepOutput, IntrospectiveObjective, Network
from .losses import kl_divergence, reparameterize

Posterior = Tuple[torch.Tensor, torch.Tensor]


class SoftIntroVAEObjective(IntrospectiveObjective):
    r"""
    Soft-IntroVAE (options `beta_rec`, `beta_kl`, `beta_neg`, `gamma_r`, `detach_rec_target`, `loss_type`).

    The adversarial divergence of reconstructions and fakes is their KL to the prior ([`encoder_divergences`],
    [`decoder_divergence`]); a subclass replaces it (AS-IntroVAE mixes in the AS-Distance).
    """

    name = "soft-introvae"
    display_name = "Soft-IntroVAE"
    description = ("Soft-IntroVAE (Daniel & Tamar, CVPR 2021) is an introspective VAE: the encoder maximises the ELBO "
                   "of real images and minimises a soft exponential of the ELBO of generated and reconstructed ones, "
                   "while the decoder maximises the ELBO of what it generates.")
    defaults = {"digits": {"beta_neg": 64.0}}  # measured with AS-IntroVAE's (see there)

    def encoder_divergences(
        self, kl_rec: torch.Tensor, kl_fake: torch.Tensor, rec_posterior: Posterior, fake_posterior: Posterior,
        c: float,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The divergences of rec and fake in the encoder's `expELBO` terms (per sample: `KL_rec`, `KL_fake`), and
        the distance logged as `dis_encoder` (0: none here)."""
        return kl_rec, kl_fake, torch.zeros((), device=kl_rec.device)

    def decoder_divergence(
        self, rec_posterior: Posterior, fake_posterior: Posterior, c: float
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder's divergence term `KL_r + KL_f`, with `KL_r`, `KL_f` and the distance logged as
        `dis_decoder` (0: none here)."""
        kl_r = kl_divergence(*rec_posterior).mean()
        kl_f = kl_divergence(*fake_posterior).mean()
        return kl_r + kl_f, kl_r, kl_f, torch.zeros((), device=kl_r.device)

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
        """Eq. 15-16: `L_E = s (beta_rec L_rec + beta_kl KL_real) + 0.25 (expELBO_rec + expELBO_fake)`."""
        cfg, s, c = self.config, self.scale(x), self.effective_c(c)
        real = self.real_and_fake(encoder, decoder, x, z_f, generator, labels, fake_labels)
        y, y_f = labels, fake_labels

        # For y in {rec, fake}: (mu_y, logvar_y) = E(y.detach()), y_rec = G(reparam(mu_y, logvar_y)), per-sample
        # KL_y and R_y
        mu_r, logvar_r = self._encode(encoder, real.rec.detach(), y)
        mu_f, logvar_f = self._encode(encoder, real.fake.detach(), y_f)
        rec_rec = self._decode(decoder, reparameterize(mu_r, logvar_r, generator), y)
        rec_fake = self._decode(decoder, reparameterize(mu_f, logvar_f, generator), y_f)
        kl_rec = kl_divergence(mu_r, logvar_r)
        kl_fake = kl_divergence(mu_f, logvar_f)
        # R_rec's target: rec.detach() (docs/algorithm.md, Eq. 15) or the attached rec (reference code)
        r_rec = self._rec_err(real.rec.detach() if cfg.detach_rec_target else real.rec, rec_rec)
        r_fake = self._rec_err(real.fake.detach(), rec_fake)
        div_rec, div_fake, dis = self.encoder_divergences(kl_rec, kl_fake, (mu_r, logvar_r), (mu_f, logvar_f), c)

        # expELBO_y = mean_b exp(-2 s (beta_rec R_y + beta_neg div_y))
        exp_elbo_rec = torch.exp(-2 * s * (cfg.beta_rec * r_rec + cfg.beta_neg * div_rec)).mean()
        exp_elbo_fake = torch.exp(-2 * s * (cfg.beta_rec * r_fake + cfg.beta_neg * div_fake)).mean()

        adversarial = 0.25 * (exp_elbo_rec + exp_elbo_fake)
        loss = s * (cfg.beta_rec * real.loss_rec + cfg.beta_kl * real.kl_real) + adversarial
        return real.output(loss, adversarial, kl_rec=kl_rec.mean(), kl_fake=kl_fake.mean(), exp_elbo_rec=exp_elbo_rec,
                           exp_elbo_fake=exp_elbo_fake, dis_encoder=dis)

    def decoder_step(
        self,
        encoder: Network,
        decoder: Network,
        x: torch.Tensor,
        encoder_output: EncoderStepOutput,
        c: float = 1.0,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Eq. 17: `L_G = s (beta_rec L_rec + 0.5 beta_kl (KL_r + KL_f) + 0.5 gamma_r beta_rec (L_rr + L_ff))`."""
        cfg, s, c = self.config, self.scale(x), self.effective_c(c)
        rec, fake, loss_rec = self.decoder_inputs(decoder, x, encoder_output)
        y, y_f = encoder_output.labels, encoder_output.fake_labels

        # (mu_r, logvar_r) = E(rec), (mu_f, logvar_f) = E(fake), attached: the gradient flows through E into G
        mu_r, logvar_r = self._encode(encoder, rec, y)
        mu_f, logvar_f = self._encode(encoder, fake, y_f)
        rec_rec = self._decode(decoder, reparameterize(mu_r, logvar_r, generator).detach(), y)
        rec_fake = self._decode(decoder, reparameterize(mu_f, logvar_f, generator).detach(), y_f)

        # L_rr = mean_b rec(rec.detach(), rec_rec), L_ff = mean_b rec(fake.detach(), rec_fake)
        loss_rr = self._rec_err(rec.detach(), rec_rec).mean()
        loss_ff = self._rec_err(fake.detach(), rec_fake).mean()
        divergence, kl_r, kl_f, dis = self.decoder_divergence((mu_r, logvar_r), (mu_f, logvar_f), c)

        loss = s * (
            cfg.beta_rec * loss_rec
            + 0.5 * cfg.beta_kl * divergence
            + 0.5 * cfg.gamma_r * cfg.beta_rec * (loss_rr + loss_ff)
        )
        terms = {"kl_rec_decoder": kl_r, "kl_fake_decoder": kl_f, "loss_rr": loss_rr, "loss_ff": loss_ff,
                 "dis_decoder": dis, "loss_decoder": loss}
        return loss, {k: v.detach() for k, v in terms.items()}
