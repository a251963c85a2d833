"""Convert the authors' reference PyTorch checkpoints to this package's image models.

Two reference code bases train the image networks that [`AsIntroVAEEncoder`] and [`AsIntroVAEDecoder`] reproduce
layer for layer:

- Soft-IntroVAE (github.com/taldatech/soft-intro-vae-pytorch, `soft_intro_vae/train_soft_intro_vae.py`): the
  checkpoint is `{"epoch": ..., "model": model.state_dict()}` with keys `encoder.*` and `decoder.*` (`module.encoder.*`
  when the whole model was wrapped in `nn.DataParallel`).
- AS-IntroVAE (github.com/LOUEY233/AS-IntroVAE, `arch.py` / `models.py`): the same networks and the same checkpoint
  dict, but `model.encoder` and `model.decoder` are wrapped in `nn.DataParallel` one by one, so the keys read
  `encoder.module.*` and `decoder.module.*`.

The name mapping (reference -> package), with `n = len(block_out_channels)`, `S = sample_size` and `BN` the five
BatchNorm entries `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`:

| reference key | package key |
|---|---|
| `encoder.main.0.weight` (5x5 conv) | `encoder` `conv_in.weight` |
| `encoder.main.1.{BN}` | `encoder` `norm_in.{BN}` |
| `encoder.main.res_in_{S // 2 ** (j + 1)}.{block}`, `j = 0 .. n-1` | `encoder` `down_blocks.{j}.resnet.{block}` |
| `encoder.fc.{weight,bias}` | `encoder` `fc.{weight,bias}` |
| `decoder.fc.0.{weight,bias}` | `decoder` `fc.0.{weight,bias}` |
| `decoder.main.res_in_{4 * 2 ** k}.{block}`, `k = 0 .. n` | `decoder` `up_blocks.{k}.resnet.{block}` |
| `decoder.main.predict.{weight,bias}` (5x5 conv) | `decoder` `conv_out.{weight,bias}` |

and inside a residual block: `conv_expand.weight -> skip.weight` (present only when the block changes the channel
count), `conv1.weight -> conv1.weight`, `bn1.{BN} -> norm1.{BN}`, `conv2.weight -> conv2.weight`,
`bn2.{BN} -> norm2.{BN}`. (The reference names its encoder blocks after the feature-map size they receive, and its
decoder blocks after a size that always starts at 4, whatever the real size.)

The configuration is read off the weights: `in_channels` and `block_out_channels[0]` from the first convolution,
the other block widths from the encoder's residual blocks, `latent_dim` from the encoder's `fc` (its first half of
outputs is the mean, the second the log-variance, in both code bases and in this package), and `sample_size` from the
encoder's `fc` input size `block_out_channels[-1] * s * s` (`sample_size = s * 2 ** n`, unique); the encoder's block
names must agree with it.
"""

import math
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from ..errors import unpickling_detail
from .autoencoder_image import AsIntroVAEDecoder, AsIntroVAEEncoder
from .loading import check_weight_file

BN_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# Top-level entries a reference checkpoint may hold next to `model` (plain metadata, never weights).
_METADATA_TYPES = (int, float, str, bool, type(None))

_ENCODER_BLOCK = re.compile(r"^encoder\.main\.res_in_(\d+)\.")


@dataclass(frozen=True)
class ReferenceConfig:
    r"""
    The configuration of a reference image model, as read off its weights.

    Parameters:
        in_channels (`int`): Number of image channels.
        sample_size (`int`): Image height and width.
        latent_dim (`int`): Size of the latent vector.
        block_out_channels (`Tuple[int]`): Channels per block (the reference's `channels`).
        layout (`str`): `"soft-introvae"` (keys `encoder.*` / `decoder.*`, possibly under one `module.` prefix) or
            `"as-introvae"` (encoder and decoder wrapped in `nn.DataParallel` separately: `encoder.module.*`).
    """

    in_channels: int
    sample_size: int
    latent_dim: int
    block_out_channels: Tuple[int, ...]
    layout: str


def _shape(t: Any) -> Tuple[int, ...]:
    return tuple(t.shape)


