"""Encoder and decoder networks of the introspective VAEs.

Two families share one API:

- [`AsIntroVAEEncoder`] / [`AsIntroVAEDecoder`]: the residual conv nets of Soft-IntroVAE and AS-IntroVAE for
  images (`C x H x W`, values in `[0, 1]`).
- [`AsIntroVAEVectorEncoder`] / [`AsIntroVAEVectorDecoder`]: MLPs for vectors (the 2D toy data, tabular data).

`encoder.encode(x)` returns an [`AutoencoderKLOutput`] whose `latent_dist` is a diffusers
[`DiagonalGaussianDistribution`] over `B x Z` latents; `decoder.decode(z)` returns a [`DecoderOutput`].
"""

import contextlib
import os
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

OUTPUT_ACTIVATIONS = (None, "sigmoid", "tanh")


def supported_sample_sizes(block_out_channels: Sequence[int], max_size: int = 1024) -> list:
    """Image sizes the conv nets accept: multiples of `2 ** len(block_out_channels)` (one halving per block)."""
    factor = 2 ** len(block_out_channels)
    return list(range(factor, max_size + 1, factor))


class InvalidConfigError(ValueError):
    """A model configuration the networks cannot be built from (an argument of the wrong type or size)."""


def check_config(model: str, **values) -> None:
    """
    Raise an [`InvalidConfigError`] naming the model and the argument when a size is not a positive integer (a `config.json`
    edited by hand, `"latent_dim": "eight"`) or `block_out_channels` is not a non-empty list of them.
    """
    for name, value in values.items():
        items = value if name in ("block_out_channels", "hidden_dims") else [value]
        ok = isinstance(items, (list, tuple)) and (len(items) > 0 or name == "hidden_dims")
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items)
        if not ok:
            kind = "a non-empty list of positive integers" if name == "block_out_channels" else (
                "a list of positive integers" if name == "hidden_dims" else "a positive integer")
            raise InvalidConfigError(f"{model}: {name} must be {kind}, got {value!r} ({type(value).__name__}).")


def check_sample_size(sample_size: int, block_out_channels: Sequence[int]) -> None:
    """Raise an [`InvalidConfigError`] naming the valid sizes when `sample_size` does not fit `block_out_channels`."""
    factor = 2 ** len(block_out_channels)
    if not isinstance(sample_size, int) or sample_size < factor or sample_size % factor != 0:
        sizes = supported_sample_sizes(block_out_channels, max_size=max(256, 4 * factor))
        raise InvalidConfigError(
            f"sample_size={sample_size!r} does not fit block_out_channels={tuple(block_out_channels)}: each of the "
            f"{len(block_out_channels)} blocks halves the image, so the size must be a multiple of {factor} "
            f"(for example {', '.join(str(s) for s in sizes[:8])}, ...)."
        )


def _check_class_options(model: str, num_class_embeds, class_embed_dim, block_out_channels) -> Optional[int]:
    """The class embedding size of a class-conditional model (`None` for an unconditional one)."""
    if num_class_embeds is None:
        return None
    check_config(model, num_class_embeds=num_class_embeds)
    if class_embed_dim is not None:
        check_config(model, class_embed_dim=class_embed_dim)
    return class_embed_dim or 4 * block_out_channels[0]


def _class_embedding(model, batch_size: int, class_labels) -> Optional[torch.Tensor]:
    conditioning = getattr(model, "class_conditioning", None)
    if conditioning is None:
        if class_labels is not None:
            raise ValueError(f"{type(model).__name__} is not class-conditional (num_class_embeds is None); got "
                             f"class_labels.")
        return None
    return conditioning(type(model).__name__, batch_size, class_labels)


