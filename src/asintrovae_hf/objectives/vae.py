"""The plain VAE (`docs/algorithm.md`, Eq. 5): one loss for both networks, every step."""

from .introspective import IntrospectiveObjective


class VAEObjective(IntrospectiveObjective):
    r"""`L_VAE = beta_rec * L_rec + beta_kl * KL_real` ([`IntrospectiveObjective.vae_loss`]) for both networks."""

    name = "vae"
    display_name = "VAE"
    description = ("A plain VAE (Kingma & Welling, 2014): reconstruction error plus the KL divergence to the prior "
                   "`N(0, I)`.")
    is_introspective = False
