# Generated from the `asintrovae_hf.objectives.elbo`, `asintrovae_hf.json_io`, `asintrovae_hf.pipelines.latents_and_labels`, `asintrovae_hf.pipelines.image_processor`, `asintrovae_hf.pipelines.remote_code`, `asintrovae_hf.pipelines.loading` and `asintrovae_hf.pipelines.pipeline_asintrovae` modules when this pipeline was saved; the package is the source, do not edit.
"""The negative ELBO: the one estimate of `-log p(x)` that scoring, the toy benchmark and OOD detection use.

`negative_elbo` is `KL(q(z|x) || p(z)) - E_q[log p(x|z)]` per sample, or the importance-weighted bound. The
likelihood, the posterior samples and the weighting are explicit arguments, so each caller states its estimate.

This module is also part of the code every saved pipeline ships (it is bundled into `pipeline_asintrovae.py`):
it must import only torch, diffusers and the standard library.
"""

import math
from typing import Callable, List, Optional, Union

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

# `-log p(x|z)` per sample: "gaussian" is a Gaussian of variance 1/2 per value around the decoder's output (the
# squared error plus `D/2 log(pi)`); "mse" and "l1" are the squared and absolute errors without a normalising
# constant (the training losses' scaled likelihoods); "bce" is a Bernoulli (a decoder with a sigmoid output).
LIKELIHOODS = ("gaussian", "mse", "l1", "bce")


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-sample `KL(N(mean, exp(logvar)) || N(0, I)) = 0.5 * sum_z (mean^2 + exp(logvar) - 1 - logvar)`."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def reconstruction_nll(x: torch.Tensor, x_rec: torch.Tensor, likelihood: str = "gaussian") -> torch.Tensor:
    """
    Per-sample `-log p(x | z)` of targets `x` under the decoder's output `x_rec` (both `B x ...`), summed over
    all values; `likelihood` is one of `LIKELIHOODS`.
    """
    if likelihood in ("gaussian", "mse"):
        err = (x - x_rec).pow(2)
    elif likelihood == "l1":
        err = (x - x_rec).abs()
    elif likelihood == "bce":
        err = F.binary_cross_entropy(x_rec.clamp(1e-6, 1 - 1e-6), x, reduction="none")
    else:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}.")
    nll = err.flatten(1).sum(dim=1)
    if likelihood == "gaussian":
        nll = nll + 0.5 * x[0].numel() * math.log(math.pi)
    return nll


def negative_elbo(
    x: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor],
    likelihood: str = "gaussian",
    num_samples: int = 1,
    sample_posterior: bool = True,
    importance_weighted: bool = False,
    generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
    kl: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = gaussian_kl,
) -> torch.Tensor:
    r"""
    Per-sample negative ELBO, `kl(mean, logvar) + mean_k -log p(x | z_k)` in nats, `z_k ~ q(z|x)`.

    Args:
        x (`torch.Tensor`): The data, `B x ...`.
        mean, logvar (`torch.Tensor`): The posterior `q(z|x)`, `B x Z` each.
        decode (`Callable`): Maps `B x Z` latents to the decoder's output, the shape of `x`.
        likelihood (`str`, defaults to `"gaussian"`): One of `LIKELIHOODS` (see there).
        num_samples (`int`, defaults to 1): Posterior samples `z_k` per sample.
        sample_posterior (`bool`, defaults to `True`): Draw `z_k = mean + exp(logvar / 2) * eps` (with
            `randn_tensor` and `generator`, one draw of `B x Z` per `k`); `False` decodes `z = mean` once (a
            deterministic estimate; `num_samples` must then be 1).
        importance_weighted (`bool`, defaults to `False`): Return `-log mean_k p(x, z_k) / q(z_k | x)` (Burda et
            al., 2016) instead; the KL is then estimated from the samples, and `kl` is not used.
        generator (`torch.Generator` or `List[torch.Generator]`, *optional*): Source of `eps`; a list has one per
            sample.
        kl (`Callable`, defaults to `gaussian_kl`): The closed-form KL term. The toy benchmark passes the
            objectives' `kl_divergence` (the same value, summed in another order), so its ELBO is bit for bit the
            training loss's terms.
    """
    if not sample_posterior and (num_samples != 1 or importance_weighted):
        raise ValueError("sample_posterior=False decodes the posterior mean once: num_samples must be 1, and the "
                         "importance-weighted bound needs posterior samples.")
    log_weights, nll = [], []
    for _ in range(num_samples):
        if sample_posterior:
            z = mean + torch.exp(0.5 * logvar) * randn_tensor(mean.shape, generator=generator, device=mean.device,
                                                              dtype=mean.dtype)
        else:
            z = mean
        nll.append(reconstruction_nll(x, decode(z), likelihood))
        if importance_weighted:
            log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1)
            log_qz = -0.5 * ((z - mean).pow(2) / logvar.exp() + logvar + math.log(2 * math.pi)).sum(1)
            log_weights.append(-nll[-1] + log_pz - log_qz)
    if importance_weighted:
        return -(torch.logsumexp(torch.stack(log_weights), 0) - math.log(num_samples))
    return torch.stack(nll).mean(0) + kl(mean, logvar)


"""The one reader of every JSON file this package reads: checkpoint states, `model_index.json`, model configurations,
run records, score files.

Python's `json` module parses arrays and objects recursively, so a file nested a few thousand levels deep ends in a
`RecursionError` (a traceback, not a message), and it reads any size it is given. [`read_json`] and [`loads`] refuse,
before parsing, a file larger than `max_bytes`, anything that is not a regular file (a FIFO would block the read) and
text nested deeper than `max_depth`; every refusal is a [`JsonFileError`] (a `ValueError`) of one line that names the
file, what was expected and what was found.

This module is also bundled into every code file of a saved pipeline (`pipelines/remote_code.py`), so that a pipeline
loaded without the package reads its JSON files with the same limits: it imports only the standard library.
"""

