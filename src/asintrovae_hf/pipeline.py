"""`AsIntroVAEPipeline`: sample, reconstruct, encode, decode and interpolate with a trained introspective VAE."""

from typing import List, Optional, Union

import numpy as np
import torch
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

OUTPUT_TYPES = ("pil", "np", "pt")


class AsIntroVAEPipeline(DiffusionPipeline):
    r"""
    Pipeline for an introspective VAE (AS-IntroVAE, Soft-IntroVAE, IntroVAE or VAE): sampling from the prior,
    reconstruction, encoding, decoding and latent interpolation.

    Images go in as PIL images, NumPy arrays (`H x W x C` or `B x H x W x C`, values in `[0, 1]`) or tensors
    (`B x C x H x W`, values in `[0, 1]`), as in diffusers; they are resized to the model's `sample_size`.

    Parameters:
        encoder ([`AsIntroVAEEncoder`] or [`AsIntroVAEVectorEncoder`]): Maps data to `q(z | x)`.
        decoder ([`AsIntroVAEDecoder`] or [`AsIntroVAEVectorDecoder`]): Maps latents to data.
    """

    model_cpu_offload_seq = "encoder->decoder"

    def __init__(self, encoder, decoder):
        super().__init__()
        if encoder.config.latent_dim != decoder.config.latent_dim:
            raise ValueError(
                f"encoder and decoder latent_dim differ: {encoder.config.latent_dim} vs {decoder.config.latent_dim}."
            )
        self.register_modules(encoder=encoder, decoder=decoder)
        channels = getattr(decoder.config, "out_channels", None)
        self.image_processor = VaeImageProcessor(
            vae_scale_factor=1,
            vae_latent_channels=0,  # never an image's channel count: every tensor input is an image
            do_normalize=False,
            resample="bilinear",
            do_convert_grayscale=channels == 1,
            do_convert_rgb=channels == 3,
        )

    @property
    def is_image_model(self) -> bool:
        return hasattr(self.decoder.config, "out_channels")

    @property
    def latent_dim(self) -> int:
        return self.decoder.config.latent_dim

    def _check_output_type(self, output_type: str) -> None:
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if output_type == "pil" and not self.is_image_model:
            raise ValueError("output_type='pil' needs an image model; this pipeline holds vector models: use 'np' or 'pt'.")

    def _postprocess(self, sample: torch.Tensor, output_type: str):
        if not self.is_image_model:
            sample = sample.float().cpu()
            return sample.numpy() if output_type == "np" else sample
        sample = sample.float().clamp(0, 1)
        return self.image_processor.postprocess(sample, output_type=output_type, do_denormalize=[False] * len(sample))

    def preprocess(self, images: PipelineImageInput) -> torch.Tensor:
        """Turn PIL images, arrays or tensors into a `B x C x H x W` tensor on the pipeline's device."""
        if not self.is_image_model:
            data = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
            return data.to(device=self._execution_device, dtype=self.encoder.dtype)
        size = self.encoder.config.sample_size
        pixels = self.image_processor.preprocess(images, height=size, width=size)
        return pixels.to(device=self._execution_device, dtype=self.encoder.dtype)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        latents: Optional[torch.Tensor] = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> Union[ImagePipelineOutput, tuple]:
        r"""
        Sample from the prior `z ~ N(0, I)` and decode.

        Args:
            batch_size (`int`, *optional*, defaults to 1): Number of samples.
            generator (`torch.Generator`, *optional*): Makes sampling deterministic.
            latents (`torch.Tensor`, *optional*): `B x Z` latents to decode instead of drawing them.
            output_type (`str`, *optional*, defaults to `"pil"`): `"pil"`, `"np"` or `"pt"`.
            return_dict (`bool`, *optional*, defaults to `True`): Return an [`ImagePipelineOutput`] or a tuple.

        Examples:
            ```py
            >>> from asintrovae_hf import AsIntroVAEPipeline

            >>> pipe = AsIntroVAEPipeline.from_pretrained("path/or/hub-id")
            >>> images = pipe(batch_size=16, generator=torch.manual_seed(0)).images
            ```
        """
        self._check_output_type(output_type)
        if latents is None:
            latents = randn_tensor(
                (batch_size, self.latent_dim), generator=generator, device=self._execution_device, dtype=self.decoder.dtype
            )
        elif latents.ndim != 2 or latents.shape[1] != self.latent_dim:
            raise ValueError(f"latents must have shape (batch, {self.latent_dim}), got {tuple(latents.shape)}.")
        return self.decode(latents, output_type=output_type, return_dict=return_dict)

    @torch.no_grad()
    def encode(self, images: PipelineImageInput, return_dict: bool = True) -> Union[AutoencoderKLOutput, tuple]:
        """Encode images into their posterior `q(z | x)` (an [`AutoencoderKLOutput`] with `latent_dist`)."""
        return self.encoder.encode(self.preprocess(images), return_dict=return_dict)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, output_type: str = "pil", return_dict: bool = True):
        """Decode `B x Z` latents into images."""
        self._check_output_type(output_type)
        latents = latents.to(device=self._execution_device, dtype=self.decoder.dtype)
        sample = self.decoder.decode(latents).sample
        images = self._postprocess(sample, output_type)
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    @torch.no_grad()
    def reconstruct(
        self,
        images: PipelineImageInput,
        generator: Optional[torch.Generator] = None,
        sample_posterior: bool = False,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """
        Encode and decode images.

        Args:
            images: PIL images, arrays or tensors.
            generator (`torch.Generator`, *optional*): Used when `sample_posterior=True`.
            sample_posterior (`bool`, *optional*, defaults to `False`): Decode a posterior sample instead of its mean.
            output_type (`str`, *optional*, defaults to `"pil"`): `"pil"`, `"np"` or `"pt"`.
            return_dict (`bool`, *optional*, defaults to `True`): Return an [`ImagePipelineOutput`] or a tuple.
        """
        posterior = self.encode(images).latent_dist
        latents = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        return self.decode(latents, output_type=output_type, return_dict=return_dict)

    @torch.no_grad()
    def interpolate(
        self,
        image_a: PipelineImageInput,
        image_b: PipelineImageInput,
        num_steps: int = 8,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """
        Decode `num_steps` points on the straight line between the posterior means of two images (endpoints
        included).
        """
        if num_steps < 2:
            raise ValueError(f"num_steps must be at least 2 (the two endpoints), got {num_steps}.")
        z_a = self.encode(image_a).latent_dist.mode()[:1]
        z_b = self.encode(image_b).latent_dist.mode()[:1]
        weights = torch.linspace(0, 1, num_steps, device=z_a.device, dtype=z_a.dtype)[:, None]
        latents = (1 - weights) * z_a + weights * z_b
        return self.decode(latents, output_type=output_type, return_dict=return_dict)
