"""AS-IntroVAE and the introspective VAE family for Hugging Face diffusers."""

from importlib.metadata import PackageNotFoundError, version as _distribution_version

try:
    __version__ = _distribution_version("asintrovae-hf")  # pyproject.toml's, as installed
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

from .objectives.as_distance import as_distance
from .objectives.losses import kl_divergence, reconstruction_error, reparameterize
from .models.autoencoder_image import AsIntroVAEDecoder, AsIntroVAEEncoder
from .models.autoencoder_vector import AsIntroVAEVectorDecoder, AsIntroVAEVectorEncoder
from .objectives.config import OBJECTIVES, PRESETS, ObjectiveConfig, weight_schedule
from .objectives.introspective import IntrospectiveObjective
from .pipelines.pipeline_asintrovae import AsIntroVAEPipeline
from .training.train_step import train_step

__all__ = [
    "AsIntroVAEDecoder",
    "AsIntroVAEEncoder",
    "AsIntroVAEPipeline",
    "AsIntroVAEVectorDecoder",
    "AsIntroVAEVectorEncoder",
    "IntrospectiveObjective",
    "OBJECTIVES",
    "PRESETS",
    "ObjectiveConfig",
    "as_distance",
    "kl_divergence",
    "reconstruction_error",
    "reparameterize",
    "train_step",
    "weight_schedule",
]