import json
import os
import re
from typing import Any, Iterator, Optional, Tuple

MAX_BYTES = 16 * 1024 * 1024  # the largest JSON file the package writes is a run's records: a few hundred KiB
MAX_DEPTH = 32  # the deepest file the package writes (a training state, a model card's record) is 4 levels deep

# A JSON string (the only place where brackets do not nest), and the brackets outside strings.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")


class JsonFileError(ValueError):
    """A JSON file that is too large, too deeply nested, not a regular file, or not valid JSON."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text` (brackets inside strings not counted); linear, no
    recursion."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def loads(text, where: str = "JSON text", max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
          expect: Optional[type] = None) -> Any:
    """
    `json.loads(text)` within the limits: `text` (str or bytes) of at most `max_bytes` bytes, nested at most
    `max_depth` deep, and of type `expect` when given (e.g. `dict`); otherwise a one-line [`JsonFileError`] starting
    with `where`.
    """
    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > max_bytes:
        raise JsonFileError(f"{where}: expected at most {max_bytes:,} bytes of JSON, got {size:,} bytes.")
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as err:
            raise JsonFileError(f"{where}: expected UTF-8 JSON text, got undecodable bytes ({err.reason} at byte "
                                f"{err.start}).") from None
    depth = nesting_depth(text)
    if depth > max_depth:
        raise JsonFileError(f"{where}: expected JSON nested at most {max_depth} levels deep, got {depth:,} levels; "
                            f"not parsed.")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise JsonFileError(f"{where}: expected valid JSON, got {type(err).__name__}: "
                            f"{' '.join(str(err).split())[:200]}.") from None
    if expect is not None and not isinstance(value, expect):
        raise JsonFileError(f"{where}: expected a JSON {_kind(expect)}, got a JSON {_kind(type(value))}.")
    return value


def read_json(path, what: Optional[str] = None, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
              expect: Optional[type] = None) -> Any:
    """
    Read the JSON file `path` through [`loads`]'s limits. It must be a regular file (a symlink to one is followed, as
    in the Hub cache); `what` names it in messages (default: the path). A missing file raises `FileNotFoundError`,
    as `open` does; every other refusal is a [`JsonFileError`].
    """
    path = os.fspath(path)
    where = what or path
    if os.path.exists(path) and not os.path.isfile(path):
        raise JsonFileError(f"{where}: expected a regular file, got a folder or a special file (FIFO, device or "
                            f"socket).")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise JsonFileError(f"{where}: expected at most {max_bytes:,} bytes of JSON, got {size:,} bytes.")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)  # the file may have grown since it was measured
    return loads(data, where, max_bytes, max_depth, expect)


def read_json_lines(path, what: Optional[str] = None, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
                    skip_invalid: bool = True) -> Iterator[Tuple[int, Any]]:
    """
    `(line number, value)` for each non-empty line of the JSON Lines file `path` (a file of at most `max_bytes`, each
    line within `max_depth`). With `skip_invalid`, a line that is not valid JSON (the torn last line of a killed
    writer) is skipped; a line nested too deep is always refused.
    """
    path = os.fspath(path)
    where = what or path
    if not os.path.isfile(path):
        raise JsonFileError(f"{where}: expected a regular file, got a folder or a special file.")
    size = os.path.getsize(path)
    if size > max_bytes:
        raise JsonFileError(f"{where}: expected at most {max_bytes:,} bytes of JSON lines, got {size:,} bytes.")
    with open(path, "rb") as f:
        lines = f.read(max_bytes + 1).splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield number, loads(line, f"{where} line {number}", max_bytes, max_depth)
        except JsonFileError as err:
            if not skip_invalid or "expected valid JSON" not in str(err):
                raise


def _kind(t: type) -> str:
    return {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(t, t.__name__)


"""The checks of the latents and class labels given to [`AsIntroVAEPipeline`]: `check_latents`, `check_class_labels`.

This module is also part of the code every saved pipeline ships (it is bundled into `pipeline_asintrovae.py`):
it must import only torch and the standard library.
"""

from typing import Optional

import torch


def check_class_labels(class_labels, batch_size: int, device=None) -> Optional[torch.Tensor]:
    """`class_labels` (an int for the whole batch, a list or a tensor) as a tensor, checked by the models."""
    if class_labels is None:
        return None
    if isinstance(class_labels, int) and not isinstance(class_labels, bool):
        class_labels = [class_labels] * batch_size
    if torch.is_tensor(class_labels) and (class_labels.device.type == "meta" or class_labels.is_sparse):
        raise ValueError(f"class_labels must be an int or {batch_size} integers; got a {class_labels.layout} "
                         f"tensor on the {class_labels.device.type} device.")
    labels = torch.as_tensor(class_labels, device=device)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.ndim != 1:
        raise ValueError(f"class_labels must be an int or {batch_size} integers; got {class_labels!r}.")
    if len(labels) != batch_size:  # checked here: the networks see the labels of one chunk at a time
        raise ValueError(f"class_labels must be an int or {batch_size} integers; got {len(labels)} labels.")
    return labels.long()


def check_latents(latents: torch.Tensor, latent_dim: int, device=None, dtype: Optional[torch.dtype] = None
                  ) -> torch.Tensor:
    """`B x latent_dim` latents, checked (dense, float, finite, not empty), on `device` as `dtype`."""
    if not torch.is_tensor(latents) or latents.ndim != 2 or latents.shape[1] != latent_dim:
        shape = tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__
        raise ValueError(f"latents must have shape (batch, {latent_dim}), got {shape}.")
    if latents.shape[0] == 0:
        raise ValueError("latents: got an empty batch.")
    if latents.device.type == "meta" or latents.layout != torch.strided or not latents.is_floating_point():
        raise ValueError(f"latents: expected a dense float tensor holding values; got a {latents.layout} "
                         f"{str(latents.dtype).replace('torch.', '')} tensor on the {latents.device.type} device.")
    if not torch.isfinite(latents).all():
        raise ValueError("latents contain NaN or infinity.")
    return latents.to(device=device, dtype=dtype)


"""`AsIntroVAEImageProcessor` and `AsIntroVAEVectorProcessor`: the one conversion and check of the data inputs of
[`AsIntroVAEPipeline`], image models' and vector models' (latents and class labels: `latents_and_labels.py`).

