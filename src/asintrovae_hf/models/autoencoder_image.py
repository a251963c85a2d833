"""The conv encoder and decoder of images, [`AsIntroVAEEncoder`] and [`AsIntroVAEDecoder`].

`encoder.encode(x)` returns an [`AutoencoderKLOutput`] whose `latent_dist` is a diffusers
[`DiagonalGaussianDistribution`] over `B x Z` latents; `decoder.decode(z)` returns a [`DecoderOutput`]. How they load
(strict weights, 0.2.0's names) is `loading.py`; this module, bundled after it and `blocks.py`, is also part of the
models' code file of every saved pipeline (`pipelines/remote_code.py`).
"""

from typing import Optional, Sequence, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .blocks import ClassConditioning, DownEncoderBlock, UpDecoderBlock, _GradientCheckpointing, _class_embedding
from .blocks import _apply_output_activation, _check_class_options, _check_output_activation, _residual_block_parameters
from .loading import CheckedLoading, _LoadsNamesOf0_2_0, check_config, check_model_size, check_sample_size


def conv_model_size(kind: str, channels: int, sample_size: int, latent_dim: int, block_out_channels: Sequence[int],
                    embedding_dim: Optional[int] = None, num_class_embeds: Optional[int] = None) -> Tuple[int, int]:
    """
    `(parameters, largest feature map)` of an [`AsIntroVAEEncoder`] (`kind="encoder"`, `channels` = `in_channels`) or
    [`AsIntroVAEDecoder`] (`"decoder"`, `out_channels`), counted from the configuration alone, layer by layer as the
    constructors build them (a test compares the count with the built models').
    """
    c, s = list(block_out_channels), sample_size
    n, f = len(c), sample_size >> len(block_out_channels)
    blocks = sum(_residual_block_parameters(a, b, embedding_dim) for a, b in zip(c[:-1], c[1:]))
    embedding = num_class_embeds * embedding_dim if num_class_embeds else 0
    if kind == "encoder":
        params = 25 * channels * c[0] + 2 * c[0] + blocks + _residual_block_parameters(c[-1], c[-1], embedding_dim)
        params += c[-1] * f * f * 2 * latent_dim + 2 * latent_dim + embedding
        maps = [channels * s * s, c[0] * s * s] + [c[j + 1] * (s >> (j + 1)) ** 2 for j in range(n - 1)]
        return params, max(maps + [c[-1] * f * f, 2 * latent_dim])
    widths = [c[-1]] + c[::-1] + [c[0]]  # the blocks' input and output widths: n + 1 blocks
    params = latent_dim * c[-1] * f * f + c[-1] * f * f + embedding + 25 * c[0] * channels + channels
    params += sum(_residual_block_parameters(a, b, embedding_dim) for a, b in zip(widths[:-1], widths[1:]))
    maps = [c[-1] * f * f, channels * s * s] + [c[n - 1 - k] * (f << (k + 1)) ** 2 for k in range(n)]
    return params, max(maps + [latent_dim])


