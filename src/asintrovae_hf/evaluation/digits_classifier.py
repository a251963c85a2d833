"""A small CNN classifier of scikit-learn's handwritten digits, the feature network of the offline "digits FID".

The data follow the project's digits convention (the same as `asintrovae_hf.data.load_digits_dataset`): an 8x8 image
of values `v` in `[0, 16]` is the `uint8` image `round(v * 255 / 16)` (a PIL `"L"` image); a model trained at
resolution `R` sees it resized with `Image.resize((R, R), Image.BILINEAR)` and scaled to `[-1, 1]`
(`pixel / 255 * 2 - 1`). The classifier takes `B x 1 x H x W` tensors in `[-1, 1]` of any size (3-channel input is
averaged to one channel) and resizes them internally to 16x16 (`F.interpolate`, bilinear, antialiased), so its
features can compare models trained at different resolutions. It was trained on inputs at every resolution from 8 to
32 (`scripts/train_digits_classifier.py`); the shipped weights are `assets/digits_classifier.safetensors`, with the
held-out accuracy, seeds and split recorded in the safetensors header and in `assets/digits_classifier.json`.

The digits FID ([`digits_fid`]) is the Frechet distance between Gaussians fitted to the 96-d penultimate features of
two image sets. Its values are in this network's units, comparable only with each other, not with the Inception FID.
"""

import os
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.builtin import load_builtin_arrays
from ..errors import require
from ..json_io import loads
from .frechet import frechet_distance_from_features

DIGITS_MAX_VALUE = 16
CLASSIFIER_RESOLUTION = 16
FEATURE_DIM = 96
NUM_CLASSES = 10
ASSETS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
WEIGHTS_PATH = os.path.join(ASSETS_DIR, "digits_classifier.safetensors")
METADATA_PATH = os.path.join(ASSETS_DIR, "digits_classifier.json")
# The feature network of each built-in dataset, trained on its train split only (`scripts/train_digits_classifier.py
# --dataset NAME`): the held-out metrics of `evaluation/heldout.py` are computed in its feature space.
CLASSIFIER_WEIGHTS = {"digits": WEIGHTS_PATH, "mnist-5k": os.path.join(ASSETS_DIR, "mnist5k_classifier.safetensors")}
METADATA_KEY = "asintrovae_hf_metadata"


def load_digits_uint8() -> Tuple[np.ndarray, np.ndarray]:
    """
    scikit-learn's 1,797 digits under the project's convention ([`asintrovae_hf.builtin_datasets`], split `"all"`).

    Returns:
        `Tuple[np.ndarray, np.ndarray]`: `N x 8 x 8` `uint8` images `round(v * 255 / 16)` and `N` integer labels.
    """
    pixels, labels = load_builtin_arrays("digits", "all")
    return np.array(pixels), np.array(labels)