This module is also part of the code every saved pipeline ships (it is bundled into `pipeline_asintrovae.py`):
it must import only torch, diffusers, numpy, PIL and the standard library.
"""

from typing import Optional, Union

import numpy as np
import PIL.Image
import torch
from diffusers.configuration_utils import register_to_config
from diffusers.image_processor import PipelineImageInput, VaeImageProcessor

# Image values by dtype: the number they are divided by (1: read as they are, and must lie in [0, 1]). Any other dtype
# (bool, complex, float8, quantized, strings, objects) is refused.
IMAGE_DTYPE_SCALES = {"uint8": 255, "uint16": 65535, "float16": 1, "bfloat16": 1, "float32": 1, "float64": 1,
                      "int8": 1, "int16": 1, "int32": 1, "int64": 1, "uint32": 1, "uint64": 1}
# The PIL mode a model of 1, 2, 3 or 4 channels reads.
PIL_TARGET_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
# 8-bit PIL modes PIL converts to RGB with its own colour transforms.
PIL_COLOUR_MODES = ("CMYK", "YCbCr", "LAB", "HSV", "RGBX")
PIL_8BIT_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa") + PIL_COLOUR_MODES


class AsIntroVAEImageProcessor(VaeImageProcessor):
    r"""
    The one conversion of image inputs for [`AsIntroVAEPipeline`]: PIL images, NumPy arrays and tensors, alone or in
    a list mixing them, become one `B x C x H x W` float32 tensor with values in `[0, 1]`, or the call is refused
    with one line naming what was expected and what was given.

    Every input goes through the same steps. PIL images first become arrays of the model's channels: `1` and `P` /
    `PA` exactly (0/255, the palette looked up), `CMYK`, `YCbCr`, `LAB`, `HSV` and `RGBX` by PIL's colour transforms
    to `RGB`, and then to the model's mode (`L` for 1 channel, with PIL's luma; `RGB` for 3; `LA` / `RGBA` for 2 /
    4). An alpha channel is dropped only where it is fully opaque: a transparent image given to a model without
    alpha is refused (composite it onto a background first). High-depth modes are read without loss: `I;16*` as
    `uint16` (divided by 65535), `I` as 16-bit data (values 0..65535, the mode Pillow gives some 16-bit files;
    others are refused), `F` as floats; a 3-channel model gets their one band repeated. Then every array, tensor
    and converted PIL image passes the same checks:

    - layout: arrays `H x W x C` or `B x H x W x C`, tensors `C x H x W` or `B x C x H x W` (`H x W` too for
      1-channel models), with the model's `C`; nothing empty;
    - dtype: `uint8` is read as 0..255, `uint16` as 0..65535; floats (16, 32, 64 bits) and the other integer
      types are read as they are and must lie in `[0, 1]`; bool, complex and other dtypes are refused;
    - values: no NaN or infinity; tensors must hold values (a `meta` tensor does not) in a dense layout.

    Each image is then resized to the model's size with diffusers' `resize`: PIL images with PIL's filter of
    `resample` (8-bit ones after the conversion to the model's mode, high-depth ones as 32-bit floats), arrays
    and tensors with `torch.nn.functional.interpolate` (nearest). Images of different sizes in one list are resized
    one by one.

    The conversions and the resizing are diffusers' and PIL's; the checks are written here because
    `VaeImageProcessor.preprocess` does not make them: it reads `H x W x C` arrays as batches of gray images for
    1-channel models, clips 16-bit and float PIL images to 8 bits, and lets NaN, out-of-range values, empty images
    and images of different sizes through or into errors of torch.

    Args:
        channels (`int`, defaults to 3): The model's input channels.
        sample_size (`int`, defaults to 64): The model's image size; inputs are resized to it.
        resample (`str`, defaults to `"bilinear"`): The PIL filter for resizing PIL images.
    """

    @register_to_config
    def __init__(self, channels: int = 3, sample_size: int = 64, resample: str = "bilinear"):
        super().__init__(
            do_resize=True,
            vae_scale_factor=1,
            vae_latent_channels=0,  # never an image's channel count: every tensor input is an image
            resample=resample,
            do_normalize=False,
            do_convert_grayscale=channels == 1,
            do_convert_rgb=channels == 3,
        )

    # ---- the one entry point ---------------------------------------------------------------------------------

    def preprocess(
        self,
        image: PipelineImageInput,
        height: Optional[int] = None,
        width: Optional[int] = None,
        what: str = "images",
        device: Optional[Union[str, torch.device]] = None,
    ) -> torch.Tensor:
        """
        Convert and check `image` (see the class docstring) into a `B x C x height x width` float32 tensor.

        Args:
            image: A PIL image, array or tensor, or a list (or tuple) of them.
            height, width (`int`, *optional*): The output size; the model's `sample_size` when omitted.
            what (`str`, defaults to `"images"`): The argument's name, for the error messages.
            device (*optional*): Where the output goes (each input is checked where it lies).
        """
        height = height or self.config.sample_size
        width = width or self.config.sample_size
        if isinstance(image, (list, tuple)):
            if len(image) == 0:
                raise ValueError(f"{what}: got an empty {type(image).__name__}; expected at least one image.")
            items = list(image)
        else:
            items = [image]
        pixels = []
        for item in items:
            if isinstance(item, PIL.Image.Image):
                batch = self._pil_to_pixels(item, what, height, width)
            elif isinstance(item, (np.ndarray, torch.Tensor)):
                batch = self._array_to_pixels(item, what, height, width)
            else:
                inside = " inside a list" if len(items) > 1 or items[0] is not image else ""
                raise TypeError(f"{what}: expected PIL images, NumPy arrays or torch tensors; got "
                                f"{type(item).__name__}{inside}.")
            pixels.append(batch.to(device if device is not None else pixels[0].device if pixels else batch.device))
        return pixels[0] if len(pixels) == 1 else torch.cat(pixels)

    # ---- the steps -------------------------------------------------------------------------------------------

    def _values(self, data: Union[np.ndarray, torch.Tensor], what: str) -> torch.Tensor:
        """The values of an array or tensor as floats in `[0, 1]` (float32; the dtype rule and value checks)."""
        if torch.is_tensor(data):
            if data.device.type == "meta":
                raise ValueError(f"{what}: expected a tensor holding values (on cpu, cuda, ...); got a tensor on the "
                                 f"meta device, shape {tuple(data.shape)}.")
            if data.layout != torch.strided:
                raise ValueError(f"{what}: expected a dense tensor; got layout {data.layout}.")
            name = str(data.dtype).replace("torch.", "")
        else:
            if isinstance(data, np.ma.MaskedArray) and np.ma.getmaskarray(data).any():
                raise ValueError(f"{what}: expected every value to be given; got a masked array with "
                                 f"{int(np.ma.getmaskarray(data).sum())} masked values (fill them first).")
            name = data.dtype.name
        scale = IMAGE_DTYPE_SCALES.get(name)
        if scale is None:
            raise TypeError(f"{what}: expected float values in [0, 1], uint8 values in 0..255 or uint16 values in "
                            f"0..65535; got dtype {name}.")
        wide = torch.float64 if name == "float64" else torch.float32  # checks before any rounding
        if torch.is_tensor(data):
            values = data.detach().to(wide)
        else:  # any byte order and strides; a read-only array (PIL's) is copied, torch cannot wrap it
            array = np.ascontiguousarray(data, dtype=np.float64 if name == "float64" else np.float32)
            values = torch.from_numpy(array if array.flags.writeable else array.copy())
        if scale != 1:
            return (values / scale).float()
        finite = torch.isfinite(values)
        if not finite.all():
            nan = int(torch.isnan(values).sum())
            raise ValueError(f"{what}: expected finite values in [0, 1]; got values that contain NaN or infinity "
                             f"({nan} NaN, {int((~finite).sum()) - nan} infinite of {values.numel()}).")
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > 1:
            raise ValueError(f"{what}: {name} values must lie in [0, 1] (uint8 values are read as 0..255, uint16 as "
                             f"0..65535); got values from {low:.4g} to {high:.4g}.")
        return values.float()

    def _array_to_pixels(self, data, what: str, height: int, width: int) -> torch.Tensor:
        """An array (`H x W x C`, `B x H x W x C`) or tensor (`C x H x W`, `B x C x H x W`): layout, values, size."""
        channels, is_array = self.config.channels, isinstance(data, np.ndarray)
        shape, kind = tuple(data.shape), "array" if is_array else "tensor"
        if data.ndim == 2 and channels == 1:
            data = data[None, :, :, None] if is_array else data[None, None]
        elif data.ndim == 3:
            data = data[None]
        given = (data.shape[-1] if is_array else data.shape[1]) if data.ndim == 4 else None
        if data.ndim != 4 or given != channels:
            gray = " or (height, width)" if channels == 1 else ""
            layout = (f"arrays of shape (height, width, {channels}) or (batch, height, width, {channels}){gray}"
                      if is_array else f"tensors of shape (batch, {channels}, {self.config.sample_size}, "
                      f"{self.config.sample_size}) or ({channels}, height, width){gray} (other sizes are resized)")
            raise ValueError(f"{what}: this model takes {channels}-channel images, {layout}; got a{'n' * is_array} "
                             f"{kind} of shape {shape}.")
        if 0 in data.shape:
            raise ValueError(f"{what}: got an empty {kind} of shape {shape}; expected at least one image of at least "
                             f"1 x 1 pixels.")
        pixels = self._values(data, what)
        if is_array:
            pixels = pixels.permute(0, 3, 1, 2)
        if tuple(pixels.shape[-2:]) != (height, width):
            pixels = self.resize(pixels, height, width)
        return pixels.contiguous()

    def _pil_to_pixels(self, image: PIL.Image.Image, what: str, height: int, width: int) -> torch.Tensor:
        """A PIL image in the model's channels (exactly, by PIL's colour transforms, or refused), checked, resized."""
        channels, mode = self.config.channels, image.mode
        target = PIL_TARGET_MODES.get(channels)
        if target is None:
            raise ValueError(f"{what}: a {channels}-channel model takes arrays or tensors; got a PIL image "
                             f"(mode {mode}).")
        if image.width == 0 or image.height == 0:
            raise ValueError(f"{what}: got an empty PIL image of size {image.width} x {image.height}; expected at "
                             f"least 1 x 1 pixels.")
        try:  # a lazily opened file is read here: a truncated or corrupt one fails now, in one line
            image.load()
        except (OSError, ValueError, SyntaxError) as err:
            raise ValueError(f"{what}: expected a readable PIL image; got a {mode} image of size {image.width} x "
                             f"{image.height} whose data cannot be read ({str(err).splitlines()[0]}).") from None
        if mode == "F" or mode == "I" or mode.startswith("I;16"):
            return self._high_depth_pil_to_pixels(image, what, height, width)
        if mode not in PIL_8BIT_MODES:
            raise ValueError(f"{what}: PIL mode {mode} is not supported; expected one of "
                             f"{', '.join(PIL_8BIT_MODES)}, I, I;16, F.")
        if mode == "1":
            image = image.convert("L")  # exact: 0 and 255
        elif mode in ("P", "PA"):  # exact: the palette looked up
            image = image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "RGB")
        elif mode in ("La", "RGBa"):  # premultiplied alpha
            image = image.convert(mode[:-1] + "A")
        elif mode in PIL_COLOUR_MODES:
            image = self.convert_to_rgb(image)
        if "A" in image.getbands() and "A" not in target:
            lowest = image.getchannel("A").getextrema()[0]
            if lowest < 255:
                raise ValueError(f"{what}: this model takes {channels}-channel images without transparency; got a PIL "
                                 f"image of mode {mode} whose alpha goes down to {lowest} of 255 (composite it onto a "
                                 f"background first).")
        if image.mode != target:
            if target == "L":
                image = self.convert_to_grayscale(image)
            elif target == "RGB":
                image = self.convert_to_rgb(image)
            else:
                image = image.convert(target)
        if image.size != (width, height):
            image = self.resize(image, height, width)
        array = np.asarray(image)
        return self._values(array[None, ..., None] if array.ndim == 2 else array[None], what).permute(0, 3, 1, 2)

    def _high_depth_pil_to_pixels(self, image: PIL.Image.Image, what: str, height: int, width: int) -> torch.Tensor:
        """Modes `I;16*`, `I` and `F`: one band, read without loss, resized as 32-bit floats."""
        channels, mode = self.config.channels, image.mode
        if channels not in (1, 3):
            raise ValueError(f"{what}: a {channels}-channel model takes {PIL_TARGET_MODES[channels]} PIL images; got "
                             f"a one-band {mode} image.")
        array = np.asarray(image)
        if mode == "I":
            low, high = int(array.min()), int(array.max())
            if low < 0 or high > 65535:
                raise ValueError(f"{what}: a mode-I PIL image is read as 16-bit data, values 0..65535 (divided by "
                                 f"65535); got values from {low} to {high}.")
            array = array.astype(np.uint16)
        values = self._values(array, what).numpy()
        if image.size != (width, height):
            values = np.asarray(self.resize(PIL.Image.fromarray(values), height, width))  # float32: mode F
        pixels = torch.from_numpy(np.array(values, dtype=np.float32))[None, None]  # PIL's arrays are read-only
        return pixels.expand(1, channels, height, width).contiguous()


class AsIntroVAEVectorProcessor:
    r"""
    The one conversion of the inputs of a vector model: arrays, tensors or lists of equal-length vectors become a
    `B x D` tensor, or the call is refused in one line. `uint8` values are read as `0..255`; float and int32/int64
    ones as they are, and must be finite.

    Args:
        features (`int`): The model's `D`, the values per vector.
    """

    def __init__(self, features: int):
        self.features = features

    def preprocess(self, data, what: str = "images", device=None, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Check and stack `data` into a `B x D` tensor (on `device`, as `dtype`, when given)."""
        checked = self._check_values(data, what)
        try:
            checked = torch.as_tensor(np.asarray(checked) if not torch.is_tensor(checked) else checked)
        except (TypeError, ValueError, RuntimeError):  # ragged or mixed lists
            raise ValueError(f"{what}: expected vectors of shape (batch, {self.features}) (an array, a tensor or a "
                             f"list of equal-length vectors); got a {type(data).__name__} that does not stack into "
                             f"one array.") from None
        if checked.ndim == 1:
            checked = checked[None]
        if checked.ndim != 2 or checked.shape[1] != self.features:
            raise ValueError(f"{what}: expected vectors of shape (batch, {self.features}); got "
                             f"{tuple(checked.shape)}.")
        return checked.to(device=device, dtype=dtype)

    def postprocess(self, sample: torch.Tensor, output_type: str = "pt"):
        """The decoder's output as float32 on the CPU: a tensor, or an array for `output_type="np"`."""
        sample = sample.float().cpu()
        return sample.numpy() if output_type == "np" else sample

    def _check_values(self, data, what: str):
        """uint8 tensors/arrays are read as 0..255; float ones must be finite."""
        if isinstance(data, (list, tuple)):
            if len(data) == 0:
                raise ValueError(f"{what}: got an empty list; expected at least one vector.")
            return [self._check_values(d, what) for d in data]
        if not isinstance(data, (np.ndarray, torch.Tensor)):
            raise TypeError(f"{what}: a vector model takes NumPy arrays or torch tensors; got {type(data).__name__}.")
        if torch.is_tensor(data) and (data.device.type == "meta" or data.layout != torch.strided):
            raise ValueError(f"{what}: expected a dense tensor holding values; got a {data.layout} tensor on the "
                             f"{data.device.type} device.")
        tensor = torch.as_tensor(data)
        if tensor.dtype == torch.uint8:
            scaled = tensor.float() / 255.0
            return scaled.numpy() if isinstance(data, np.ndarray) else scaled
        if tensor.dtype == torch.bool or not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{what}: expected float values or uint8 values in 0..255; got dtype {tensor.dtype}.")
        if tensor.numel() == 0:
            raise ValueError(f"{what}: got an empty {type(data).__name__} of shape {tuple(tensor.shape)}.")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{what}: expected finite values; got values that contain NaN or infinity.")
        return data if tensor.is_floating_point() else tensor.float()


