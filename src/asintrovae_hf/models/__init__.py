"""
The networks, in the diffusers layout: the building blocks (`blocks.py`), the image encoder and decoder
(`autoencoder_image.py`: a loop over down or up blocks of residual convolutions, optionally class-conditional), the
MLP encoder and decoder of vector data (`autoencoder_vector.py`), all diffusers `ModelMixin`s; their loading policy
(`loading.py`: config and size checks, strict weights, 0.2.0's names); the conversion of the authors' checkpoints
(`convert_reference.py`) and the optional fitted latent sampler (`latent_prior.py`). A saved pipeline ships these
modules (with `json_io.py`) bundled into one file per component folder (`pipelines/remote_code.py`), so they import
from this package only with single-line `from .x import <names>` statements of the modules bundled before them.
"""

# diffusers' loader imports the component classes from this module and picks each one's loading method from the
# base classes it finds in the module's namespace: `ModelMixin` must be here.
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401

from .autoencoder_image import AsIntroVAEDecoder, AsIntroVAEEncoder
from .autoencoder_vector import AsIntroVAEVectorDecoder, AsIntroVAEVectorEncoder
from .latent_prior import GaussianMixtureLatentPrior, fit_latent_prior
from .loading import InvalidConfigError

__all__ = ["AsIntroVAEDecoder", "AsIntroVAEEncoder", "AsIntroVAEVectorDecoder", "AsIntroVAEVectorEncoder",
           "GaussianMixtureLatentPrior", "InvalidConfigError", "fit_latent_prior"]
