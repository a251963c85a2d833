"""The images of a training run: the training data (with `--validation_split`'s held-out rows carved off), the
validation images, and the loader with the step counts.
"""

import dataclasses
import logging
import math
import os
from typing import Any, Optional

from ..errors import require

require("accelerate", "datasets", "tqdm", purpose="Training")

import datasets  # noqa: E402
import PIL  # noqa: E402
import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402

from ..data import (  # noqa: E402
    ImageTransform,
    collate_fn,
    drop_unreadable_images,
    load_image_dataset,
    resolve_image_column,
)
from ..errors import UsageError, network_errors, one_line  # noqa: E402
from .config import DataConfig, TrainingConfig  # noqa: E402
from .validation import ValidationSet, build_validation_set, split_off_validation  # noqa: E402

logger = logging.getLogger("asintrovae_hf.training")


# What loading the data raises when the cause is the data or the network, not this code.
DATA_ERRORS = (ValueError, FileNotFoundError, PermissionError, ConnectionError, TimeoutError,
               datasets.exceptions.DatasetsError, PIL.UnidentifiedImageError)


@dataclasses.dataclass
class TrainingData:
    """The batches and how many steps they make."""

    loader: Any
    shuffle_generator: torch.Generator  # re-seeded each epoch, so a resumed run sees the same order
    num_images: int
    image_column: str
    num_classes: Optional[int]  # class-conditional runs: the classes of `--class_column`
    steps_per_epoch: int
    max_train_steps: int
    num_epochs: int


def load_training_data(data: DataConfig, validation_split: Optional[float] = None):
    """
    The dataset (its first `max_train_samples` images), its image column and, with `validation_split`, the held-out
    rows carved from it before `max_train_samples` (else `None`); an unusable source becomes a [`UsageError`] that
    names it.
    """
    try:
        data_source = data.source  # refuses both a dataset name and a folder
    except ValueError as err:
        raise UsageError(f"Cannot use the training data {data.dataset_name!r}: {err}") from None
    source = data_source.name
    try:
        dataset = load_image_dataset(data.dataset_name, data.train_data_dir, data.dataset_config_name, data.cache_dir)
        image_column = resolve_image_column(dataset, data.image_column)
    except DATA_ERRORS + network_errors() as err:
        hint = ""
        if isinstance(err, (ConnectionError, TimeoutError)) or isinstance(err, network_errors()):
            hint = (" Check the network connection (with HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1 only datasets "
                    "already in the cache load), or train from a local copy: --train_data_dir, or a folder written "
                    "by `save_to_disk` as --dataset_name.")
        raise UsageError(f"Cannot use the training data {source!r}: {one_line(err)}{hint}") from err
    if data_source.builtin is None:
        # every image is decoded once, now, so that a damaged one never stops the run (the built-in datasets are made
        # in memory and need no check)
        dataset, dropped = drop_unreadable_images(dataset, image_column)
        for name in dropped[:20]:
            logger.warning("Skipping %s in %s: PIL cannot read it.", name, source)
        if len(dropped) > 20:
            logger.warning("... and %d more unreadable files skipped.", len(dropped) - 20)
        if len(dataset) == 0:
            raise UsageError(f"No readable image in {source!r} ({len(dropped)} unreadable files).")
    held_out = None
    if validation_split is not None:
        try:
            dataset, held_out = split_off_validation(dataset, validation_split)
        except ValueError as err:
            raise UsageError(f"{err} (the training data {source!r})") from None
        logger.info("--validation_split %g: %d image(s) held out for validation, %d left to train on.",
                    validation_split, len(held_out), len(dataset))
    if data.max_train_samples is not None:
        dataset = dataset.select(range(min(data.max_train_samples, len(dataset))))
    return dataset, image_column, held_out