"""The code files of a saved pipeline, in the layout diffusers documents for custom pipelines on the Hub.

`save_code` writes `pipeline_asintrovae.py` at the folder's root and the models' code in each component folder
(the optional `latent_prior` included, when the pipeline has one), and points `model_index.json` at them, so that
`DiffusionPipeline.from_pretrained(folder_or_repo, trust_remote_code=True)` loads the pipeline where `asintrovae_hf`
is not installed. diffusers' loader fetches a relative import as another file of the repo and requires every
imported package, so a shipped file must import only torch, numpy, PIL, diffusers, huggingface_hub and the standard
library: each code file is therefore one bundle, package modules concatenated with their imports of each other
dropped (`BUNDLE_MODULES` for the pipeline, `MODEL_BUNDLE_MODULES` for the encoder and decoder). Both bundles hold
`json_io`, the package's one JSON reader.

This module is also part of that bundle (a pipeline loaded as remote code saves itself with it).
"""

import importlib
import inspect
import json
import os
import re
import sys


# The code files of a saved pipeline (model_index.json refers to them by these module names).
PIPELINE_MODULE = "pipeline_asintrovae"
COMPONENT_MODULES = {"encoder": "modeling_asintrovae_encoder", "decoder": "modeling_asintrovae_decoder"}
# Optional components: their code is written (and `model_index.json` names it) only when the pipeline has one.
OPTIONAL_COMPONENT_MODULES = {"latent_prior": "modeling_asintrovae_latent_prior"}