def _check_output_activation(output_activation: Optional[str]) -> None:
    if output_activation not in OUTPUT_ACTIVATIONS:
        raise InvalidConfigError(f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {output_activation!r}.")


def _apply_output_activation(x: torch.Tensor, output_activation: Optional[str]) -> torch.Tensor:
    if output_activation == "sigmoid":
        return torch.sigmoid(x)
    if output_activation == "tanh":
        return torch.tanh(x)
    return x


# Nearest 2x upsampling followed by a 3x3 convolution (padding 1) is a stride-2 transposed convolution with a 4x4
# kernel: output row 2i sees input rows i-1 (kernel row 0) and i (rows 1 and 2), output row 2i+1 sees rows i (kernel
# rows 0 and 1) and i+1 (row 2); the same for columns. Tap k of the 4x4 kernel sums the 3x3 kernel's rows marked in
# `_UPSAMPLE_TAPS[k]`. Four taps per output instead of nine, and the upsampled map is never convolved.
_UPSAMPLE_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`conv2d(interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)` for a `Cout x Cin x 3 x 3` weight,
    computed as one transposed convolution (the same values up to float rounding, 2.25x fewer multiply-adds)."""
    taps = weight.new_tensor(_UPSAMPLE_TAPS)
    kernel = torch.einsum("ah,bw,oihw->ioab", taps, taps, weight)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        kernel = kernel.contiguous(memory_format=torch.channels_last)
    return F.conv_transpose2d(x, kernel, stride=2, padding=1)


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class ResidualBlock(nn.Module):
    """
    Two 3x3 conv + BatchNorm layers with a LeakyReLU between them and a (projected) skip connection. With
    `embedding_dim`, a class embedding enters as a per-channel bias after the first conv (diffusers' class-conditional
    `ResnetBlock2D` adds its time-and-class embedding the same way).
    """

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: Optional[int] = None):
        super().__init__()
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False) if in_channels != out_channels else None
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.act = nn.LeakyReLU(0.2)
        self.emb_proj = nn.Linear(embedding_dim, out_channels) if embedding_dim else None

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None, upsample: bool = False) -> torch.Tensor:
        """With `upsample=True`, the block applied to `x` upsampled 2x (nearest), without convolving the larger map:
        the first conv is [`upsample_conv3x3`], and the 1x1 projection commutes with the upsampling."""
        if upsample:
            identity = _upsample(x if self.skip is None else self.skip(x))
            h = upsample_conv3x3(x, self.conv1.weight)
        else:
            identity = x if self.skip is None else self.skip(x)
            h = self.conv1(x)
        if emb is not None:
            h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.act(self.norm1(h))
        h = self.norm2(self.conv2(h))
        return self.act(h + identity)


def _run_conv(layers: nn.Sequential, h: torch.Tensor, emb: Optional[torch.Tensor], fuse_upsample: bool = False,
              checkpoint: Optional[Callable] = None) -> torch.Tensor:
    """
    `layers(h)`, with the class embedding handed to each residual block; with `fuse_upsample`, each nearest
    upsampling is done by the residual block after it (`ResidualBlock.forward(upsample=True)`); with `checkpoint`
    (gradient checkpointing), each residual block runs as `checkpoint(block, *inputs)`.
    """
    if emb is None and not fuse_upsample and checkpoint is None:
        return layers(h)
    run_block = checkpoint or (lambda block, *inputs: block(*inputs))
    layers, i = list(layers), 0
    while i < len(layers):
        layer = layers[i]
        if fuse_upsample and isinstance(layer, nn.Upsample) and isinstance(layers[i + 1], ResidualBlock):
            h, i = run_block(layers[i + 1], h, emb, True), i + 2
        else:
            h, i = (run_block(layer, h, emb) if isinstance(layer, ResidualBlock) else layer(h)), i + 1
    return h


class _NamesTheConfigFile:
    """`from_pretrained` as in diffusers (every argument passed on), with a configuration the networks cannot be
    built from reported with the path of its `config.json`."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except InvalidConfigError as err:
            where = os.path.join(str(pretrained_model_name_or_path), kwargs.get("subfolder") or "", "config.json")
            raise InvalidConfigError(f"{where} cannot be used: {err}") from None


class _KeepBatchNormStatistics:
    """
    Restores the BatchNorm running statistics of `module` on exit. Gradient checkpointing runs each block's forward a
    second time during the backward pass; in training mode BatchNorm would update its running statistics twice.
    """

    def __init__(self, module: nn.Module):
        self.norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __enter__(self):
        self.saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
                      for m in self.norms]

    def __exit__(self, *exc):
        with torch.no_grad():
            for norm, saved in zip(self.norms, self.saved):
                buffers = [b for b in (norm.running_mean, norm.running_var, norm.num_batches_tracked) if b is not None]
                for buffer, value in zip(buffers, saved):
                    buffer.copy_(value)
        return False


