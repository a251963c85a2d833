"""`AsIntroVAEPipeline`: sample, reconstruct, encode, decode, interpolate and score with a trained introspective VAE.

The user API; how the pipeline loads and saves is `loading.py`, the checks of its inputs `image_processor.py` and
`latents_and_labels.py`. This module is also the pipeline code of every saved pipeline: `save_pretrained` bundles it
with the modules it imports from this package (`remote_code.BUNDLE_MODULES`) into the saved folder's
`pipeline_asintrovae.py`, so that `DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)` loads a pipeline
where `asintrovae_hf` is not installed. It must therefore import only torch, diffusers, numpy and the standard library,
and the modules bundled before it with single-line `from .module import names` statements (`remote_code` checks it at
every save).
"""

import contextlib
import math
from dataclasses import dataclass
from typing import List, Optional, Union

import numpy as np
import torch
from diffusers.image_processor import PipelineImageInput
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ..objectives.elbo import negative_elbo
from .image_processor import AsIntroVAEImageProcessor, AsIntroVAEVectorProcessor
from .latents_and_labels import check_class_labels, check_latents
from .loading import OPTIONAL_COMPONENT_CLASSES, AsIntroVAELoadingMixin

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
# Where `__call__` draws its latents from: the prior `N(0, I)`, or the pipeline's fitted `latent_prior`.
LATENT_SAMPLERS = ("prior", "fitted")

NO_LATENT_PRIOR = ("latent_sampler='fitted' needs the pipeline's fitted latent prior, and this pipeline has none: fit "
                   "one with `pipe.latent_prior = asintrovae_hf.models.fit_latent_prior(pipe, train_images)` (then "
                   "`pipe.save_pretrained(...)` keeps it).")


