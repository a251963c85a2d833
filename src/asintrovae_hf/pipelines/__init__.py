"""
The user API: [`AsIntroVAEPipeline`] (sample, reconstruct, encode, decode, interpolate, score) with its image
processor, in the diffusers pipeline form: the user API in `pipeline_asintrovae.py`, its loading and saving in
`loading.py`, the conversion and checks of inputs in `image_processor.py` and `latents_and_labels.py`, and the code
files of a saved pipeline folder in `remote_code.py`. These modules, `json_io.py` and `objectives/elbo.py` are also
the code a saved pipeline ships, bundled into one file, so they import nothing from this package but each other (see
`remote_code.BUNDLE_MODULES`).
"""

from .image_processor import AsIntroVAEImageProcessor, AsIntroVAEVectorProcessor
from .pipeline_asintrovae import AsIntroVAEPipeline, ScoreOutput

__all__ = ["AsIntroVAEImageProcessor", "AsIntroVAEPipeline", "AsIntroVAEVectorProcessor", "ScoreOutput"]