def checkpoint_keeping_batchnorm_statistics(module: nn.Module, *inputs):
    """
    `torch.utils.checkpoint.checkpoint(module, *inputs)` (non-reentrant, as diffusers' default) whose recomputation
    leaves BatchNorm running statistics as the first forward left them, so a checkpointed training step changes the
    model exactly as a plain one does.
    """
    contexts = lambda: (contextlib.nullcontext(), _KeepBatchNormStatistics(module))  # noqa: E731
    return torch.utils.checkpoint.checkpoint(module.__call__, *inputs, use_reentrant=False, context_fn=contexts)


class _GradientCheckpointing:
    """diffusers' gradient checkpointing for the conv models: `enable_gradient_checkpointing()` makes each residual
    block recompute its activations in the backward pass instead of keeping them (less memory, more time)."""

    _supports_gradient_checkpointing = True

    def enable_gradient_checkpointing(self, gradient_checkpointing_func: Optional[Callable] = None) -> None:
        """As diffusers' `ModelMixin.enable_gradient_checkpointing`; the default function keeps the BatchNorm running
        statistics exact ([`checkpoint_keeping_batchnorm_statistics`]) where diffusers' would update them twice."""
        super().enable_gradient_checkpointing(gradient_checkpointing_func or checkpoint_keeping_batchnorm_statistics)

    def _checkpoint_function(self) -> Optional[Callable]:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func
        return None


class ClassConditioning(nn.Module):
    """The class embedding of a class-conditional model (`num_class_embeds` classes, as diffusers' UNet names it)."""

    def __init__(self, num_class_embeds: int, embedding_dim: int):
        super().__init__()
        self.num_class_embeds = num_class_embeds
        self.embedding = nn.Embedding(num_class_embeds, embedding_dim)

    def forward(self, owner: str, batch_size: int, class_labels: Optional[torch.Tensor]) -> torch.Tensor:
        """The embeddings of `class_labels`, checked: `batch_size` integers in `[0, num_class_embeds)`."""
        if class_labels is None:
            raise ValueError(f"{owner} is class-conditional ({self.num_class_embeds} classes): pass class_labels, "
                             f"a tensor of {batch_size} integers in [0, {self.num_class_embeds}).")
        labels = torch.as_tensor(class_labels, device=self.embedding.weight.device).long().reshape(-1)
        out_of_range = labels.numel() > 0 and (labels.min() < 0 or labels.max() >= self.num_class_embeds)
        if labels.shape[0] != batch_size or out_of_range:
            raise ValueError(f"{owner}: class_labels must be {batch_size} integers in [0, {self.num_class_embeds}); "
                             f"got {labels.tolist()[:8]}{'...' if labels.numel() > 8 else ''}.")
        return self.embedding(labels)


