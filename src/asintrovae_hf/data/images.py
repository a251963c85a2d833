"""Images of a dataset for training: the image and class columns, the transform, batches, and the check that drops
damaged images.

Modelled on diffusers' `examples/unconditional_image_generation/train_unconditional.py`, without torchvision: the
transform is PIL + torch, and its randomness comes from torch's global RNG, so that Accelerate's `set_seed` and
`save_state`/`load_state` make it reproducible.
"""

import io
import os
import warnings
from typing import Dict, List, Optional

from ..errors import require

require("datasets", purpose="Loading image datasets")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402

# Modes whose pixels are 16-bit integers: PIL's own `convert("L")` clips them at 255 instead of scaling them.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _describe_columns(dataset: datasets.Dataset) -> str:
    return ", ".join(f"{name!r} ({type(feature).__name__})" for name, feature in dataset.features.items())


def resolve_image_column(dataset: datasets.Dataset, image_column: Optional[str] = None) -> str:
    r"""
    The column holding the images.

    Args:
        dataset (`datasets.Dataset`): The dataset.
        image_column (`str`, *optional*): The column asked for; by default the first `datasets.Image` column.

    Returns:
        `str`: the column name.

    Raises:
        `ValueError`: the column asked for is missing or holds no images, or (by default) there is no image column;
            the message lists the columns and their feature types.
    """
    features = dataset.features
    if image_column is not None:
        if image_column not in features:
            raise ValueError(
                f"Image column {image_column!r} not found in the dataset; available columns: "
                f"{_describe_columns(dataset)}."
            )
        if not isinstance(features[image_column], datasets.Image):
            raise ValueError(
                f"Column {image_column!r} holds {type(features[image_column]).__name__}, not images; columns: "
                f"{_describe_columns(dataset)}. (A column of file paths can be cast with "
                f"`dataset.cast_column({image_column!r}, datasets.Image())`.)"
            )
        return image_column
    for name, feature in features.items():
        if isinstance(feature, datasets.Image):
            return name
    raise ValueError(
        f"The dataset has no image column (a `datasets.Image` feature); columns: {_describe_columns(dataset)}."
    )


class ImageTransform:
    r"""
    PIL image -> `C x R x R` float tensor, like diffusers' `train_unconditional.py` transforms without torchvision:
    convert, resize the shorter side to `resolution` (PIL bilinear), center or random crop, random horizontal flip.

    Values are in `[0, 1]`, the range of this project's pipeline, models and grids; `normalize=True` maps them to
    `[-1, 1]` as `transforms.Normalize([0.5], [0.5])` does in diffusers. Random crops and flips draw from torch's global
    RNG (`torch.randint`, `torch.rand`, in torchvision's order), so `accelerate.utils.set_seed` makes them repeatable.

    Args:
        resolution (`int`): Output height and width.
        num_channels (`int`): 1 (grayscale, PIL `"L"`) or 3 (`"RGB"`). Other modes are converted as PIL does (alpha is
            dropped, palettes expanded), except 16-bit integer images, which are scaled to 8 bits rather than clipped.
        center_crop (`bool`, *optional*, defaults to `False`): Center crop; otherwise a random crop.
        random_flip (`bool`, *optional*, defaults to `False`): Flip horizontally with probability 0.5.
        normalize (`bool`, *optional*, defaults to `False`): Map `[0, 1]` to `[-1, 1]`.
    """

    def __init__(
        self,
        resolution: int,
        num_channels: int,
        center_crop: bool = False,
        random_flip: bool = False,
        normalize: bool = False,
    ):
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 (grayscale) or 3 (RGB), got {num_channels!r}.")
        if not isinstance(resolution, int) or resolution <= 0:
            raise ValueError(f"resolution must be a positive integer, got {resolution!r}.")
        self.resolution = resolution
        self.num_channels = num_channels
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.normalize = normalize

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(resolution={self.resolution}, num_channels={self.num_channels}, "
            f"center_crop={self.center_crop}, random_flip={self.random_flip}, normalize={self.normalize})"
        )

    def _convert(self, image: PIL.Image.Image) -> PIL.Image.Image:
        """`"L"` or `"RGB"`; a 16-bit image becomes a one-channel `"F"` image in `[0, 255]` (widened at the end)."""
        if image.mode in _SIXTEEN_BIT_MODES:
            return PIL.Image.fromarray(np.asarray(image, dtype=np.float32) / 257.0)
        return image.convert("L" if self.num_channels == 1 else "RGB")

    def _resize(self, image: PIL.Image.Image) -> PIL.Image.Image:
        width, height = image.size
        short, long = min(width, height), max(width, height)
        new_short, new_long = self.resolution, int(self.resolution * long / short)  # torchvision's rounding
        size = (new_short, new_long) if width <= height else (new_long, new_short)
        return image.resize(size, resample=PIL.Image.BILINEAR)

    def _crop(self, image: PIL.Image.Image) -> PIL.Image.Image:
        width, height = image.size
        size = self.resolution
        if self.center_crop:
            top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
        else:
            top = int(torch.randint(0, height - size + 1, size=(1,)).item())
            left = int(torch.randint(0, width - size + 1, size=(1,)).item())
        return image.crop((left, top, left + size, top + size))

    def __call__(self, image) -> torch.Tensor:
        r"""
        Args:
            image (`PIL.Image.Image` or `np.ndarray`): An image (an array is read with `PIL.Image.fromarray`).

        Returns:
            `torch.Tensor`: `num_channels x resolution x resolution`, `float32`.
        """
        if isinstance(image, np.ndarray):
            image = PIL.Image.fromarray(image)
        if not isinstance(image, PIL.Image.Image):
            raise TypeError(f"Expected a PIL image, got {type(image).__name__}.")
        image = self._crop(self._resize(self._convert(image)))
        if self.random_flip and torch.rand(1).item() < 0.5:
            image = image.transpose(PIL.Image.FLIP_LEFT_RIGHT)
        array = np.asarray(image, dtype=np.float32) / 255.0
        pixels = torch.from_numpy(array.copy()).clamp_(0, 1)
        pixels = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
        if pixels.shape[0] != self.num_channels:  # a 16-bit grayscale image for an RGB model
            pixels = pixels.expand(self.num_channels, -1, -1).contiguous()
        return pixels * 2 - 1 if self.normalize else pixels