def _list_keys(keys, limit: int = 4) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_reference_checkpoint(path: str) -> Any:
    r"""
    Load a reference `.pth` file with `torch.load(path, map_location="cpu", weights_only=True)`.

    A file whose pickle needs anything but tensors and plain containers (for example a payload that would run code)
    is refused: it is never loaded with `weights_only=False`.

    Args:
        path (`str`): The checkpoint file.

    Returns:
        The loaded object (normally a dict).

    Raises:
        `FileNotFoundError`: `path` does not exist.
        `ValueError`: the file is not a checkpoint `torch.load` can read with `weights_only=True`.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist (expected a .pth file written by torch.save).")
    check_weight_file(path, what="checkpoint")  # the zip entries' declared sizes, before anything is inflated
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # A zip archive (torch.save's format) is mapped, not read: its tensors cannot claim more than the file.
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        detail = unpickling_detail(err)
        if "GLOBAL" not in detail:  # not a pickle at all, or a damaged one
            raise ValueError(f"cannot read {path!r} as a PyTorch checkpoint ({detail}).") from None
        raise ValueError(
            f"refused to load {path!r}: its pickle holds more than tensors and plain containers ({detail}); "
            "reference checkpoints are read with torch.load(weights_only=True) only, never by running code from "
            "the file."
        ) from None
    except Exception as err:  # a truncated or foreign file fails deep inside the unpickler, in many ways
        kind = type(err).__name__
        if type(err).__module__ != "builtins":
            kind = f"{type(err).__module__}.{kind}"
        detail = unpickling_detail(err)
        first = f"{kind}: {detail}" if detail != type(err).__name__ else kind
        raise ValueError(f"cannot read {path!r} as a PyTorch checkpoint ({first}).") from None


def normalize_reference_state_dict(checkpoint: Any) -> Tuple[Dict[str, torch.Tensor], str]:
    r"""
    Unwrap a reference checkpoint into a flat state dict with the `module.` components removed.

    Args:
        checkpoint: What `torch.load` returned: `{"model": state_dict, "epoch": ...}` or a bare state dict.

    Returns:
        `(state_dict, layout)`: the tensors under their reference names without `module.`, and `"as-introvae"`
        when the encoder or decoder sat inside its own `nn.DataParallel` (`encoder.module.*`), else
        `"soft-introvae"`.

    Raises:
        `ValueError`: not a dict, a non-tensor entry, metadata that is not plain, or two keys that become one.
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(
            f"expected a state dict or a dict with a 'model' key, got a {type(checkpoint).__name__}."
        )
    if "model" in checkpoint:
        extra = {k: v for k, v in checkpoint.items() if k != "model"}
        bad = [k for k, v in extra.items() if not isinstance(v, _METADATA_TYPES)]
        if bad:
            raise ValueError(
                f"unexpected top-level entr{'y' if len(bad) == 1 else 'ies'} next to 'model': "
                f"{_list_keys(map(str, bad))} (expected only plain metadata such as 'epoch')."
            )
        state_dict = checkpoint["model"]
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"checkpoint['model'] should be a state dict, got a {type(state_dict).__name__}.")
    else:
        state_dict = checkpoint
    out: Dict[str, torch.Tensor] = {}
    layout = "soft-introvae"
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise ValueError(f"state dict keys should be strings, got {key!r}.")
        if not torch.is_tensor(value):
            raise ValueError(f"state dict entry {key!r} should be a tensor, got a {type(value).__name__}.")
        parts = key.split(".")
        if len(parts) > 2 and parts[0] in ("encoder", "decoder") and parts[1] == "module":
            layout = "as-introvae"
        name = ".".join(p for p in parts if p != "module")
        if name in out:
            raise ValueError(f"two state dict keys become {name!r} once 'module.' is removed (one is {key!r}).")
        out[name] = value
    if not out:
        raise ValueError("the checkpoint's state dict is empty.")
    return out, layout


