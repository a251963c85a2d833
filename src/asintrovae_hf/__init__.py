"""AS-IntroVAE and the introspective VAE family for Hugging Face diffusers."""

__version__ = "0.1.0"

from .as_distance import as_distance
from .losses import kl_divergence, reconstruction_error, reparameterize, weight_schedule
from .models import AsIntroVAEDecoder, AsIntroVAEEncoder, AsIntroVAEVectorDecoder, AsIntroVAEVectorEncoder
from .objectives import OBJECTIVES, IntrospectiveObjective, ObjectiveConfig
from .pipeline import AsIntroVAEPipeline
from .train_step import train_step

__all__ = [
    "AsIntroVAEDecoder",
    "AsIntroVAEEncoder",
    "AsIntroVAEPipeline",
    "AsIntroVAEVectorDecoder",
    "AsIntroVAEVectorEncoder",
    "IntrospectiveObjective",
    "OBJECTIVES",
    "ObjectiveConfig",
    "as_distance",
    "kl_divergence",
    "reconstruction_error",
    "reparameterize",
    "train_step",
    "weight_schedule",
]
