"""
The user API: [`AsIntroVAEPipeline`] (sample, reconstruct, encode, decode, interpolate, score) with its image
processor, in the diffusers pipeline form. A change to what users call, to how images come in and go out, or to
what a saved pipeline folder holds goes here. The pipeline's module is also the code a saved pipeline ships, so it
imports nothing from this package.
"""

from .pipeline_asintrovae import AsIntroVAEImageProcessor, AsIntroVAEPipeline, ScoreOutput

__all__ = ["AsIntroVAEImageProcessor", "AsIntroVAEPipeline", "ScoreOutput"]
