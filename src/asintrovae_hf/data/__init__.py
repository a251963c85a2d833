"""
Training data: where the images come from ([`DataSource`]: the built-in datasets, a folder of images, a Hub or local
dataset; `sources.py`), the built-in datasets' arrays and fixed splits (`builtin.py`), and the images' columns,
transform, batches and damage check (`images.py`).

The sources and the built-in arrays import without `datasets` (the base install reads them for the training defaults);
the names of `images.py` load on first use, since it needs `datasets` (the `train` extra).
"""

import importlib

from .builtin import BUILTIN_DATASETS, BuiltinDataset, get_builtin_dataset, load_builtin_arrays, load_builtin_dataset
from .sources import (
    BuiltinSource,
    DataSource,
    DatasetSource,
    ImageFolderSource,
    card_source,
    data_source,
    load_digits_dataset,
    load_image_dataset,
)

_IMAGES = ("ImageTransform", "collate_fn", "drop_unreadable_images", "make_train_dataset", "resolve_class_column",
           "resolve_image_column")


def __getattr__(name: str):
    if name in _IMAGES:
        return getattr(importlib.import_module(".images", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BUILTIN_DATASETS",
    "BuiltinDataset",
    "BuiltinSource",
    "DataSource",
    "DatasetSource",
    "ImageFolderSource",
    "card_source",
    "data_source",
    "get_builtin_dataset",
    "load_builtin_arrays",
    "load_builtin_dataset",
    "load_digits_dataset",
    "load_image_dataset",
    *_IMAGES,
]