class AsIntroVAEPipeline(AsIntroVAELoadingMixin, DiffusionPipeline):
    r"""
    Pipeline for an introspective VAE (AS-IntroVAE, Soft-IntroVAE, IntroVAE or VAE): sampling from the prior,
    reconstruction, encoding, decoding and latent interpolation.

    Images go in as PIL images, NumPy arrays (`H x W x C` or `B x H x W x C`) or tensors (`B x C x H x W`), as in
    diffusers; float values must lie in `[0, 1]`, `uint8` values are read as `0..255` and `uint16` ones as
    `0..65535`. Inputs are resized to the model's `sample_size`. [`AsIntroVAEImageProcessor`]
    (`pipe.image_processor`) converts and checks every input, and refuses what it cannot read exactly. Every call
    runs the models in eval mode (restoring their mode afterwards) and changes none of their weights or buffers, so a
    sample depends only on its own latent or image, never on the rest of the batch.

    Request sizes: a call whose latents and outputs would take more than `pipe.max_request_bytes` (4 GiB by default;
    float32 latents and output values, `N x (latent_dim + values per sample) x 4` bytes) is refused before anything
    is allocated, naming the most samples it may have; the networks then run on at most `pipe.forward_batch_size`
    (256) samples at a time, so their activations take bounded memory. Latents are drawn for the whole request at
    once, so chunking changes no draw; CPU kernels may round differently for different batch sizes (float32
    rounding, as between a sample alone and in a batch).

    Parameters:
        encoder ([`AsIntroVAEEncoder`] or [`AsIntroVAEVectorEncoder`]): Maps data to `q(z | x)`.
        decoder ([`AsIntroVAEDecoder`] or [`AsIntroVAEVectorDecoder`]): Maps latents to data.
        latent_prior ([`GaussianMixtureLatentPrior`], *optional*): A density fitted to the training split's
            posterior means (`asintrovae_hf.models.fit_latent_prior`), which `__call__(latent_sampler="fitted")`
            draws from. Set it with `pipe.latent_prior = prior`; `save_pretrained` saves it when it is there.
    """

    model_cpu_offload_seq = "encoder->decoder"
    _optional_components = ["latent_prior"]
    # Request sizes. One call's latents and outputs (float32: `N x (latent_dim + values per sample) x 4` bytes) may
    # take at most `max_request_bytes`; a larger request is refused before anything is allocated. The networks run
    # on at most `forward_batch_size` samples at a time, so the activations' memory stays bounded whatever `N`.
    max_request_bytes: int = 4 * 2**30
    forward_batch_size: int = 256

    def __init__(self, encoder: ModelMixin, decoder: ModelMixin, latent_prior: Optional[ModelMixin] = None):
        super().__init__()
        if encoder.config.latent_dim != decoder.config.latent_dim:
            raise ValueError(
                f"encoder and decoder latent_dim differ: {encoder.config.latent_dim} vs {decoder.config.latent_dim}."
            )
        self.register_modules(encoder=encoder, decoder=decoder, latent_prior=latent_prior)
        # the one conversion of every input: images by `image_processor`, vectors by `vector_processor`
        self.image_processor = self.vector_processor = None
        if self.is_image_model:
            self.image_processor = AsIntroVAEImageProcessor(channels=encoder.config.in_channels,
                                                            sample_size=encoder.config.sample_size)
        else:
            self.vector_processor = AsIntroVAEVectorProcessor(encoder.config.in_features)

    def __setattr__(self, name, value):
        # diffusers records a component set after `__init__` in the config (so `save_pretrained` saves it) only when
        # it was not `None` before: `pipe.latent_prior = prior` on a pipeline without one must record it too.
        if name in OPTIONAL_COMPONENT_CLASSES and value is not None:
            self._check_latent_prior(value)
        super().__setattr__(name, value)
        if name in OPTIONAL_COMPONENT_CLASSES and "_internal_dict" in self.__dict__ and hasattr(self.config, name):
            module = getattr(value, "_orig_mod", value)  # a torch.compile wrapper
            # what diffusers' register_modules records for a class outside diffusers: its module and its name
            self.register_to_config(**{name: (None, None) if value is None else (type(module).__module__,
                                                                                 type(module).__name__)})

    def _check_latent_prior(self, prior) -> None:
        dim = getattr(getattr(prior, "config", None), "latent_dim", None)
        if not callable(getattr(prior, "sample", None)) or dim is None:
            raise ValueError(f"latent_prior must be a fitted latent prior (GaussianMixtureLatentPrior), got "
                             f"{type(prior).__name__}.")
        decoder = self.__dict__.get("decoder") or self._modules.get("decoder")
        if decoder is not None and dim != decoder.config.latent_dim:
            raise ValueError(f"latent_prior has latent_dim {dim}; the decoder's is {decoder.config.latent_dim}.")

    @property
    def components(self):
        """diffusers' `components`, without an optional component the pipeline does not have (`latent_prior` left
        `None`): a pipeline without one has the `{"encoder", "decoder"}` it had before the component existed."""
        return {name: module for name, module in super().components.items()
                if not (name in OPTIONAL_COMPONENT_CLASSES and module is None)}

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
            return self.vector_processor.postprocess(sample, output_type)
        sample = sample.float().clamp(0, 1)
        return self.image_processor.postprocess(sample, output_type=output_type, do_denormalize=[False] * len(sample))

    def preprocess(self, images: PipelineImageInput, what: str = "images") -> torch.Tensor:
        """
        Turn PIL images, arrays or tensors into a `B x C x H x W` tensor with [`AsIntroVAEImageProcessor`] (`B x D`
        vectors for vector models).
        """
        device, dtype = self._execution_device, self.encoder.dtype
        if self.is_image_model:
            return self.image_processor.preprocess(images, what=what, device=device).to(dtype=dtype)
        return self.vector_processor.preprocess(images, what=what, device=device, dtype=dtype)

    def _check_request_size(self, count: int, output_type: str, what: str) -> None:
        """
        Refuse, before anything is allocated, a call whose `count` latents and outputs would take more than
        `max_request_bytes` (float32 latents, and float32 values of the outputs unless `output_type="latent"`).
        """
        values = 0
        if output_type != "latent":
            config = self.decoder.config
            values = (config.out_channels * config.sample_size**2 if self.is_image_model else config.out_features)
        per_sample = 4 * (self.latent_dim + values)
        if count * per_sample > self.max_request_bytes:
            raise ValueError(
                f"{what}: expected at most {self.max_request_bytes // per_sample} samples per call here (their "
                f"latents and outputs, {per_sample} bytes each with output_type={output_type!r}, may take "
                f"pipe.max_request_bytes = {self.max_request_bytes / 2**30:.4g} GiB); got {count} samples "
                f"({count * per_sample / 2**30:.4g} GiB): split the request into several calls."
            )

    def _chunks(self, count: int):
        step = max(1, int(self.forward_batch_size))
        return [slice(start, start + step) for start in range(0, count, step)]

    def _posterior(self, pixels: torch.Tensor, labels: Optional[torch.Tensor] = None) -> DiagonalGaussianDistribution:
        # the networks' forward (not `.encode`), so that a `torch.compile`d encoder is the one that runs;
        # `forward_batch_size` images at a time
        parameters = []
        for chunk in self._chunks(len(pixels)):
            x = pixels[chunk]
            mu, logvar = self.encoder(x) if labels is None else self.encoder(x, labels[chunk])
            parameters.append(torch.cat([mu, logvar], dim=1))
        return DiagonalGaussianDistribution(parameters[0] if len(parameters) == 1 else torch.cat(parameters))

    def _decode(self, latents: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.decoder(latents) if labels is None else self.decoder(latents, labels)

    def _output(self, latents: torch.Tensor, output_type: str, return_dict: bool, labels=None, what: str = "latents"):
        """Decode `forward_batch_size` latents at a time, each chunk post-processed into its place in the output."""
        self._check_request_size(len(latents), output_type, what)
        if output_type == "latent":
            images = latents
        else:
            images = None
            for chunk in self._chunks(len(latents)):
                part = self._postprocess(self._decode(latents[chunk], None if labels is None else labels[chunk]),
                                         output_type)
                if isinstance(part, list):  # PIL images
                    images = part if images is None else images + part
                    continue
                if images is None:  # the whole output, allocated once: no concatenation of the chunks
                    shape = (len(latents), *part.shape[1:])
                    images = (np.empty(shape, part.dtype) if isinstance(part, np.ndarray)
                              else part.new_empty(shape))
                images[chunk] = part
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
        latent_sampler: str = "prior",
    ) -> Union[ImagePipelineOutput, tuple]:
        r"""
        Sample latents from the prior `z ~ N(0, I)` (or the fitted `latent_prior`) and decode.

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
            latent_sampler (`str`, *optional*, defaults to `"prior"`): Where the latents come from: `"prior"`,
                `N(0, I)`; or `"fitted"`, the pipeline's `latent_prior` (a density fitted to the training split's
                posterior means; refused when the pipeline has none). Ignored when `latents` are given.

        Examples:
            ```py
            >>> import torch
            >>> from asintrovae_hf import AsIntroVAEPipeline

            >>> pipe = AsIntroVAEPipeline.from_pretrained("path/or/hub-id")
            >>> images = pipe(batch_size=16, generator=torch.manual_seed(0)).images
            >>> fitted = pipe(batch_size=16, generator=torch.manual_seed(0), latent_sampler="fitted").images
            ```
        """
        self._check_output_type(output_type)
        if latent_sampler not in LATENT_SAMPLERS:
            raise ValueError(f"latent_sampler must be one of {', '.join(map(repr, LATENT_SAMPLERS))}, got "
                             f"{str(latent_sampler)[:80]!r}.")
        if latent_sampler == "fitted" and latents is None and getattr(self, "latent_prior", None) is None:
            raise ValueError(NO_LATENT_PRIOR)
        if latents is None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
            if batch_size == 1 and class_labels is not None and not isinstance(class_labels, int):
                batch_size = len(class_labels)
            if isinstance(generator, list) and len(generator) != batch_size:
                raise ValueError(f"Got {len(generator)} generators for batch_size {batch_size}; give one per sample.")
            self._check_request_size(batch_size, output_type, "batch_size")
            if latent_sampler == "fitted":
                latents = self.latent_prior.sample(batch_size, generator=generator, device=self._execution_device,
                                                   dtype=self.decoder.dtype)
            else:
                latents = randn_tensor((batch_size, self.latent_dim), generator=generator,
                                       device=self._execution_device, dtype=self.decoder.dtype)
        latents = check_latents(latents, self.latent_dim, self._execution_device, self.decoder.dtype)
        labels = check_class_labels(class_labels, len(latents), self._execution_device)
        with self._inference():
            return self._output(latents, output_type, return_dict, labels)

    def encode(
        self, images: PipelineImageInput, return_dict: bool = True, class_labels=None
    ) -> Union[AutoencoderKLOutput, tuple]:
        """Encode images into their posterior `q(z | x)` (an [`AutoencoderKLOutput`] with `latent_dist`)."""
        pixels = self.preprocess(images)
        labels = check_class_labels(class_labels, len(pixels), self._execution_device)
        with self._inference():
            posterior = self._posterior(pixels, labels)
        if not return_dict:
            return (posterior,)
        return AutoencoderKLOutput(latent_dist=posterior)

    def decode(self, latents: torch.Tensor, output_type: str = "pil", return_dict: bool = True, class_labels=None):
        """Decode `B x Z` latents into images (`output_type` `"pil"`, `"np"` or `"pt"`)."""
        self._check_output_type(output_type, allow_latent=False)
        latents = check_latents(latents, self.latent_dim, self._execution_device, self.decoder.dtype)
        labels = check_class_labels(class_labels, len(latents), self._execution_device)
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
        self._check_request_size(len(pixels), output_type, "images")
        labels = check_class_labels(class_labels, len(pixels), self._execution_device)
        with self._inference():
            posterior = self._posterior(pixels, labels)
            latents = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
            return self._output(latents, output_type, return_dict, labels, what="images")

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
        self._check_request_size(num_steps, output_type, "num_steps")
        ends = [self.preprocess(image, what=name) for image, name in ((image_a, "image_a"), (image_b, "image_b"))]
        for name, pixels in zip(("image_a", "image_b"), ends):
            if pixels.shape[0] != 1:
                raise ValueError(f"interpolate takes one image per endpoint; {name} is a batch of {pixels.shape[0]}.")
        with self._inference():
            labels = check_class_labels(class_labels, 1, self._execution_device)
            z_a, z_b = (self._posterior(pixels, labels).mode() for pixels in ends)
            weights = torch.linspace(0, 1, num_steps, device=z_a.device, dtype=z_a.dtype)[:, None]
            return self._output((1 - weights) * z_a + weights * z_b, output_type, return_dict,
                                check_class_labels(class_labels, num_steps, self._execution_device), what="num_steps")

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
        training data; `asintrovae-ood` measures the AUROC of that.

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
        # what grows with num_samples: two float32 values per sample and image of a batch, kept until its score
        rows = min(batch_size, len(pixels))
        if 8 * num_samples * rows > self.max_request_bytes:
            raise ValueError(f"num_samples: expected at most {self.max_request_bytes // (8 * rows)} posterior samples "
                             f"per image with batches of {rows} images (8 bytes each, at most pipe.max_request_bytes "
                             f"= {self.max_request_bytes / 2**30:.4g} GiB); got {num_samples}: lower num_samples or "
                             f"batch_size.")
        labels = check_class_labels(class_labels, len(pixels), self._execution_device)
        if isinstance(generator, list) and len(generator) != len(pixels):
            raise ValueError(f"Got {len(generator)} generators for {len(pixels)} images; give one per image.")
        dims = pixels[0].numel()
        bernoulli = getattr(self.decoder.config, "output_activation", None) == "sigmoid"
        likelihood = "bce" if bernoulli else "gaussian"
        scores = []
        with self._inference():
            for start in self.progress_bar(range(0, len(pixels), batch_size)):
                x = pixels[start : start + batch_size].float()
                y = None if labels is None else labels[start : start + batch_size]
                g = generator[start : start + batch_size] if isinstance(generator, list) else generator
                posterior = self._posterior(x.to(self.encoder.dtype), y)
                decode = lambda z, y=y: self._decode(z.to(self.decoder.dtype), y).float()  # noqa: E731
                score = negative_elbo(x, posterior.mean.float(), posterior.logvar.float(), decode,
                                      likelihood=likelihood, num_samples=num_samples,
                                      importance_weighted=importance_weighted, generator=g)
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