class AsIntroVAEEncoder(_NamesTheConfigFile, _GradientCheckpointing, ModelMixin, ConfigMixin):
    r"""
    Residual conv encoder mapping images to a diagonal Gaussian posterior `q(z | x)`.

    Layout: 5x5 conv, BatchNorm, LeakyReLU(0.2), AvgPool; one residual block and AvgPool per step of
    `block_out_channels`; a final residual block; a linear layer to `2 * latent_dim` (mean and log-variance).

    Parameters:
        in_channels (`int`, *optional*, defaults to 3): Number of image channels.
        sample_size (`int`, *optional*, defaults to 32): Image height and width; a multiple of
            `2 ** len(block_out_channels)`.
        latent_dim (`int`, *optional*, defaults to 128): Size `Z` of the latent vector.
        block_out_channels (`Tuple[int]`, *optional*, defaults to `(64, 128, 256)`): Channels per block.
        num_class_embeds (`int`, *optional*): Make the model class-conditional, `q(z | x, y)`, with this many classes;
            `forward`/`encode` then take `class_labels`.
        class_embed_dim (`int`, *optional*): Size of the class embedding; defaults to `4 * block_out_channels[0]`.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        sample_size: int = 32,
        latent_dim: int = 128,
        block_out_channels: Tuple[int, ...] = (64, 128, 256),
        num_class_embeds: Optional[int] = None,
        class_embed_dim: Optional[int] = None,
    ):
        super().__init__()
        check_config(type(self).__name__, in_channels=in_channels, sample_size=sample_size, latent_dim=latent_dim,
                     block_out_channels=block_out_channels)
        embed_dim = _check_class_options(type(self).__name__, num_class_embeds, class_embed_dim, block_out_channels)
        check_sample_size(sample_size, block_out_channels)
        channels = list(block_out_channels)
        layers = [
            nn.Conv2d(in_channels, channels[0], 5, padding=2, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.LeakyReLU(0.2),
            nn.AvgPool2d(2),
        ]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [ResidualBlock(c_in, c_out, embed_dim), nn.AvgPool2d(2)]
        layers.append(ResidualBlock(channels[-1], channels[-1], embed_dim))
        self.conv = nn.Sequential(*layers)
        self.gradient_checkpointing = False
        final_size = sample_size // 2 ** len(channels)
        self.fc = nn.Linear(channels[-1] * final_size * final_size, 2 * latent_dim)
        if num_class_embeds:
            self.class_conditioning = ClassConditioning(num_class_embeds, embed_dim)

    def _check_input(self, x: torch.Tensor) -> None:
        c, s = self.config.in_channels, self.config.sample_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(
                f"{type(self).__name__} expects images of shape (batch, {c}, {s}, {s}) (channels, height, width), "
                f"got a tensor of shape {tuple(x.shape)}."
            )

    def _moments(self, x: torch.Tensor, class_labels: Optional[torch.Tensor]) -> torch.Tensor:
        self._check_input(x)
        emb = _class_embedding(self, x.shape[0], class_labels)
        return self.fc(_run_conv(self.conv, x, emb, checkpoint=self._checkpoint_function()).flatten(1))

    def encode(
        self, x: torch.Tensor, class_labels: Optional[torch.Tensor] = None, return_dict: bool = True
    ) -> Union[AutoencoderKLOutput, Tuple]:
        """
        Encode a batch of images into a posterior distribution.

        Args:
            x (`torch.Tensor`): Images of shape `(batch, in_channels, sample_size, sample_size)`.
            class_labels (`torch.Tensor`, *optional*): `batch` integer labels, for a class-conditional model.
            return_dict (`bool`, *optional*, defaults to `True`): Return an [`AutoencoderKLOutput`] or a tuple.
        """
        posterior = DiagonalGaussianDistribution(self._moments(x, class_labels))
        if not return_dict:
            return (posterior,)
        return AutoencoderKLOutput(latent_dist=posterior)

    def forward(
        self, x: torch.Tensor, class_labels: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return `(mu, logvar)`, each `B x Z` (the form the training objectives use)."""
        return self._moments(x, class_labels).chunk(2, dim=1)