class AsIntroVAEEncoder(CheckedLoading, _GradientCheckpointing, _LoadsNamesOf0_2_0, ModelMixin, ConfigMixin):
    r"""
    Residual conv encoder mapping images to a diagonal Gaussian posterior `q(z | x)`.

    Layout: 5x5 conv, BatchNorm, LeakyReLU(0.2); one [`DownEncoderBlock`] (AvgPool, residual block) per entry of
    `block_out_channels`; a linear layer to `2 * latent_dim` (mean and log-variance).

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
        check_model_size(type(self).__name__, block_out_channels, lambda: conv_model_size(
            "encoder", in_channels, sample_size, latent_dim, block_out_channels, embed_dim, num_class_embeds))
        check_sample_size(sample_size, block_out_channels)
        channels = list(block_out_channels)
        self.conv_in = nn.Conv2d(in_channels, channels[0], 5, padding=2, bias=False)
        self.norm_in = nn.BatchNorm2d(channels[0])
        self.act = nn.LeakyReLU(0.2)
        widths = channels + channels[-1:]  # each block's input and output width
        self.down_blocks = nn.ModuleList(
            DownEncoderBlock(c_in, c_out, embed_dim) for c_in, c_out in zip(widths[:-1], widths[1:])
        )
        self.gradient_checkpointing = False
        final_size = sample_size // 2 ** len(channels)
        self.fc = nn.Linear(channels[-1] * final_size * final_size, 2 * latent_dim)
        if num_class_embeds:
            self.class_conditioning = ClassConditioning(num_class_embeds, embed_dim)
        self._register_0_2_0_names()

    def _prefixes_of_0_2_0(self) -> dict:
        old = {"conv.0.": "conv_in.", "conv.1.": "norm_in."}
        old.update({f"conv.{4 + 2 * j}.": f"down_blocks.{j}.resnet." for j in range(len(self.down_blocks))})
        return old

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
        h = self.act(self.norm_in(self.conv_in(x)))
        for down_block in self.down_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                h = self._gradient_checkpointing_func(down_block, h, emb)
            else:
                h = down_block(h, emb)
        return self.fc(h.flatten(1))

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


class AsIntroVAEDecoder(CheckedLoading, _GradientCheckpointing, _LoadsNamesOf0_2_0, ModelMixin, ConfigMixin):
    r"""
    Residual conv decoder mapping latents to images, the mirror of [`AsIntroVAEEncoder`].

    Layout: a linear layer and ReLU to a `block_out_channels[-1] x s x s` map; `len(block_out_channels) + 1`
    [`UpDecoderBlock`]s, the first a residual block alone, each other 2x nearest-neighbour upsampling then a residual
    block (widths `reversed(block_out_channels)`, then `block_out_channels[0]` again); a 5x5 conv to `out_channels`.

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
        check_model_size(type(self).__name__, block_out_channels, lambda: conv_model_size(
            "decoder", out_channels, sample_size, latent_dim, block_out_channels, embed_dim, num_class_embeds))
        check_sample_size(sample_size, block_out_channels)
        _check_output_activation(output_activation)
        channels = list(block_out_channels)
        self.initial_size = sample_size // 2 ** len(channels)
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, channels[-1] * self.initial_size * self.initial_size), nn.ReLU()
        )
        widths = channels[-1:] + channels[::-1] + channels[:1]  # each block's input and output width
        self.up_blocks = nn.ModuleList(
            UpDecoderBlock(c_in, c_out, embed_dim, add_upsample=k > 0)
            for k, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]))
        )
        self.conv_out = nn.Conv2d(channels[0], out_channels, 5, padding=2)
        self.gradient_checkpointing = False
        if num_class_embeds:
            self.class_conditioning = ClassConditioning(num_class_embeds, embed_dim)
        self._register_0_2_0_names()

    def _prefixes_of_0_2_0(self) -> dict:
        old = {f"conv.{2 * k}.": f"up_blocks.{k}.resnet." for k in range(len(self.up_blocks))}
        old[f"conv.{2 * len(self.up_blocks) - 1}."] = "conv_out."
        return old

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
        for up_block in self.up_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                h = self._gradient_checkpointing_func(up_block, h, emb)
            else:
                h = up_block(h, emb)
        return _apply_output_activation(self.conv_out(h), self.config.output_activation)

    @property
    def fuse_upsample(self) -> bool:
        """Whether the up blocks run their upsampling and first conv as one transposed convolution in training mode
        ([`UpDecoderBlock`]; `True` by default). Setting it sets every block's."""
        return all(block.fuse_upsample for block in self.up_blocks)

    @fuse_upsample.setter
    def fuse_upsample(self, value: bool) -> None:
        for block in self.up_blocks:
            block.fuse_upsample = bool(value)