PACKAGE = "asintrovae_hf"
# The package modules concatenated, in this order, into the saved `pipeline_asintrovae.py`; a module may import
# from the ones before it, with single-line `from <module> import <names>` statements (dropped in the bundle).
BUNDLE_MODULES = (
    "asintrovae_hf.objectives.elbo",
    "asintrovae_hf.json_io",
    "asintrovae_hf.pipelines.latents_and_labels",
    "asintrovae_hf.pipelines.image_processor",
    "asintrovae_hf.pipelines.remote_code",
    "asintrovae_hf.pipelines.loading",
    "asintrovae_hf.pipelines.pipeline_asintrovae",
)
# The same for the encoder's and the decoder's code file (each holds every model class: `model_index.json` names one).
MODEL_BUNDLE_MODULES = (
    "asintrovae_hf.json_io",
    "asintrovae_hf.models.loading",
    "asintrovae_hf.models.blocks",
    "asintrovae_hf.models.autoencoder_image",
    "asintrovae_hf.models.autoencoder_vector",
)
MAX_INDEX_BYTES = 64 * 1024  # a model_index.json of this pipeline is under 1 KiB
# What a shipped file may import besides the standard library: what a machine without this package has.
ALLOWED_PACKAGES = frozenset({"diffusers", "huggingface_hub", "numpy", "PIL", "torch"})
# Python 3.9 has no list of its standard library: the modules the shipped files use stand for it there.
STANDARD_LIBRARY = getattr(sys, "stdlib_module_names", frozenset(
    {"contextlib", "dataclasses", "functools", "importlib", "inspect", "json", "math", "os", "re", "sys", "typing"}))
