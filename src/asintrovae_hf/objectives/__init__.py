"""
The maths of training, as `docs/algorithm.md` writes it: the objective's options and presets (`config.py`), the
building blocks (reparameterisation, KL divergence, reconstruction error: `losses.py`), the negative ELBO that
scores data (`elbo.py`), the AS-Distance (`as_distance.py`), what the methods share (`introspective.py`) and one
file per method: VAE (`vae.py`), IntroVAE (`introvae.py`), Soft-IntroVAE (`soft_introvae.py`) and AS-IntroVAE
(`as_introvae.py`), registered by name (`registry.py`). A change to a formula or an objective option goes here;
nothing here knows about data, devices or files.
"""

from .as_distance import as_distance
from .as_introvae import ASIntroVAEObjective
from .config import OBJECTIVES, PRESETS, ObjectiveConfig, weight_schedule
from .elbo import negative_elbo
from .introspective import IntrospectiveObjective
from .introvae import IntroVAEObjective
from .losses import kl_divergence, reconstruction_error, reparameterize
from .registry import (get_objective, objective_dataset_defaults, objective_names, register_objective,
                       unregister_objective)
from .soft_introvae import SoftIntroVAEObjective
from .vae import VAEObjective

# the built-in objectives, in the order the command line lists them (the default first)
for _objective_class in (ASIntroVAEObjective, SoftIntroVAEObjective, IntroVAEObjective, VAEObjective):
    register_objective(_objective_class)

__all__ = ["ASIntroVAEObjective", "IntroVAEObjective", "IntrospectiveObjective", "OBJECTIVES", "ObjectiveConfig",
           "PRESETS", "SoftIntroVAEObjective", "VAEObjective", "as_distance", "get_objective", "kl_divergence",
           "negative_elbo", "objective_dataset_defaults", "objective_names", "reconstruction_error",
           "register_objective", "reparameterize", "unregister_objective", "weight_schedule"]
