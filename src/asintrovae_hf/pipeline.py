"""`AsIntroVAEPipeline`: sample, reconstruct, encode, decode and interpolate with a trained introspective VAE.

This file is also the pipeline code of every saved pipeline: `save_pretrained` copies it (and the models' module)
into the saved folder, in the layout diffusers documents for custom pipelines on the Hub, so that
`DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)` loads a pipeline where `asintrovae_hf` is not
installed. It must therefore import only torch, diffusers, numpy and the standard library (a test checks it).
"""

import contextlib
import importlib
import inspect
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from typing import List, Optional, Union

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

OUTPUT_TYPES = ("pil", "np", "pt", "latent")

# The code files of a saved pipeline (model_index.json refers to them by these module names).
PIPELINE_MODULE = "pipeline_asintrovae"
COMPONENT_MODULES = {"encoder": "modeling_asintrovae_encoder", "decoder": "modeling_asintrovae_decoder"}

# `from_pretrained` arguments passed on to the Hub download of the config and of each component.
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "token")
MODEL_KWARGS = ("torch_dtype", "variant", "use_safetensors", "low_cpu_mem_usage")


def _plugin_models():
    """
    The `asintrovae_hf.models` module when the plugin is installed, else `None` (this file running as a Hub repo's
    remote code). Looked up with importlib: an import statement here would make diffusers' remote-code check demand
    the plugin on machines that load the repo without it.
    """
    try:
        return importlib.import_module("asintrovae_hf.models")
    except ImportError:
        return None