GENERATED = "# Generated from the `"

# Import statements as diffusers' remote-code loader reads them (its regexes match a line's start), widened to
# `import a as b` and `import a, b`.
_FROM_LINE = re.compile(r"^(\s*)from\s+(\S+)\s+import\b(.*)$")
_IMPORT_LINE = re.compile(r"^\s*import\s+(.+)$")
# The names a module defines at its top level (imports aside), which one module of a bundle must not redefine.
_DEFINITION = re.compile(r"^(?:(?:async\s+)?def\s+(\w+)|class\s+(\w+)|(\w+)\s*(?::[^=]*)?=(?!=))", re.MULTILINE)


def _header(module_names) -> str:
    names = [f"`{name}`" for name in module_names]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return (f"# Generated from the {listed} module{'s' * (len(names) > 1)} when this pipeline was saved; the package "
            f"is the source, do not edit.\n")


def _absolute(target: str, module_name: str) -> str:
    """`target` of `from <target> import` in `module_name`, made absolute."""
    if not target.startswith("."):
        return target
    level = len(target) - len(target.lstrip("."))
    base = module_name.split(".")[:-level]
    return ".".join(base + ([target[level:]] if target[level:] else []))


def _drop_bundled_imports(source: str, module_name: str, earlier) -> str:
    """
    `source` without its imports of the modules bundled before it; any other import of the package (or a relative
    one), and one that is not a single top-level line importing plain names, is refused.
    """
    kept = []
    for number, line in enumerate(source.splitlines(keepends=True), 1):
        match = _FROM_LINE.match(line.rstrip("\n"))
        if match and (match[2].startswith(".") or match[2].split(".")[0] == PACKAGE):
            target, names = _absolute(match[2], module_name), match[3].split("#")[0]
            if target not in earlier:
                raise RuntimeError(f"{module_name} cannot be bundled into a saved pipeline's code: line {number} "
                                   f"imports {target}, which is not one of the modules bundled before it "
                                   f"({', '.join(earlier) or 'none'}).")
            if match[1] or "(" in names or names.rstrip().endswith("\\") or " as " in names or ";" in names:
                raise RuntimeError(f"{module_name} cannot be bundled into a saved pipeline's code: line {number} "
                                   f"({line.strip()!r}) must be one top-level line `from {match[2]} import "
                                   f"<names>` without parentheses, continuation or `as`.")
            continue  # the names are defined earlier in the bundle
        kept.append(line)
    return "".join(kept)


def check_imports(source: str, what: str) -> None:
    """Refuse `source` if it imports anything but the standard library and `ALLOWED_PACKAGES`."""
    imports = []
    for line in source.splitlines():
        match = _FROM_LINE.match(line)
        if match:
            imports.append(match[2])
            continue
        match = _IMPORT_LINE.match(line)
        if match:
            imports.extend(part.split()[0] for part in match[1].split(",") if part.split())
    bad = sorted({name for name in imports
                  if name.startswith(".") or name.split(".")[0] not in ALLOWED_PACKAGES | STANDARD_LIBRARY})
    if bad:
        raise RuntimeError(f"{what} cannot be saved as a pipeline's remote code: it imports {', '.join(bad)} (a "
                           f"machine without {PACKAGE} has only the standard library and "
                           f"{', '.join(sorted(ALLOWED_PACKAGES))}).")


def bundle_source(module_names=BUNDLE_MODULES) -> str:
    """
    The saved `pipeline_asintrovae.py`: the one-line header, then the sources of `module_names`, in order, each
    without its lines importing the modules before it, joined by two newlines.
    """
    sources, defined = [], {}
    for i, name in enumerate(module_names):
        source = inspect.getsource(importlib.import_module(name))
        sources.append(_drop_bundled_imports(source, name, module_names[:i]))
        for match in _DEFINITION.finditer(source):
            symbol = next(group for group in match.groups() if group)
            if defined.setdefault(symbol, name) != name:  # one namespace in the bundle: a later one would win
                raise RuntimeError(f"{name} cannot be bundled into a saved pipeline's code: it defines {symbol}, "
                                   f"which {defined[symbol]} defines too.")
    text = _header(module_names) + "\n\n".join(sources)
    check_imports(text, "the bundle of " + ", ".join(module_names))
    return text


