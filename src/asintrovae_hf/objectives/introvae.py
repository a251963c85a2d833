"""IntroVAE (`docs/algorithm.md`, Eq. 13-14): the encoder pushes the KL of reconstructions and fakes above a margin."""

from typing import Dict, Optional, Tuple

import torch

from .introspective import EncoderStepOutput, IntrospectiveObjective, Network
from .losses import kl_divergence


class IntroVAEObjective(IntrospectiveObjective):
    r"""IntroVAE's margin hinge on the batch means of the KL of reconstructions and fakes (options `margin`,
    `beta_rec`, `beta_kl`, `beta_neg`, `loss_type`)."""

    name = "introvae"
    display_name = "IntroVAE"
    description = ("IntroVAE (Huang et al., NeurIPS 2018) is an introspective VAE: the encoder pushes the KL "
                   "divergence of generated and reconstructed images above a margin `m` (a hinge loss) while the "
                   "decoder pulls it down, on top of the usual VAE terms.")
    # the 2D toy data have no reference margin; their real KL under trained encoders is about 1-3 nats. On the
    # digits `beta_neg` was not measured for IntroVAE: no digits defaults.
    defaults = {"toy2d": {"margin": 2.0}}

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
        """Eq. 13: `L_E = s (beta_rec L_rec + beta_kl KL_real) + s beta_neg (max(0, m - KL_rec) + max(0, m -
        KL_fake)) / 2`."""
        cfg, s = self.config, self.scale(x)
        real = self.real_and_fake(encoder, decoder, x, z_f, generator, labels, fake_labels)

        # KL_rec = mean_b kl(E(rec.detach())), KL_fake = mean_b kl(E(fake.detach()))
        kl_rec = kl_divergence(*self._encode(encoder, real.rec.detach(), labels)).mean()
        kl_fake = kl_divergence(*self._encode(encoder, real.fake.detach(), fake_labels)).mean()

        hinge = torch.relu(cfg.margin - kl_rec) + torch.relu(cfg.margin - kl_fake)
        adversarial = s * cfg.beta_neg * hinge / 2
        loss = s * (cfg.beta_rec * real.loss_rec + cfg.beta_kl * real.kl_real) + adversarial
        return real.output(loss, adversarial, kl_rec=kl_rec, kl_fake=kl_fake)

    def decoder_step(
        self,
        encoder: Network,
        decoder: Network,
        x: torch.Tensor,
        encoder_output: EncoderStepOutput,
        c: float = 1.0,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Eq. 14: `L_G = s (beta_rec L_rec + 0.5 beta_kl (KL_rec + KL_fake))`, through `E(G(z.detach()))` and
        `E(G(z_f))`."""
        cfg, s = self.config, self.scale(x)
        rec, fake, loss_rec = self.decoder_inputs(decoder, x, encoder_output)

        kl_rec = kl_divergence(*self._encode(encoder, rec, encoder_output.labels)).mean()
        kl_fake = kl_divergence(*self._encode(encoder, fake, encoder_output.fake_labels)).mean()

        loss = s * (cfg.beta_rec * loss_rec + 0.5 * cfg.beta_kl * (kl_rec + kl_fake))
        terms = {"kl_rec_decoder": kl_rec, "kl_fake_decoder": kl_fake, "loss_decoder": loss}
        return loss, {k: v.detach() for k, v in terms.items()}
