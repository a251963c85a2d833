"""AS-IntroVAE and the introspective VAE family for Hugging Face diffusers."""


def _package_version() -> str:
    """The installed distribution's version (pyproject.toml's at install time); for a source tree that was never
    installed, the version in its pyproject.toml; `"0+unknown"` when neither exists."""
    import importlib.metadata
    import os
    import re

    try:
        return importlib.metadata.version("asintrovae-hf")
    except importlib.metadata.PackageNotFoundError:
        pass
    pyproject = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "pyproject.toml")
    try:
        with open(pyproject, encoding="utf-8") as f:
            match = re.search(r'^version\s*=\s*"([^"]+)"', f.read(), re.MULTILINE)
    except OSError:
        match = None
    return match.group(1) if match else "0+unknown"


__version__ = _package_version()

from .as_distance import as_distance
from .losses import kl_divergence, reconstruction_error, reparameterize
from .models import AsIntroVAEDecoder, AsIntroVAEEncoder, AsIntroVAEVectorDecoder, AsIntroVAEVectorEncoder
from .objective_config import OBJECTIVES, PRESETS, ObjectiveConfig, weight_schedule
from .objectives import IntrospectiveObjective
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
    "PRESETS",
    "ObjectiveConfig",
    "as_distance",
    "kl_divergence",
    "reconstruction_error",
    "reparameterize",
    "train_step",
    "weight_schedule",
]