def module_source(module) -> str:
    """
    A module's source as a shipped file: after the one-line header, or as it is when it is itself a generated file
    (a pipeline loaded as remote code, saved again).
    """
    source = inspect.getsource(module)
    if not source.startswith(GENERATED):
        source = _header([module.__name__]) + source
    check_imports(source, module.__name__)
    return source


def code_of(cls) -> str:
    """
    The shipped code file of the class `cls`: the bundle its module belongs to, else its module alone (a module
    that is itself a generated file, of a pipeline loaded as remote code, is copied as it is).
    """
    module = sys.modules[cls.__module__]
    for bundle in (BUNDLE_MODULES, MODEL_BUNDLE_MODULES):
        if module.__name__ in bundle:
            return bundle_source(bundle)
    return module_source(module)


def write_source(text: str, path: str) -> None:
    """Write `text` to `path` atomically, never through a link or special file already at `path`."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Written next to `path` and renamed over it: a symlink (or FIFO) already at `path` is replaced, never followed,
    # so a save cannot write outside its folder (or block on a pipe).
    temporary = f"{path}.{os.getpid()}.tmp"
    if os.path.lexists(temporary):  # left by a save of this process id that was killed
        os.remove(temporary)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.remove(temporary)
        raise


def save_code(pipeline, save_directory) -> None:
    """Write the code files of `pipeline` saved in `save_directory` and point its `model_index.json` at them."""
    index_path = os.path.join(save_directory, "model_index.json")
    index = read_json(index_path, max_bytes=MAX_INDEX_BYTES, expect=dict)
    write_source(code_of(type(pipeline)), os.path.join(save_directory, PIPELINE_MODULE + ".py"))
    index["_class_name"] = [PIPELINE_MODULE, type(pipeline).__name__]
    for name, module_name in {**COMPONENT_MODULES, **OPTIONAL_COMPONENT_MODULES}.items():
        component = getattr(pipeline, name, None)
        if component is None:
            # an optional component the pipeline does not have: no code and no entry (diffusers writes `[null,
            # null]`), so that model_index.json is what it was before the component existed
            index.pop(name, None)
            continue
        component = getattr(component, "_orig_mod", component)  # torch.compile wrapper
        write_source(code_of(type(component)), os.path.join(save_directory, name, module_name + ".py"))
        index[name] = [module_name, type(component).__name__]
    with open(index_path, "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")


"""
How [`AsIntroVAEPipeline`] loads and saves: diffusers' `from_pretrained`, `load_config`, `from_pipe` and
`save_pretrained`, with the plugin's classes for every component where the plugin is installed (no code from the folder
or repo runs), the component classes checked against `model_index.json` and the components' `config.json`, and the
pipeline's code saved with it (`remote_code.save_code`).

