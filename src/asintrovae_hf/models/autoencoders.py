"""
The networks and their checks under the import path they had before they were split into `blocks.py`,
`autoencoder_image.py`, `autoencoder_vector.py` and `loading.py` (the training loop, the toy experiments and the tests
import them from here).
"""

from .autoencoder_image import AsIntroVAEDecoder, AsIntroVAEEncoder, conv_model_size
from .autoencoder_vector import AsIntroVAEVectorDecoder, AsIntroVAEVectorEncoder, mlp_size
from .blocks import ResidualBlock, upsample_conv3x3
from .loading import (
    MAX_ACTIVATION_VALUES,
    MAX_PARAMETERS,
    InvalidConfigError,
    check_plain_tree,
    check_sample_size,
    check_weight_file,
)

__all__ = ["AsIntroVAEDecoder", "AsIntroVAEEncoder", "AsIntroVAEVectorDecoder", "AsIntroVAEVectorEncoder",
           "InvalidConfigError", "MAX_ACTIVATION_VALUES", "MAX_PARAMETERS", "ResidualBlock", "check_plain_tree",
           "check_sample_size", "check_weight_file", "conv_model_size", "mlp_size", "upsample_conv3x3"]
