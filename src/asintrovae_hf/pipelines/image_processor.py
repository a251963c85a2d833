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
