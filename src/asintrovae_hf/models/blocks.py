"""
The building blocks of the conv networks: the residual block (optionally class-conditional), the down and up blocks,
the class embedding, the output activations and gradient checkpointing that keeps BatchNorm statistics exact.

Bundled, after `loading.py`, into the models' code file of every saved pipeline (`pipelines/remote_code.py`).
"""

import contextlib
from typing import Callable, Optional

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from .loading import InvalidConfigError, check_config

OUTPUT_ACTIVATIONS = (None, "sigmoid", "tanh")


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


class DownEncoderBlock(nn.Module):
    """One step of [`AsIntroVAEEncoder`]: 2x average pooling, then a [`ResidualBlock`] taking the class embedding."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: Optional[int] = None):
        super().__init__()
        self.downsample = nn.AvgPool2d(2)
        self.resnet = ResidualBlock(in_channels, out_channels, embedding_dim)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.resnet(self.downsample(x), emb)


class UpDecoderBlock(nn.Module):
    """
    One step of [`AsIntroVAEDecoder`]: with `add_upsample`, 2x nearest upsampling, then a [`ResidualBlock`] taking the
    class embedding.

    In training mode (with `fuse_upsample`, the default) the upsampling and the residual block's first conv run as one
    transposed convolution on the small map (`ResidualBlock.forward(upsample=True)`, [`upsample_conv3x3`]): the same
    values up to float rounding (decoder outputs within 2e-7 in float32, `tests/models/test_fast_paths.py`), 1.85-2.3x
    faster forward and backward for the large blocks, a training pass of the 28x28 model about 15 % faster. In eval
    mode (sampling) the block upsamples then convolves, as 0.2.0 did: samples stay bit for bit those of earlier
    versions and independent of the thread count (oneDNN's transposed convolution is not, for some shapes).
    """

    fuse_upsample = True

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: Optional[int] = None,
                 add_upsample: bool = True):
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest") if add_upsample else None
        self.resnet = ResidualBlock(in_channels, out_channels, embedding_dim)

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.upsample is None:
            return self.resnet(x, emb)
        if self.training and self.fuse_upsample:
            return self.resnet(x, emb, upsample=True)
        return self.resnet(self.upsample(x), emb)


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
    """diffusers' gradient checkpointing for the conv models: `enable_gradient_checkpointing()` makes each down or up
    block recompute its activations in the backward pass instead of keeping them (less memory, more time)."""

    _supports_gradient_checkpointing = True

    def enable_gradient_checkpointing(self, gradient_checkpointing_func: Optional[Callable] = None) -> None:
        """As diffusers' `ModelMixin.enable_gradient_checkpointing`; the default function keeps the BatchNorm running
        statistics exact ([`checkpoint_keeping_batchnorm_statistics`]) where diffusers' would update them twice."""
        super().enable_gradient_checkpointing(gradient_checkpointing_func or checkpoint_keeping_batchnorm_statistics)


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


def _residual_block_parameters(c_in: int, c_out: int, embedding_dim: Optional[int]) -> int:
    """[`ResidualBlock`]: two 3x3 convs without bias, two BatchNorms, a 1x1 skip when the widths differ, and the
    class embedding's projection."""
    n = 9 * c_in * c_out + 9 * c_out * c_out + 4 * c_out + (c_in * c_out if c_in != c_out else 0)
    return n + (embedding_dim * c_out + c_out if embedding_dim else 0)