def infer_reference_config(
    state_dict: Mapping[str, torch.Tensor], sample_size: Optional[int] = None, layout: str = "soft-introvae"
) -> ReferenceConfig:
    r"""
    Read the configuration of a reference image model off its (normalized) state dict.

    Args:
        state_dict (`Mapping[str, torch.Tensor]`): The output of [`normalize_reference_state_dict`].
        sample_size (`int`, *optional*): The image size, if known: checked against the one the weights imply.
        layout (`str`, *optional*, defaults to `"soft-introvae"`): Recorded in the returned config.

    Returns:
        [`ReferenceConfig`]

    Raises:
        `ValueError`: a tensor the inference needs is missing or has an impossible shape, or `sample_size`
            disagrees with the weights.
    """
    if not any(k.startswith(("encoder.", "decoder.")) for k in state_dict):
        raise ValueError(
            "not a Soft-IntroVAE / AS-IntroVAE image checkpoint: expected keys under 'encoder.' and 'decoder.', "
            f"got {_list_keys(state_dict)}."
        )

    def need(key: str, ndim: int, what: str) -> torch.Tensor:
        if key not in state_dict:
            raise ValueError(f"missing key {key!r} ({what}).")
        t = state_dict[key]
        if t.ndim != ndim:
            raise ValueError(f"{key!r} ({what}) should be {ndim}-D, got shape {_shape(t)}.")
        return t

    first = need("encoder.main.0.weight", 4, "the encoder's first 5x5 convolution")
    c0, in_channels = first.shape[0], first.shape[1]
    sizes = sorted({int(m.group(1)) for m in map(_ENCODER_BLOCK.match, state_dict) if m}, reverse=True)
    if not sizes:
        raise ValueError("missing the encoder's residual blocks: no key starts with 'encoder.main.res_in_'.")
    n = len(sizes)
    channels = [int(c0)]
    for size in sizes[:-1]:
        conv1 = need(f"encoder.main.res_in_{size}.conv1.weight", 4, "a residual block's first convolution")
        channels.append(int(conv1.shape[0]))

    fc = need("encoder.fc.weight", 2, "the encoder's linear layer")
    outputs, features = int(fc.shape[0]), int(fc.shape[1])
    if outputs % 2:
        raise ValueError(
            f"'encoder.fc.weight' has {outputs} outputs; expected an even number (mean and log-variance halves)."
        )
    latent_dim = outputs // 2
    side = math.isqrt(features // channels[-1]) if features % channels[-1] == 0 else 0
    if side == 0 or channels[-1] * side * side != features:
        raise ValueError(
            f"'encoder.fc.weight' takes {features} inputs, which is not {channels[-1]} * s * s (the last block's "
            f"channels times a square feature map) for any s; conditional reference models are not supported."
        )
    inferred = side * 2 ** n
    if sample_size is not None and sample_size != inferred:
        raise ValueError(
            f"sample_size={sample_size} was given, but the weights imply sample_size={inferred} (encoder fc input "
            f"{features} = {channels[-1]} * {side} * {side}, with {n} halvings)."
        )
    expected = [inferred // 2 ** (j + 1) for j in range(n)]
    if sizes != expected:
        built = f"{sizes[0] * 2}x{sizes[0] * 2} or {sizes[0] * 2 + 1}x{sizes[0] * 2 + 1}"
        raise ValueError(
            f"the encoder's block names (res_in_{', res_in_'.join(map(str, sizes))}) say it was built for "
            f"{built} images, but its fc layer fits {inferred}x{inferred} "
            f"(blocks res_in_{', res_in_'.join(map(str, expected))}); this package needs a size that is a multiple "
            f"of {2 ** n}, so this model cannot be converted exactly."
        )
    return ReferenceConfig(
        in_channels=int(in_channels),
        sample_size=inferred,
        latent_dim=latent_dim,
        block_out_channels=tuple(channels),
        layout=layout,
    )


def _block_names(reference: str, package: str, in_channels: int, out_channels: int) -> Dict[str, str]:
    names = {}
    if in_channels != out_channels:
        names[f"{reference}.conv_expand.weight"] = f"{package}.skip.weight"
    names[f"{reference}.conv1.weight"] = f"{package}.conv1.weight"
    names.update({f"{reference}.bn1.{e}": f"{package}.norm1.{e}" for e in BN_ENTRIES})
    names[f"{reference}.conv2.weight"] = f"{package}.conv2.weight"
    names.update({f"{reference}.bn2.{e}": f"{package}.norm2.{e}" for e in BN_ENTRIES})
    return names


def reference_key_map(config: ReferenceConfig) -> Dict[str, Tuple[str, str]]:
    r"""
    The name of every reference tensor and where it goes in this package.

    Args:
        config ([`ReferenceConfig`]): The model's configuration.

    Returns:
        `Dict[str, Tuple[str, str]]`: reference key (without `module.`) -> `("encoder" or "decoder", package key)`.
    """
    channels = list(config.block_out_channels)
    size = config.sample_size
    enc: Dict[str, str] = {"main.0.weight": "conv_in.weight"}
    enc.update({f"main.1.{e}": f"norm_in.{e}" for e in BN_ENTRIES})
    pairs = list(zip(channels[:-1], channels[1:])) + [(channels[-1], channels[-1])]
    for j, (c_in, c_out) in enumerate(pairs):
        enc.update(_block_names(f"main.res_in_{size // 2 ** (j + 1)}", f"down_blocks.{j}.resnet", c_in, c_out))
    enc.update({"fc.weight": "fc.weight", "fc.bias": "fc.bias"})

    dec: Dict[str, str] = {"fc.0.weight": "fc.0.weight", "fc.0.bias": "fc.0.bias"}
    c_in = channels[-1]
    for k, c_out in enumerate(list(reversed(channels)) + [channels[0]]):
        dec.update(_block_names(f"main.res_in_{4 * 2 ** k}", f"up_blocks.{k}.resnet", c_in, c_out))
        c_in = c_out
    dec.update({"main.predict.weight": "conv_out.weight", "main.predict.bias": "conv_out.bias"})

    out = {f"encoder.{r}": ("encoder", p) for r, p in enc.items()}
    out.update({f"decoder.{r}": ("decoder", p) for r, p in dec.items()})
    return out


def convert_reference_state_dict(
    checkpoint: Any, sample_size: Optional[int] = None
) -> Tuple[AsIntroVAEEncoder, AsIntroVAEDecoder, ReferenceConfig]:
    r"""
    Convert a loaded reference checkpoint into this package's encoder and decoder.

    Args:
        checkpoint: What `torch.load(..., weights_only=True)` returned for a Soft-IntroVAE or AS-IntroVAE image
            checkpoint: `{"model": state_dict, ...}` or a bare state dict, with or without `module.` components.
        sample_size (`int`, *optional*): The image size; it is read off the weights, so this only checks it.

    Returns:
        `(encoder, decoder, config)`: an [`AsIntroVAEEncoder`] and an [`AsIntroVAEDecoder`] holding the weights
        (loaded with `strict=True`, in eval mode; the decoder has no output activation, as in the reference), and
        the inferred [`ReferenceConfig`].

    Raises:
        `ValueError`: an unexpected or missing key, or a shape mismatch (the message names the key, the expected
            and the given shape).

    Examples:
        ```py
        >>> from asintrovae_hf.models.convert_reference import convert_reference_state_dict, load_reference_checkpoint

        >>> encoder, decoder, config = convert_reference_state_dict(load_reference_checkpoint("model_epoch_150.pth"))
        ```
    """
    state_dict, layout = normalize_reference_state_dict(checkpoint)
    config = infer_reference_config(state_dict, sample_size=sample_size, layout=layout)
    kwargs = dict(sample_size=config.sample_size, latent_dim=config.latent_dim,
                  block_out_channels=config.block_out_channels)
    models = {
        "encoder": AsIntroVAEEncoder(in_channels=config.in_channels, **kwargs),
        "decoder": AsIntroVAEDecoder(out_channels=config.in_channels, output_activation=None, **kwargs),
    }
    targets = {name: model.state_dict() for name, model in models.items()}
    key_map = reference_key_map(config)
    for name, target in targets.items():
        mapped = {p for (m, p) in key_map.values() if m == name}
        if mapped != set(target):  # models.py changed under the mapping: a bug here, not in the checkpoint
            raise RuntimeError(f"internal error: the reference name map does not cover the package {name}'s "
                               f"parameters (unmapped: {_list_keys(set(target) - mapped)}).")

    unexpected = set(state_dict) - set(key_map)
    if unexpected:
        hint = ""
        skips = [k for k in unexpected if k.endswith(".conv_expand.weight")]
        if skips:
            hint = (" (a 1x1 skip convolution in a block whose input and output channels are equal: the package's "
                    "residual block has an identity skip there)")
        raise ValueError(
            f"unexpected key{'s' if len(unexpected) > 1 else ''} for a reference model with "
            f"block_out_channels={config.block_out_channels}, sample_size={config.sample_size}: "
            f"{_list_keys(unexpected)}{hint}."
        )
    missing = set(key_map) - set(state_dict)
    if missing:
        raise ValueError(
            f"missing key{'s' if len(missing) > 1 else ''} for a reference model with "
            f"block_out_channels={config.block_out_channels}, sample_size={config.sample_size}: {_list_keys(missing)}."
        )
    converted: Dict[str, Dict[str, torch.Tensor]] = {"encoder": {}, "decoder": {}}
    for key, (name, package_key) in key_map.items():
        given, expected = state_dict[key], targets[name][package_key]
        if _shape(given) != _shape(expected):
            raise ValueError(
                f"shape mismatch for {key!r} (package {name} {package_key!r}): expected {_shape(expected)}, "
                f"got {_shape(given)}."
            )
        if given.dtype.is_floating_point != expected.dtype.is_floating_point:
            raise ValueError(f"dtype mismatch for {key!r}: expected {expected.dtype}, got {given.dtype}.")
        converted[name][package_key] = given.to(expected.dtype)
    for name, model in models.items():
        model.load_state_dict(converted[name], strict=True)
        model.eval()
    return models["encoder"], models["decoder"], config