class AsIntroVAEDecoder(_NamesTheConfigFile, _GradientCheckpointing, ModelMixin, ConfigMixin):
    r"""
    Residual conv decoder mapping latents to images, the mirror of [`AsIntroVAEEncoder`].

    Layout: a linear layer and ReLU to a `block_out_channels[-1] x s x s` map, one residual block and 2x
    nearest-neighbour upsampling per step of `reversed(block_out_channels)`, a final residual block, and a 5x5
    conv to `out_channels`.

    Parameters:
        out_channels (`int`, *optional*, defaults to 3): Number of image channels.
        sample_size (`int`, *optional*, defaults to 32): Image height and width.
        latent_dim (`int`, *optional*, defaults to 128): Size `Z` of the latent vector.
        block_out_channels (`Tuple[int]`, *optional*, defaults to `(64, 128, 256)`): Channels per block, as for
            the encoder.
        output_activation (`str`, *optional*): `None` (raw output, for the `mse`/`l1` losses), `"sigmoid"` (for
            the `bce` loss) or `"tanh"`.
        num_class_embeds (`int`, *optional*): Make the model class-conditional, `p(x | z, y)`, with this many classes;
            `forward`/`decode` then take `class_labels`.
        class_embed_dim (`int`, *optional*): Size of the class embedding; defaults to `4 * block_out_channels[0]`.
    """

    # In training mode, run each nearest upsampling and the residual block after it as one
    # (`ResidualBlock.forward(upsample=True)`): the same values up to float rounding, fewer operations. In eval mode
    # (sampling) and with `False`, `self.conv` runs layer by layer: outputs stay bit for bit those of earlier
    # versions, and independent of the thread count (oneDNN's transposed convolution is not, for some shapes).
    fuse_upsample = True

    @register_to_config
    def __init__(
        self,
        out_channels: int = 3,
        sample_size: int = 32,
        latent_dim: int = 128,
        block_out_channels: Tuple[int, ...] = (64, 128, 256),
        output_activation: Optional[str] = None,
        num_class_embeds: Optional[int] = None,
        class_embed_dim: Optional[int] = None,
    ):
        super().__init__()
        check_config(type(self).__name__, out_channels=out_channels, sample_size=sample_size, latent_dim=latent_dim,
                     block_out_channels=block_out_channels)
        embed_dim = _check_class_options(type(self).__name__, num_class_embeds, class_embed_dim, block_out_channels)
        check_sample_size(sample_size, block_out_channels)
        _check_output_activation(output_activation)
        channels = list(block_out_channels)
        self.initial_size = sample_size // 2 ** len(channels)
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, channels[-1] * self.initial_size * self.initial_size), nn.ReLU()
        )
        layers = []
        c_in = channels[-1]
        for c_out in reversed(channels):
            layers += [ResidualBlock(c_in, c_out, embed_dim), nn.Upsample(scale_factor=2, mode="nearest")]
            c_in = c_out
        layers += [ResidualBlock(c_in, c_in, embed_dim), nn.Conv2d(c_in, out_channels, 5, padding=2)]
        self.conv = nn.Sequential(*layers)
        self.gradient_checkpointing = False
        if num_class_embeds:
            self.class_conditioning = ClassConditioning(num_class_embeds, embed_dim)

    def _check_input(self, z: torch.Tensor) -> None:
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(
                f"{type(self).__name__} expects latents of shape (batch, {self.config.latent_dim}), "
                f"got a tensor of shape {tuple(z.shape)}."
            )

    def decode(
        self, z: torch.Tensor, class_labels: Optional[torch.Tensor] = None, return_dict: bool = True
    ) -> Union[DecoderOutput, Tuple]:
        """
        Decode a batch of latents into images.

        Args:
            z (`torch.Tensor`): Latents of shape `(batch, latent_dim)`.
            class_labels (`torch.Tensor`, *optional*): `batch` integer labels, for a class-conditional model.
            return_dict (`bool`, *optional*, defaults to `True`): Return a [`DecoderOutput`] or a tuple.
        """
        sample = self(z, class_labels)
        if not return_dict:
            return (sample,)
        return DecoderOutput(sample=sample)

    def forward(self, z: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        self._check_input(z)
        emb = _class_embedding(self, z.shape[0], class_labels)
        c = self.config.block_out_channels[-1]
        h = self.fc(z).view(z.shape[0], c, self.initial_size, self.initial_size)
        fuse = self.fuse_upsample and self.training
        h = _run_conv(self.conv, h, emb, fuse, checkpoint=self._checkpoint_function())
        return _apply_output_activation(h, self.config.output_activation)


def _mlp(in_features: int, hidden_dims: Sequence[int], out_features: int) -> nn.Sequential:
    layers = []
    for width in hidden_dims:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    layers.append(nn.Linear(in_features, out_features))
    return nn.Sequential(*layers)


class AsIntroVAEVectorEncoder(_NamesTheConfigFile, ModelMixin, ConfigMixin):
    r"""
    MLP encoder for vectors (2D toy data, tabular data), with the API of [`AsIntroVAEEncoder`].

    Parameters:
        in_features (`int`, *optional*, defaults to 2): Size `D` of a data vector.
        latent_dim (`int`, *optional*, defaults to 2): Size `Z` of the latent vector.
        hidden_dims (`Tuple[int]`, *optional*, defaults to `(256, 256, 256)`): Widths of the ReLU hidden layers.
    """

    @register_to_config
    def __init__(self, in_features: int = 2, latent_dim: int = 2, hidden_dims: Tuple[int, ...] = (256, 256, 256)):
        super().__init__()
        check_config(type(self).__name__, in_features=in_features, latent_dim=latent_dim, hidden_dims=hidden_dims)
        self.net = _mlp(in_features, hidden_dims, 2 * latent_dim)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.config.in_features:
            raise ValueError(
                f"{type(self).__name__} expects vectors of shape (batch, {self.config.in_features}), "
                f"got a tensor of shape {tuple(x.shape)}."
            )

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> Union[AutoencoderKLOutput, Tuple]:
        """Encode `(batch, in_features)` vectors into a posterior distribution over `(batch, latent_dim)`."""
        self._check_input(x)
        posterior = DiagonalGaussianDistribution(self.net(x))
        if not return_dict:
            return (posterior,)
        return AutoencoderKLOutput(latent_dist=posterior)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return `(mu, logvar)`, each `B x Z`."""
        self._check_input(x)
        return self.net(x).chunk(2, dim=1)


class AsIntroVAEVectorDecoder(_NamesTheConfigFile, ModelMixin, ConfigMixin):
    r"""
    MLP decoder for vectors, with the API of [`AsIntroVAEDecoder`].

    Parameters:
        out_features (`int`, *optional*, defaults to 2): Size `D` of a data vector.
        latent_dim (`int`, *optional*, defaults to 2): Size `Z` of the latent vector.
        hidden_dims (`Tuple[int]`, *optional*, defaults to `(256, 256, 256)`): Widths of the ReLU hidden layers.
        output_activation (`str`, *optional*): `None`, `"sigmoid"` or `"tanh"`.
    """

    @register_to_config
    def __init__(
        self,
        out_features: int = 2,
        latent_dim: int = 2,
        hidden_dims: Tuple[int, ...] = (256, 256, 256),
        output_activation: Optional[str] = None,
    ):
        super().__init__()
        check_config(type(self).__name__, out_features=out_features, latent_dim=latent_dim, hidden_dims=hidden_dims)
        _check_output_activation(output_activation)
        self.net = _mlp(latent_dim, hidden_dims, out_features)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> Union[DecoderOutput, Tuple]:
        """Decode `(batch, latent_dim)` latents into `(batch, out_features)` vectors."""
        sample = self(z)
        if not return_dict:
            return (sample,)
        return DecoderOutput(sample=sample)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(
                f"{type(self).__name__} expects latents of shape (batch, {self.config.latent_dim}), "
                f"got a tensor of shape {tuple(z.shape)}."
            )
        return _apply_output_activation(self.net(z), self.config.output_activation)