def make_train_dataset(
    dataset: datasets.Dataset, image_column: str, transform, class_column: Optional[str] = None
) -> datasets.Dataset:
    r"""
    The dataset the training loop reads: `dataset.with_transform` yielding `{"pixel_values": tensor}` (and
    `"class_labels"`, an int, with `class_column`).

    Only `image_column` (and `class_column`) are read.

    Args:
        dataset (`datasets.Dataset`): The images.
        image_column (`str`): Their column (see [`resolve_image_column`]).
        transform (`Callable`): PIL image -> tensor, e.g. an [`ImageTransform`].
        class_column (`str`, *optional*): A column of integer class labels (see [`resolve_class_column`]).

    Returns:
        `datasets.Dataset`: a view with an on-the-fly transform; `dataset` itself is unchanged.
    """

    def apply(batch: Dict[str, List]) -> Dict[str, List[torch.Tensor]]:
        out = {"pixel_values": [transform(image) for image in batch[image_column]]}
        if class_column is not None:
            out["class_labels"] = [int(label) for label in batch[class_column]]
        return out

    return dataset.with_transform(apply, columns=[image_column] + ([class_column] if class_column else []))


def resolve_class_column(dataset: datasets.Dataset, class_column: str) -> int:
    r"""
    The number of classes of `class_column`: a `datasets.ClassLabel` column's `num_classes`, or for a column of
    non-negative integers their maximum plus one.

    Raises:
        `ValueError`: the column is missing or does not hold integer labels; the message lists the columns.
    """
    features = dataset.features
    if class_column not in features:
        raise ValueError(f"Class column {class_column!r} not found in the dataset; available columns: "
                         f"{_describe_columns(dataset)}.")
    feature = features[class_column]
    if isinstance(feature, datasets.ClassLabel):
        return feature.num_classes
    if isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
        labels = np.asarray(dataset[class_column])
        if len(labels) and labels.min() >= 0:
            return int(labels.max()) + 1
    raise ValueError(f"Column {class_column!r} holds {feature!r}; --class_column needs integer class labels "
                     f"(a ClassLabel, or non-negative integers). Columns: {_describe_columns(dataset)}.")


def collate_fn(examples: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    r"""
    Stack examples from [`make_train_dataset`] into a batch.

    Args:
        examples (`List[Dict[str, torch.Tensor]]`): Each with `"pixel_values"`, `C x R x R`.

    Returns:
        `Dict[str, torch.Tensor]`: `{"pixel_values": B x C x R x R}`, contiguous `float32`.
    """
    if not examples:
        raise ValueError("collate_fn needs at least one example.")
    pixel_values = torch.stack([example["pixel_values"] for example in examples])
    batch = {"pixel_values": pixel_values.to(memory_format=torch.contiguous_format).float()}
    if "class_labels" in examples[0]:
        batch["class_labels"] = torch.tensor([example["class_labels"] for example in examples], dtype=torch.long)
    return batch


def _is_readable(value) -> bool:
    """
    Whether PIL can decode an undecoded `datasets.Image` value to its last pixel: `verify()` (the format's checksums)
    and then a full `load()`, since `verify()` decodes nothing and a cut compressed stream passes it. An image above
    `PIL.Image.MAX_IMAGE_PIXELS` counts as unreadable (PIL's decompression-bomb guard: an error above twice the limit,
    a warning between, turned into an error here).
    """
    if not isinstance(value, dict) or (value.get("bytes") is None and not value.get("path")):
        return False  # a missing image (None) in a dataset column
    if value.get("bytes") is None and not os.path.isfile(value["path"]):
        return False  # gone, or a FIFO or device (opening one would block)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
            for check in ("verify", "load"):
                source = value["path"] if value.get("bytes") is None else io.BytesIO(value["bytes"])
                with PIL.Image.open(source) as image:
                    getattr(image, check)()
        return True
    except Exception:  # PIL raises many types for damaged files: UnidentifiedImageError, SyntaxError, OSError...
        return False


def drop_unreadable_images(dataset: datasets.Dataset, image_column: str, batch_size: int = 256):
    r"""
    The rows whose image PIL can decode, and the names of the others, checked once before training so that a damaged
    file never stops a run mid-way (a truncated stream, an empty file, a file that is not an image whatever its
    extension, a decompression bomb, a missing image).

    Args:
        dataset (`datasets.Dataset`): The images.
        image_column (`str`): Their column (a `datasets.Image` feature).
        batch_size (`int`, *optional*): Rows read at a time (the undecoded bytes of one batch are in memory).

    Returns:
        `Tuple[datasets.Dataset, List[str]]`: the readable rows, and the file names (or row numbers) dropped.
    """
    raw = dataset.select_columns([image_column]).cast_column(image_column, datasets.Image(decode=False))
    keep, dropped = [], []
    for start in range(0, len(raw), batch_size):
        for offset, value in enumerate(raw[start: start + batch_size][image_column]):
            index = start + offset
            if _is_readable(value):
                keep.append(index)
            else:
                path = value.get("path") if isinstance(value, dict) else None
                dropped.append(os.path.basename(path) if path else f"row {index}")
    return (dataset if not dropped else dataset.select(keep)), dropped
