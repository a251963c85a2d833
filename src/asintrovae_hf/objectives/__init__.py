"""
The maths of training, as `docs/algorithm.md` writes it: the objective's options and presets (`config.py`), the
building blocks (reparameterisation, KL divergence, reconstruction error: `losses.py`), the negative ELBO that
scores data (`elbo.py`), the AS-Distance (`as_distance.py`) and the encoder and decoder losses of VAE, IntroVAE,
Soft-IntroVAE and AS-IntroVAE (`introspective.py`). A change to a formula or an objective option goes here; nothing here knows about data,
devices or files.
"""

from .as_distance import as_distance
from .config import OBJECTIVES, PRESETS, ObjectiveConfig, weight_schedule
from .elbo import negative_elbo
from .introspective import IntrospectiveObjective
from .losses import kl_divergence, reconstruction_error, reparameterize

__all__ = ["OBJECTIVES", "PRESETS", "IntrospectiveObjective", "ObjectiveConfig", "as_distance", "kl_divergence",
           "negative_elbo", "reconstruction_error", "reparameterize", "weight_schedule"]