def digits_split(labels: np.ndarray, test_size: float = 0.2, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """
    A stratified train/held-out split (`sklearn.model_selection.train_test_split`); with the defaults, the fixed
    split of the built-in digits (`asintrovae_hf.builtin_datasets.split_indices("digits")`: 1,437 / 360).

    Args:
        labels (`np.ndarray`): The labels of [`load_digits_uint8`].
        test_size (`float`, defaults to 0.2): Held-out fraction.
        seed (`int`, defaults to 0): The split's `random_state`.

    Returns:
        `Tuple[np.ndarray, np.ndarray]`: sorted train and held-out indices.
    """
    require("sklearn", purpose="The digits split", extra="eval")
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    train, test = train_test_split(indices, test_size=test_size, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


def digits_to_tensor(pixels: np.ndarray, resolution: int = 8) -> torch.Tensor:
    """
    `N x 8 x 8` `uint8` digits -> `N x 1 x R x R` float tensor in `[-1, 1]`, resized as the project's data are.

    Args:
        pixels (`np.ndarray`): `uint8` images (any size; each is resized to `resolution`).
        resolution (`int`, defaults to 8): `R`; each image goes through PIL `resize((R, R), Image.BILINEAR)`.

    Returns:
        `torch.Tensor`: `pixel / 255 * 2 - 1`.
    """
    import PIL.Image

    pixels = np.asarray(pixels, dtype=np.uint8)
    out = np.empty((len(pixels), resolution, resolution), dtype=np.float32)
    for i, image in enumerate(pixels):
        pil = PIL.Image.fromarray(image).convert("L")
        if pil.size != (resolution, resolution):
            pil = pil.resize((resolution, resolution), PIL.Image.BILINEAR)
        out[i] = np.asarray(pil, dtype=np.float32)
    return torch.from_numpy(out / 255.0 * 2.0 - 1.0).unsqueeze(1)


class DigitsClassifier(nn.Module):
    """
    CNN for 10-class digits: two blocks of two 3x3 convs (32, then 64 channels; BatchNorm, ReLU) each followed by a
    2x2 max-pool, then a `64 (R/4)^2 -> 96` linear layer with ReLU (the features) and a 96 -> 10 linear head; inputs
    are resized to `R x R` first.

    Args:
        feature_dim (`int`, defaults to 96): Size of the penultimate layer.
        dropout (`float`, defaults to 0.3): Dropout before both linear layers (training only).
        resolution (`int`, defaults to 16): `R`, the size the classifier sees (16 for the digits, 28 for MNIST).
    """

    def __init__(self, feature_dim: int = FEATURE_DIM, dropout: float = 0.3, resolution: int = CLASSIFIER_RESOLUTION):
        super().__init__()
        self.resolution = resolution

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.conv = nn.Sequential(
            *block(1, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64), *block(64, 64), nn.MaxPool2d(2)
        )
        flat = 64 * (resolution // 4) ** 2
        self.fc = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(flat, feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, NUM_CLASSES))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """`B x C x H x W` in `[-1, 1]` (C = 1 or 3) -> `B x 1 x R x R`."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"Expected a B x 1 x H x W or B x 3 x H x W tensor, got shape {tuple(x.shape)}.")
        x = x.to(dtype=self.head[1].weight.dtype, device=self.head[1].weight.device)
        if x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True,
                              align_corners=False)
        return x

    def spatial_features(self, x: torch.Tensor) -> torch.Tensor:
        """`B x C x H x W` images in `[-1, 1]` -> `B x 64 (R/4)^2`: the last convolutional map, flattened."""
        return self.conv(self.prepare(x)).flatten(1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """`B x C x H x W` images in `[-1, 1]` -> `B x 96` penultimate features (after the ReLU)."""
        return self.fc(self.conv(self.prepare(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`B x C x H x W` images in `[-1, 1]` -> `B x 10` logits."""
        return self.head(self.features(x))


def read_digits_classifier_metadata(path: Optional[str] = None) -> Dict:
    """The training record stored in the safetensors header of `path` (default: the shipped weights)."""
    from safetensors import safe_open

    with safe_open(path or WEIGHTS_PATH, framework="pt") as f:
        header = f.metadata() or {}
    if METADATA_KEY not in header:
        return dict(header)
    return loads(header[METADATA_KEY], f"{path or WEIGHTS_PATH}: metadata {METADATA_KEY!r}", expect=dict)


def load_digits_classifier(
    device: Optional[Union[str, torch.device]] = None, path: Optional[str] = None
) -> DigitsClassifier:
    """
    The shipped digits classifier, in eval mode.

    Args:
        device (`str` or `torch.device`, *optional*): Where to put it (default: CPU).
        path (`str`, *optional*): Another safetensors file written by `scripts/train_digits_classifier.py`.

    Returns:
        [`DigitsClassifier`]: with its training record as the `metadata` attribute.
    """
    from safetensors.torch import load_file

    path = path or WEIGHTS_PATH
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No digits classifier weights at {path!r}; run scripts/train_digits_classifier.py.")
    metadata = read_digits_classifier_metadata(path)
    model = DigitsClassifier(feature_dim=int(metadata.get("feature_dim", FEATURE_DIM)),
                             resolution=int(metadata.get("resolution", CLASSIFIER_RESOLUTION)))
    model.load_state_dict(load_file(path))
    model.metadata = metadata
    return model.to(device or "cpu").eval()


@torch.no_grad()
def digits_features(
    images: torch.Tensor, classifier: Optional[DigitsClassifier] = None, batch_size: int = 512,
    value_range: Sequence[float] = (-1.0, 1.0),
) -> np.ndarray:
    """
    Penultimate features of a set of images.

    Args:
        images (`torch.Tensor`): `N x C x H x W` images with values in `value_range`.
        classifier ([`DigitsClassifier`], *optional*): Defaults to [`load_digits_classifier`].
        batch_size (`int`, defaults to 512): Images per forward pass.
        value_range (`Sequence[float]`, defaults to `(-1, 1)`): Range of `images`; `(0, 1)` for pipeline outputs.

    Returns:
        `np.ndarray`: `N x 96` float64 features.
    """
    classifier = classifier if classifier is not None else load_digits_classifier()
    was_training = classifier.training
    classifier.eval()
    lo, hi = float(value_range[0]), float(value_range[1])
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].float()
        batch = (batch - lo) / (hi - lo) * 2 - 1
        chunks.append(classifier.features(batch).double().cpu())
    classifier.train(was_training)
    return torch.cat(chunks).numpy()


def digits_fid(
    images_a: torch.Tensor, images_b: torch.Tensor, classifier: Optional[DigitsClassifier] = None,
    batch_size: int = 512, value_range: Sequence[float] = (-1.0, 1.0),
) -> float:
    """
    The digits FID: Frechet distance between the classifier features of two image sets (lower is closer).

    Args:
        images_a (`torch.Tensor`): `N x C x H x W` images (`N >= 2`), values in `value_range`, any size.
        images_b (`torch.Tensor`): `M x C x H' x W'` images (`M >= 2`).
        classifier ([`DigitsClassifier`], *optional*): Defaults to the shipped one.
        batch_size (`int`, defaults to 512): Images per forward pass.
        value_range (`Sequence[float]`, defaults to `(-1, 1)`): Range of both sets' values.

    Returns:
        `float`: the distance.
    """
    classifier = classifier if classifier is not None else load_digits_classifier()
    feats_a = digits_features(images_a, classifier, batch_size=batch_size, value_range=value_range)
    feats_b = digits_features(images_b, classifier, batch_size=batch_size, value_range=value_range)
    return frechet_distance_from_features(feats_a, feats_b)