class AsIntroVAEPipeline(DiffusionPipeline):
    r"""
    Pipeline for an introspective VAE (AS-IntroVAE, Soft-IntroVAE, IntroVAE or VAE): sampling from the prior,
    reconstruction, encoding, decoding and latent interpolation.

    Images go in as PIL images, NumPy arrays (`H x W x C` or `B x H x W x C`) or tensors (`B x C x H x W`), as in
    diffusers; float values must lie in `[0, 1]` and `uint8` values are read as `0..255`. Inputs are resized to the
    model's `sample_size`. Every call runs the models in eval mode (restoring their mode afterwards) and changes
    none of their weights or buffers, so a sample depends only on its own latent or image, never on the rest of the
    batch.

    Parameters:
        encoder ([`AsIntroVAEEncoder`] or [`AsIntroVAEVectorEncoder`]): Maps data to `q(z | x)`.
        decoder ([`AsIntroVAEDecoder`] or [`AsIntroVAEVectorDecoder`]): Maps latents to data.
    """

    model_cpu_offload_seq = "encoder->decoder"

    def __init__(self, encoder: ModelMixin, decoder: ModelMixin):
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

    @property
    def num_classes(self) -> Optional[int]:
        """The number of classes of a class-conditional pipeline (`num_class_embeds`); `None` if unconditional."""
        return getattr(self.decoder.config, "num_class_embeds", None) or None

    # ---- loading and saving ----------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], **kwargs):
        r"""
        Load a saved pipeline from a folder or a Hub repo id.

        Each component is loaded with this package's model classes (`ModelMixin.from_pretrained(...,
        subfolder=...)`): no code from the folder or repo runs. Without the package installed, load a repo with
        `DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)` instead.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): A folder written by `save_pretrained`, or a Hub
                repo id such as `"owner/name"`.
            cache_dir, force_download, local_files_only, proxies, revision, token: As in diffusers, for the Hub.
            torch_dtype (`torch.dtype`, *optional*), variant, use_safetensors, low_cpu_mem_usage: As in diffusers'
                `ModelMixin.from_pretrained`.
        """
        models = _plugin_models()
        if models is None:  # running as a repo's remote code: diffusers loads the components itself
            return DiffusionPipeline.from_pretrained(pretrained_model_name_or_path, **kwargs)
        kwargs.pop("trust_remote_code", None)  # nothing from the repo is executed on this path
        hub_kwargs = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
        model_kwargs = {k: kwargs.pop(k) for k in MODEL_KWARGS if k in kwargs}
        if kwargs:
            raise TypeError(
                f"{cls.__name__}.from_pretrained got unexpected arguments {sorted(kwargs)}; it takes "
                f"{', '.join(HUB_KWARGS + MODEL_KWARGS)}."
            )
        config = cls.load_config(pretrained_model_name_or_path, **hub_kwargs)
        components = {}
        for name in ("encoder", "decoder"):
            entry = config.get(name)
            is_pair = isinstance(entry, (list, tuple)) and len(entry) == 2
            model_cls = getattr(models, entry[1], None) if is_pair else None
            if model_cls is None:
                raise ValueError(
                    f"{pretrained_model_name_or_path}: model_index.json entry {name!r} is {entry!r}; expected "
                    f"[module, class] with a class of asintrovae_hf.models (AsIntroVAEEncoder, AsIntroVAEDecoder, ...)."
                )
            try:
                components[name] = model_cls.from_pretrained(
                    pretrained_model_name_or_path, subfolder=name, **hub_kwargs, **model_kwargs
                )
            except (ValueError, TypeError) as err:  # a config the model class refuses
                raise ValueError(f"{pretrained_model_name_or_path}: {name}/config.json cannot be used: {err}") from None
        pipe = cls(**components)
        pipe.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
        return pipe

    @classmethod
    def from_pipe(cls, pipeline: DiffusionPipeline, **kwargs):
        r"""
        A new pipeline sharing the components of `pipeline` (no copy), as diffusers' `from_pipe`; `encoder=` or
        `decoder=` replace one, `torch_dtype=` converts them. (diffusers' own version only takes over components
        whose exact class appears in the signature's type hints, which this file cannot import.)
        """
        torch_dtype = kwargs.pop("torch_dtype", None)
        components = {name: kwargs.pop(name, getattr(pipeline, name, None)) for name in ("encoder", "decoder")}
        if kwargs:
            raise TypeError(f"{cls.__name__}.from_pipe got unexpected arguments {sorted(kwargs)}.")
        missing = [name for name, component in components.items() if component is None]
        if missing:
            raise ValueError(f"{type(pipeline).__name__} has no {' or '.join(missing)}; pass them as keyword "
                             f"arguments.")
        new = cls(**components)
        return new.to(dtype=torch_dtype) if torch_dtype is not None else new

    def save_pretrained(
        self,
        save_directory: Union[str, os.PathLike],
        safe_serialization: bool = True,
        variant: Optional[str] = None,
        max_shard_size: Optional[Union[int, str]] = None,
        push_to_hub: bool = False,
        **kwargs,
    ):
        r"""
        Save the pipeline as diffusers does (safetensors weights and configs per component, `model_index.json`),
        plus its code in the layout of custom Hub pipelines: this file as `pipeline_asintrovae.py` and the models'
        module in each component folder, generated from the installed package at save time. `model_index.json`
        names them, so the saved folder or repo also loads with `DiffusionPipeline.from_pretrained(...,
        trust_remote_code=True)` where `asintrovae_hf` is not installed.

        Args:
            save_directory (`str` or `os.PathLike`): The folder.
            safe_serialization, variant, max_shard_size: As in diffusers.
            push_to_hub (`bool`, *optional*, defaults to `False`): Upload the folder afterwards; `repo_id`,
                `token`, `private`, `commit_message` and `create_pr` are taken from `kwargs` as in diffusers.
        """
        super().save_pretrained(save_directory, safe_serialization=safe_serialization, variant=variant,
                                max_shard_size=max_shard_size, push_to_hub=False)
        self._save_code(save_directory)
        if push_to_hub:
            from huggingface_hub import create_repo

            token = kwargs.pop("token", None)
            repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
            repo_id = create_repo(repo_id, exist_ok=True, private=kwargs.pop("private", None), token=token).repo_id
            self._upload_folder(save_directory, repo_id, token=token, commit_message=kwargs.pop("commit_message", None),
                                create_pr=kwargs.pop("create_pr", False))

    def _save_code(self, save_directory: Union[str, os.PathLike]) -> None:
        """Write the code files and point `model_index.json` at them."""
        index_path = os.path.join(save_directory, "model_index.json")
        with open(index_path) as f:
            index = json.load(f)
        _write_source(sys.modules[type(self).__module__], os.path.join(save_directory, PIPELINE_MODULE + ".py"))
        index["_class_name"] = [PIPELINE_MODULE, type(self).__name__]
        for name, module_name in COMPONENT_MODULES.items():
            component = getattr(self, name)
            component = getattr(component, "_orig_mod", component)  # torch.compile wrapper
            _write_source(sys.modules[type(component).__module__],
                          os.path.join(save_directory, name, module_name + ".py"))
            index[name] = [module_name, type(component).__name__]
        with open(index_path, "w") as f:
            json.dump(index, f, indent=2, sort_keys=True)
            f.write("\n")

    # ---- inputs and outputs ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _inference(self):
        """Eval mode and no autograd for the call; the models' previous modes are restored afterwards."""
        modes = [(m, m.training) for m in (self.encoder, self.decoder)]
        try:
            for module, _ in modes:
                module.eval()
            with torch.no_grad():
                yield
        finally:
            for module, training in modes:
                module.train(training)

    def _check_output_type(self, output_type: str, allow_latent: bool = True) -> None:
        allowed = OUTPUT_TYPES if allow_latent else OUTPUT_TYPES[:-1]
        if output_type not in allowed:
            raise ValueError(f"output_type must be one of {allowed}, got {output_type!r}.")
        if output_type == "pil" and not self.is_image_model:
            raise ValueError("output_type='pil' needs an image model; this pipeline holds vector models: use 'np' or "
                             "'pt'.")

    def _postprocess(self, sample: torch.Tensor, output_type: str):
        if not self.is_image_model:
            sample = sample.float().cpu()
            return sample.numpy() if output_type == "np" else sample
        sample = sample.float().clamp(0, 1)
        return self.image_processor.postprocess(sample, output_type=output_type, do_denormalize=[False] * len(sample))

    def _check_values(self, data, what: str):
        """uint8 tensors/arrays are read as 0..255; float ones must be finite and within [0, 1]."""
        if isinstance(data, PIL.Image.Image):
            return data
        if isinstance(data, (list, tuple)):
            if len(data) == 0:
                raise ValueError(f"{what}: got an empty list; expected at least one image.")
            return [self._check_values(d, what) for d in data]
        if not isinstance(data, (np.ndarray, torch.Tensor)):
            raise TypeError(f"{what}: expected PIL images, NumPy arrays or torch tensors; got {type(data).__name__}.")
        tensor = torch.as_tensor(data)
        if tensor.dtype == torch.uint8:
            scaled = tensor.float() / 255.0
            return scaled.numpy() if isinstance(data, np.ndarray) else scaled
        if tensor.dtype == torch.bool or not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{what}: expected float values in [0, 1] or uint8 values in 0..255; got dtype "
                            f"{tensor.dtype}.")
        if tensor.numel() == 0:
            raise ValueError(f"{what}: got an empty {type(data).__name__} of shape {tuple(tensor.shape)}.")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{what}: the values contain NaN or infinity.")
        if self.is_image_model:
            low, high = float(tensor.min()), float(tensor.max())
            if low < 0 or high > 1:
                raise ValueError(f"{what}: float values must lie in [0, 1] (uint8 values in 0..255); got values "
                                 f"from {low:.4g} to {high:.4g}.")
        return data if tensor.is_floating_point() else tensor.float()

    def preprocess(self, images: PipelineImageInput, what: str = "images") -> torch.Tensor:
        """Turn PIL images, arrays or tensors into a `B x C x H x W` tensor (`B x D` for vector models)."""
        images = self._check_values(images, what)
        device, dtype = self._execution_device, self.encoder.dtype
        if not self.is_image_model:
            data = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
            features = self.encoder.config.in_features
            if data.ndim == 1:
                data = data[None]
            if data.ndim != 2 or data.shape[1] != features:
                raise ValueError(f"{what}: expected vectors of shape (batch, {features}); got {tuple(data.shape)}.")
            return data.to(device=device, dtype=dtype)
        channels, size = self.encoder.config.in_channels, self.encoder.config.sample_size
        if torch.is_tensor(images) and images.ndim in (3, 4):
            given = images.shape[-3]
            if given != channels:
                raise ValueError(f"{what}: this model takes {channels}-channel images, tensors of shape (batch, "
                                 f"{channels}, {size}, {size}) (other sizes are resized); got a tensor of shape "
                                 f"{tuple(images.shape)}.")
        pixels = self.image_processor.preprocess(images, height=size, width=size)
        if pixels.shape[1] != channels:
            raise ValueError(f"{what}: this model takes {channels}-channel images; got {pixels.shape[1]} channels "
                             f"(arrays are H x W x C).")
        return pixels.to(device=device, dtype=dtype)

    def _labels(self, class_labels, batch_size: int) -> Optional[torch.Tensor]:
        """`class_labels` (an int for the whole batch, a list or a tensor) as a tensor, checked by the models."""
        if class_labels is None:
            return None
        if isinstance(class_labels, int) and not isinstance(class_labels, bool):
            class_labels = [class_labels] * batch_size
        labels = torch.as_tensor(class_labels, device=self._execution_device)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.ndim != 1:
            raise ValueError(f"class_labels must be an int or {batch_size} integers; got {class_labels!r}.")
        return labels.long()

    def _posterior(self, pixels: torch.Tensor, labels: Optional[torch.Tensor] = None) -> DiagonalGaussianDistribution:
        # the networks' forward (not `.encode`), so that a `torch.compile`d encoder is the one that runs
        mu, logvar = self.encoder(pixels) if labels is None else self.encoder(pixels, labels)
        return DiagonalGaussianDistribution(torch.cat([mu, logvar], dim=1))

    def _decode(self, latents: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.decoder(latents) if labels is None else self.decoder(latents, labels)

    def _check_latents(self, latents: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(latents) or latents.ndim != 2 or latents.shape[1] != self.latent_dim:
            shape = tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__
            raise ValueError(f"latents must have shape (batch, {self.latent_dim}), got {shape}.")
        if latents.shape[0] == 0:
            raise ValueError("latents: got an empty batch.")
        if not torch.isfinite(latents).all():
            raise ValueError("latents contain NaN or infinity.")
        return latents.to(device=self._execution_device, dtype=self.decoder.dtype)

    def _output(self, latents: torch.Tensor, output_type: str, return_dict: bool, labels=None):
        if output_type == "latent":
            images = latents
        else:
            images = self._postprocess(self._decode(latents, labels), output_type)
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    # ---- the pipeline's operations ---------------------------------------------------------------------------

    def __call__(
        self,
        batch_size: int = 1,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        latents: Optional[torch.Tensor] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        class_labels: Optional[Union[int, List[int], torch.Tensor]] = None,
    ) -> Union[ImagePipelineOutput, tuple]:
        r"""
        Sample from the prior `z ~ N(0, I)` and decode.

        Args:
            batch_size (`int`, *optional*, defaults to 1): Number of samples.
            generator (`torch.Generator` or `List[torch.Generator]`, *optional*): Makes sampling deterministic; a list
                of `batch_size` generators gives each sample its own.
            latents (`torch.Tensor`, *optional*): `B x Z` latents to decode instead of drawing them.
            output_type (`str`, *optional*, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` or `"latent"` (the latents).
            return_dict (`bool`, *optional*, defaults to `True`): Return an [`ImagePipelineOutput`] or a tuple.
            class_labels (`int`, `List[int]` or `torch.Tensor`, *optional*): For a class-conditional model: the class
                of every sample (an int), or of each (a list of `batch_size`; its length is the batch size when
                `batch_size` is left at 1).

        Examples:
            ```py
            >>> import torch
            >>> from asintrovae_hf import AsIntroVAEPipeline

            >>> pipe = AsIntroVAEPipeline.from_pretrained("path/or/hub-id")
            >>> images = pipe(batch_size=16, generator=torch.manual_seed(0)).images
            ```
        """
        self._check_output_type(output_type)
        if latents is None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
            if batch_size == 1 and class_labels is not None and not isinstance(class_labels, int):
                batch_size = len(class_labels)
            if isinstance(generator, list) and len(generator) != batch_size:
                raise ValueError(f"Got {len(generator)} generators for batch_size {batch_size}; give one per sample.")
            latents = randn_tensor((batch_size, self.latent_dim), generator=generator, device=self._execution_device,
                                   dtype=self.decoder.dtype)
        latents = self._check_latents(latents)
        labels = self._labels(class_labels, len(latents))
        with self._inference():
            return self._output(latents, output_type, return_dict, labels)

    def encode(
        self, images: PipelineImageInput, return_dict: bool = True, class_labels=None
    ) -> Union[AutoencoderKLOutput, tuple]:
        """Encode images into their posterior `q(z | x)` (an [`AutoencoderKLOutput`] with `latent_dist`)."""
        pixels = self.preprocess(images)
        labels = self._labels(class_labels, len(pixels))
        with self._inference():
            posterior = self._posterior(pixels, labels)
        if not return_dict:
            return (posterior,)
        return AutoencoderKLOutput(latent_dist=posterior)

    def decode(self, latents: torch.Tensor, output_type: str = "pil", return_dict: bool = True, class_labels=None):
        """Decode `B x Z` latents into images (`output_type` `"pil"`, `"np"` or `"pt"`)."""
        self._check_output_type(output_type, allow_latent=False)
        latents = self._check_latents(latents)
        labels = self._labels(class_labels, len(latents))
        with self._inference():
            return self._output(latents, output_type, return_dict, labels)

    def reconstruct(
        self,
        images: PipelineImageInput,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        sample_posterior: bool = False,
        output_type: str = "pil",
        return_dict: bool = True,
        class_labels=None,
    ):
        """
        Encode and decode images.

        Args:
            images: PIL images, arrays or tensors.
            generator (`torch.Generator` or `List[torch.Generator]`, *optional*): Used when `sample_posterior=True`.
            sample_posterior (`bool`, *optional*, defaults to `False`): Decode a posterior sample instead of its mean.
            output_type (`str`, *optional*, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` or `"latent"`.
            return_dict (`bool`, *optional*, defaults to `True`): Return an [`ImagePipelineOutput`] or a tuple.
            class_labels (*optional*): For a class-conditional model, the images' classes (an int or one per image).
        """
        self._check_output_type(output_type)
        pixels = self.preprocess(images)
        labels = self._labels(class_labels, len(pixels))
        with self._inference():
            posterior = self._posterior(pixels, labels)
            latents = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
            return self._output(latents, output_type, return_dict, labels)

    def interpolate(
        self,
        image_a: PipelineImageInput,
        image_b: PipelineImageInput,
        num_steps: int = 8,
        output_type: str = "pil",
        return_dict: bool = True,
        class_labels: Optional[int] = None,
    ):
        """
        Decode `num_steps` points on the straight line between the posterior means of two images (endpoints
        included). Each endpoint is one image; a class-conditional model takes one class (an int) for the walk.
        """
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
            raise ValueError(f"num_steps must be at least 2 (an integer: the two endpoints), got {num_steps!r}.")
        self._check_output_type(output_type)
        ends = [self.preprocess(image, what=name) for image, name in ((image_a, "image_a"), (image_b, "image_b"))]
        for name, pixels in zip(("image_a", "image_b"), ends):
            if pixels.shape[0] != 1:
                raise ValueError(f"interpolate takes one image per endpoint; {name} is a batch of {pixels.shape[0]}.")
        with self._inference():
            z_a, z_b = (self._posterior(pixels, self._labels(class_labels, 1)).mode() for pixels in ends)
            weights = torch.linspace(0, 1, num_steps, device=z_a.device, dtype=z_a.dtype)[:, None]
            return self._output((1 - weights) * z_a + weights * z_b, output_type, return_dict,
                                self._labels(class_labels, num_steps))

    def score(
        self,
        images: PipelineImageInput,
        num_samples: int = 1,
        importance_weighted: bool = False,
        batch_size: int = 64,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        class_labels=None,
        return_dict: bool = True,
    ) -> Union["ScoreOutput", tuple]:
        r"""
        Score images by their negative ELBO, `KL(q(z|x) || p(z)) - E_q[log p(x|z)]` in nats (lower = more likely),
        estimated with `num_samples` posterior samples per image, and in bits per dimension. The decoder's likelihood
        is the one its training loss implies: a Gaussian of variance 1/2 per value around the decoder's output (so
        `-log p(x|z)` is the squared error the objectives use, plus `D/2 log(pi)`), or a Bernoulli for a decoder with
        a sigmoid output (the `bce` loss). Introspective VAEs score out-of-distribution data higher than their
        training data; `scripts/ood.py` measures the AUROC of that.

        Args:
            images: PIL images, arrays or tensors (as for `encode`); vectors for vector models.
            num_samples (`int`, *optional*, defaults to 1): Posterior samples per image.
            importance_weighted (`bool`, *optional*, defaults to `False`): Return the importance-weighted bound
                `-log mean_k p(x, z_k) / q(z_k | x)` (Burda et al., 2016) instead, tighter as `num_samples` grows.
            batch_size (`int`, *optional*, defaults to 64): Images per forward pass; a progress bar runs over them.
            generator (`torch.Generator` or `List[torch.Generator]`, *optional*): Source of the posterior samples; a
                list of one generator per image makes each image's score independent of `batch_size`.
            class_labels (*optional*): For a class-conditional model, the images' classes.
            return_dict (`bool`, *optional*, defaults to `True`): Return a [`ScoreOutput`] or a tuple.
        """
        for name, value in (("num_samples", num_samples), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        pixels = self.preprocess(images)
        labels = self._labels(class_labels, len(pixels))
        if isinstance(generator, list) and len(generator) != len(pixels):
            raise ValueError(f"Got {len(generator)} generators for {len(pixels)} images; give one per image.")
        dims = pixels[0].numel()
        bernoulli = getattr(self.decoder.config, "output_activation", None) == "sigmoid"
        scores = []
        with self._inference():
            for start in self.progress_bar(range(0, len(pixels), batch_size)):
                x = pixels[start : start + batch_size].float()
                y = None if labels is None else labels[start : start + batch_size]
                g = generator[start : start + batch_size] if isinstance(generator, list) else generator
                posterior = self._posterior(x.to(self.encoder.dtype), y)
                mean, logvar = posterior.mean.float(), posterior.logvar.float()
                log_weights, nll = [], []
                for _ in range(num_samples):
                    z = mean + torch.exp(0.5 * logvar) * randn_tensor(mean.shape, generator=g,
                                                                      device=mean.device, dtype=mean.dtype)
                    out = self._decode(z.to(self.decoder.dtype), y).float().flatten(1)
                    if bernoulli:
                        log_px = -F.binary_cross_entropy(out.clamp(1e-6, 1 - 1e-6), x.flatten(1), reduction="none")
                        log_px = log_px.sum(1)
                    else:
                        log_px = -(x.flatten(1) - out).pow(2).sum(1) - 0.5 * dims * math.log(math.pi)
                    nll.append(-log_px)
                    log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1)
                    log_qz = -0.5 * ((z - mean).pow(2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(1)
                    log_weights.append(log_px + log_pz - log_qz)
                if importance_weighted:
                    score = -(torch.logsumexp(torch.stack(log_weights), 0) - math.log(num_samples))
                else:
                    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1)
                    score = torch.stack(nll).mean(0) + kl
                scores.append(score.cpu())
        neg_elbo = torch.cat(scores)
        bits = neg_elbo / (dims * math.log(2))
        if not return_dict:
            return (neg_elbo, bits)
        return ScoreOutput(neg_elbo=neg_elbo, bits_per_dim=bits)


@dataclass
class ScoreOutput(BaseOutput):
    """
    Output of [`AsIntroVAEPipeline.score`].

    Args:
        neg_elbo (`torch.Tensor`): Per image, the negative ELBO (or importance-weighted bound) in nats.
        bits_per_dim (`torch.Tensor`): The same divided by `D ln 2`, `D` the values per image.
    """

    neg_elbo: torch.Tensor
    bits_per_dim: torch.Tensor


# ---- the code files of a saved pipeline ----------------------------------------------------------------------

# What diffusers' remote-code loader reads as imports (its regexes): a shipped file may import only what a machine
# without this package has.
_IMPORT_LINES = re.compile(r"^\s*(?:import\s+(\S+)\s*$|from\s+(\S+)\s+import)", re.MULTILINE)


def _write_source(module, path: str) -> None:
    """Copy `module`'s source to `path` after checking it imports no relative module and not the package itself."""
    source = inspect.getsource(module)
    header = (f"# Generated from the `{module.__name__}` module when this pipeline was saved; the package is the "
              f"source, do not edit.\n")
    if source.startswith("# Generated from the `"):  # re-saving a pipeline loaded as remote code
        source = source.split("\n", 1)[1]
        header = ""
    imports = [a or b for a, b in _IMPORT_LINES.findall(source)]
    bad = [name for name in imports if name.startswith(".") or name.split(".")[0] == "asintrovae_hf"]
    if bad:
        raise RuntimeError(f"{module.__name__} cannot be saved as a pipeline's remote code: it imports {bad}.")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Written next to `path` and renamed over it: a symlink (or FIFO) already at `path` is replaced, never followed,
    # so a save cannot write outside its folder (or block on a pipe).
    temporary = f"{path}.{os.getpid()}.tmp"
    if os.path.lexists(temporary):  # left by a save of this process id that was killed
        os.remove(temporary)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(header + source)
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.remove(temporary)
        raise
