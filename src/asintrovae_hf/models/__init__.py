"""
The networks: the image encoder and decoder (a loop over down or up blocks of residual convolutions, optionally
class-conditional) and the MLP encoder and decoder of vector data, all diffusers `ModelMixin`s, the conversion of
the authors' checkpoints to them, and the optional fitted latent sampler (`latent_prior.py`). A change to a network's
layers, its config or its weight checks goes here. `autoencoders.py` and `latent_prior.py` are also the code a saved
pipeline ships in its component folders, so they import nothing from this package.
"""

# diffusers' loader imports the component classes from this module and picks each one's loading method from the
# base classes it finds in the module's namespace: `ModelMixin` must be here.
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401

from .autoencoders import (
    AsIntroVAEDecoder,
    AsIntroVAEEncoder,
    AsIntroVAEVectorDecoder,
    AsIntroVAEVectorEncoder,
    InvalidConfigError,
)
from .latent_prior import GaussianMixtureLatentPrior, fit_latent_prior

__all__ = ["AsIntroVAEDecoder", "AsIntroVAEEncoder", "AsIntroVAEVectorDecoder", "AsIntroVAEVectorEncoder",
           "GaussianMixtureLatentPrior", "InvalidConfigError", "fit_latent_prior"]
