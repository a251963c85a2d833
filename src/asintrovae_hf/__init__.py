"""AS-IntroVAE and the introspective VAE family for Hugging Face diffusers."""

__version__ = "0.1.0"