This module is also part of the code every saved pipeline ships (it is bundled into `pipeline_asintrovae.py`):
it must import only torch, diffusers, huggingface_hub and the standard library, and the modules bundled before it.
"""

import importlib
import os
from typing import Optional, Union

from diffusers.pipelines.pipeline_utils import DiffusionPipeline


# The model classes each component may have (`model_index.json` names one of them; anything else is refused).
COMPONENT_CLASSES = {
    "encoder": ("AsIntroVAEEncoder", "AsIntroVAEVectorEncoder"),
    "decoder": ("AsIntroVAEDecoder", "AsIntroVAEVectorDecoder"),
}
# Components a pipeline may lack (`model_index.json` then does not list them, as in every pipeline saved before them).
OPTIONAL_COMPONENT_CLASSES = {"latent_prior": ("GaussianMixtureLatentPrior",)}
# The module diffusers' loader imports the component classes from when the plugin is installed. It must also hold
# `ModelMixin` in its namespace: diffusers picks a component's loading method by the base classes it finds there.
PLUGIN_MODELS_MODULE = "asintrovae_hf.models"


def _plugin_models():
    """
    The `asintrovae_hf.models` module when the plugin is installed, else `None` (this file running as a Hub repo's
    remote code). Looked up with importlib: an import statement here would make diffusers' remote-code check demand
    the plugin on machines that load the repo without it.
    """
    try:
        return importlib.import_module(PLUGIN_MODELS_MODULE)
    except ImportError:
        return None


def _check_component_config(folder, name: str, class_name: str) -> None:
    """
    In a local folder (diffusers loads a Hub repo from its downloaded folder), refuse a `model_index.json` class
    that is not the class of the component's own `config.json`: the weights would load into the wrong network.
    """
    path = os.path.join(str(folder), name, "config.json")
    if not os.path.isfile(path) or os.path.getsize(path) > MAX_INDEX_BYTES:
        return  # diffusers reports the missing file itself
    try:
        saved = read_json(path, max_bytes=MAX_INDEX_BYTES, expect=dict).get("_class_name")
    except (ValueError, RecursionError, OSError):
        return  # the component's loader reports an unreadable config itself
    if saved != class_name:
        raise ValueError(f"{folder}: model_index.json names {class_name} for {name!r}, but {name}/config.json is a "
                         f"{str(saved)[:100]}; expected the same class in both.")


class AsIntroVAELoadingMixin:
    """The loading and saving of [`AsIntroVAEPipeline`] (a mixin before diffusers' `DiffusionPipeline`)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], **kwargs):
        r"""
        Load a saved pipeline from a folder or a Hub repo id, with diffusers' `DiffusionPipeline.from_pretrained`.

        Every argument is diffusers': `dtype` (a dtype, or a dict per component with a `"default"`), `device_map`,
        `variant`, `use_safetensors`, `low_cpu_mem_usage`, the Hub arguments (`revision`, `token`, `cache_dir`,
        `local_files_only`, `force_download`, ...), and components to use instead of loading them (`decoder=...`).
        With the plugin installed, each component is built from this package's classes (the class
        `model_index.json` names must be one a component may have) and no code from the folder or repo runs;
        `trust_remote_code` is ignored. Without the plugin, load a repo with
        `DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)`.

        Examples:
            ```py
            >>> pipe = AsIntroVAEPipeline.from_pretrained("you/as-introvae-digits", dtype=torch.bfloat16)
            ```
        """
        if _plugin_models() is not None:
            # the plugin's classes are used, so the repo's code is never needed: never let diffusers import it
            kwargs.pop("trust_remote_code", None)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _dict_from_json_file(cls, json_file: Union[str, os.PathLike], *args, **kwargs):
        """
        Read `model_index.json` as diffusers does, then, when the plugin is installed, name this class instead of
        the saved pipeline file. diffusers reads the index here both before downloading a repo and before loading
        it; with the file's name it would import the repo's code (and ask for `trust_remote_code`).
        """
        if not os.path.isfile(json_file):  # follows the Hub cache's symlinks; a FIFO would block the read
            raise ValueError(f"{json_file}: expected a regular file, got a special file (FIFO, device or socket).")
        if os.path.getsize(json_file) > MAX_INDEX_BYTES:
            raise ValueError(f"{json_file}: expected at most {MAX_INDEX_BYTES} bytes, got "
                             f"{os.path.getsize(json_file)} bytes.")
        try:  # the package's JSON reader (size and nesting limits) where it is installed
            index = read_json(json_file, max_bytes=MAX_INDEX_BYTES, expect=dict)
        except (ValueError, RecursionError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
            raise ValueError(f"{json_file} is not a readable JSON object: {type(err).__name__}: "
                             f"{str(err)[:300]}") from None
        if _plugin_models() is not None and os.path.basename(str(json_file)) == cls.config_name:
            index["_class_name"] = cls.__name__
        return index

    @classmethod
    def load_config(cls, pretrained_model_name_or_path, *args, **kwargs):
        """
        diffusers' `load_config`; for `model_index.json` with the plugin installed, each component entry names its
        class in this package (checked against the classes that component may have) instead of the saved code file.
        """
        loaded = super().load_config(pretrained_model_name_or_path, *args, **kwargs)
        index = loaded[0] if isinstance(loaded, tuple) else loaded
        if _plugin_models() is not None and index.get("_class_name") == cls.__name__:
            for name, allowed in COMPONENT_CLASSES.items():
                entry = index.get(name)
                if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[1] in allowed):
                    raise ValueError(
                        f"{pretrained_model_name_or_path}: model_index.json entry {name!r} is {str(entry)[:200]}; "
                        f"expected [module, class] with the class one of {', '.join(allowed)}."
                    )
                _check_component_config(pretrained_model_name_or_path, name, entry[1])
                index[name] = [PLUGIN_MODELS_MODULE, entry[1]]
            for name, allowed in OPTIONAL_COMPONENT_CLASSES.items():
                entry = index.get(name)
                if entry is None or (isinstance(entry, (list, tuple)) and list(entry) == [None, None]):
                    continue  # the pipeline has none (every pipeline saved before the component existed)
                if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and entry[1] in allowed):
                    raise ValueError(
                        f"{pretrained_model_name_or_path}: model_index.json entry {name!r} is {str(entry)[:200]}; "
                        f"expected [module, class] with the class one of {', '.join(allowed)}, or no entry."
                    )
                _check_component_config(pretrained_model_name_or_path, name, entry[1])
                index[name] = [PLUGIN_MODELS_MODULE, entry[1]]
        return loaded

    @classmethod
    def from_pipe(cls, pipeline: DiffusionPipeline, **kwargs):
        r"""
        A new pipeline sharing the components of `pipeline` (no copy), with diffusers' `from_pipe` and its
        arguments (`dtype`, `encoder=` or `decoder=` to replace one, ...).
        """
        # diffusers takes a component over only when its exact class is in the signature's type hints, which the
        # pipeline's file cannot import (it is also the code of saved pipelines): hand the components over explicitly.
        for name in (*COMPONENT_CLASSES, *OPTIONAL_COMPONENT_CLASSES):
            if name not in kwargs and getattr(pipeline, name, None) is not None:
                kwargs[name] = getattr(pipeline, name)
        return super().from_pipe(pipeline, **kwargs)

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
        plus its code in the layout of custom Hub pipelines (`remote_code.save_code`): the pipeline's modules bundled
        into `pipeline_asintrovae.py` and the models' modules into one file in each component folder, generated from
        the installed package at save time (copied as loaded, for a pipeline loaded as remote code, which already is
        those bundles). `model_index.json` names them, so the saved folder or repo also loads with
        `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` where `asintrovae_hf` is not installed.

        Args:
            save_directory (`str` or `os.PathLike`): The folder.
            safe_serialization, variant, max_shard_size: As in diffusers.
            push_to_hub (`bool`, *optional*, defaults to `False`): Upload the folder afterwards; `repo_id`,
                `token`, `private`, `commit_message` and `create_pr` are taken from `kwargs` as in diffusers.
        """
        super().save_pretrained(save_directory, safe_serialization=safe_serialization, variant=variant,
                                max_shard_size=max_shard_size, push_to_hub=False)
        save_code(self, save_directory)
        if push_to_hub:
            from huggingface_hub import create_repo

            token = kwargs.pop("token", None)
            repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
            repo_id = create_repo(repo_id, exist_ok=True, private=kwargs.pop("private", None), token=token).repo_id
            self._upload_folder(save_directory, repo_id, token=token, commit_message=kwargs.pop("commit_message", None),
                                create_pr=kwargs.pop("create_pr", False))


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