def load_validation_set(config: TrainingConfig, accelerator: Accelerator, held_out, image_column: str,
                         num_classes: Optional[int]) -> Optional[ValidationSet]:
    """`--validation_steps`: the held-out images (every process reads them, so that a bad folder stops them all; the
    classifier of a built-in dataset is loaded on the main process, the only one that validates)."""
    validation, data = config.validation, config.data
    if not validation.validation_steps:
        return None
    data_source = data.source
    builtin = data_source.builtin.name if data_source.builtin is not None else None
    column = image_column
    if data_source.heldout_split is not None:
        held_out = data_source.load(data_source.heldout_split)
        source = f"the {data_source.name} {data_source.heldout_split!r} split"
    elif validation.validation_data_dir is not None:
        folder = validation.validation_data_dir
        source = f"--validation_data_dir {folder!r}"
        if not os.path.isdir(folder):
            raise UsageError(f"Cannot use {source}: expected a folder of images, got no such folder.")
        try:
            held_out = load_image_dataset(None, folder, cache_dir=data.cache_dir)
            column = resolve_image_column(held_out, data.image_column)
        except DATA_ERRORS as err:
            raise UsageError(f"Cannot use {source}: {one_line(err)}") from err
        held_out, dropped = drop_unreadable_images(held_out, column)
        if len(held_out) == 0:
            raise UsageError(f"No readable image in {source} ({len(dropped)} unreadable files).")
        if data.class_column is not None and data.class_column not in held_out.column_names:
            raise UsageError(f"{source} has no column {data.class_column!r} (--class_column); its columns: "
                             f"{', '.join(held_out.column_names)}.")
    else:
        source = f"--validation_split {validation.validation_split}"
    transform = ImageTransform(config.model.resolution, config.model.num_channels, center_crop=True,
                               random_flip=False)
    vset = build_validation_set(held_out, column, transform, validation.num_validation_images, source, config.seed,
                                config.model.latent_dim, class_column=data.class_column, num_classes=num_classes,
                                builtin=builtin, with_classifier=accelerator.is_main_process)
    logger.info("Validating every %d steps on %d image(s) of %s%s.", validation.validation_steps, len(vset.images),
                source, " (with the classifier metrics)" if builtin else "")
    return vset


def make_training_data(config: TrainingConfig, accelerator: Accelerator, train_dataset, image_column: str,
                   num_classes: Optional[int]) -> TrainingData:
    """The loader and the step counts: steps per process and epoch once Accelerate shards the loader."""
    batch_size, accumulation = config.data.train_batch_size, config.optimization.gradient_accumulation_steps
    per_step = batch_size * accumulation * accelerator.num_processes
    if len(train_dataset) < per_step:
        raise UsageError(
            f"The dataset has {len(train_dataset)} images, fewer than one batch of {batch_size} x "
            f"{accumulation} accumulation step(s) x {accelerator.num_processes} process(es)."
        )
    # Shuffling uses its own generator, re-seeded each epoch, so a resumed run sees the same order.
    shuffle_generator = torch.Generator().manual_seed(config.seed)
    loader = torch.utils.data.DataLoader(
        train_dataset, batch_size=batch_size, shuffle=True, generator=shuffle_generator, collate_fn=collate_fn,
        num_workers=config.data.dataloader_num_workers, drop_last=True,
    )
    # With `drop_last` Accelerate drops the batches that do not fill a round over all processes (checked after
    # `prepare`); an epoch's leftover batches that do not fill a whole accumulation are skipped.
    steps_per_epoch = len(loader) // accelerator.num_processes // accumulation
    max_train_steps = config.optimization.max_train_steps or config.optimization.num_epochs * steps_per_epoch
    return TrainingData(loader=loader, shuffle_generator=shuffle_generator, num_images=len(train_dataset),
                        image_column=image_column, num_classes=num_classes, steps_per_epoch=steps_per_epoch,
                        max_train_steps=max_train_steps, num_epochs=math.ceil(max_train_steps / steps_per_epoch))

