"""The training loop behind `asintrovae-train` (`accelerate launch -m asintrovae_hf.commands.train`).

Shaped like diffusers' `train_unconditional.py`: Accelerate for devices, processes and mixed precision; diffusers'
`EMAModel` and `get_scheduler`; `accelerator.save_state` checkpoints (safe and crash-proof in `checkpointing.py`).
What is new here is the two-optimizer introspective update (`train_step.py`). [`train`] reads as set-up, resume, the
loop (batch -> objective and optimizer steps -> log and checkpoint) and finish. Everything here reads the frozen
[`TrainingConfig`] that `parse_args` built.
"""

import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import shlex
import socket
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from ..errors import require

require("accelerate", "datasets", "tqdm", purpose="Training")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import PIL  # noqa: E402
import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.utils import (  # noqa: E402
    DistributedDataParallelKwargs,
    InitProcessGroupKwargs,
    ProjectConfiguration,
    broadcast_object_list,
    gather_object,
    set_seed,
)
from diffusers.optimization import get_scheduler  # noqa: E402
from diffusers.training_utils import EMAModel  # noqa: E402
from diffusers.utils.torch_utils import is_compiled_module  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from .checkpointing import (  # noqa: E402
    TrainingState,
    compare_options,
    load_checkpoint,
    register_checkpoint_hooks,
    remove_partial_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from ..data import (  # noqa: E402
    ImageTransform,
    collate_fn,
    drop_unreadable_images,
    load_image_dataset,
    make_train_dataset,
    resolve_class_column,
    resolve_image_column,
)
from ..errors import EXPECTED_ERRORS, NonFiniteLossError, UsageError, network_errors, one_line  # noqa: E402
from ..hub import training_ignore_patterns  # noqa: E402
from .faults import (  # noqa: E402
    PREEMPTED_EXIT_CODE,
    LostRankError,
    OutputWriteError,
    Preempted,
    RunLock,
    StopSignals,
    describe_disk_error,
    describe_lost_ranks,
    is_collective_failure,
    is_disk_error,
    quiet_writer_threads,
    writing,
)
from .image_grids import images_to_grid, log_images, render_grids  # noqa: E402
from ..models.autoencoders import AsIntroVAEDecoder, AsIntroVAEEncoder, check_sample_size  # noqa: E402
from ..objectives.introspective import IntrospectiveObjective  # noqa: E402
from ..pipelines.pipeline_asintrovae import AsIntroVAEPipeline  # noqa: E402
from .precision import precision_warning  # noqa: E402
from .train_step import train_step  # noqa: E402
from .args import option_names, parse_args, report_to_error, scheduler_kwargs  # noqa: E402
from .config import DataConfig, ModelConfig, TrainingConfig  # noqa: E402
from .config_files import resolved_config, write_config  # noqa: E402
from .loss_log import LossBuffer  # noqa: E402
from .validation import (  # noqa: E402
    BestPipeline,
    ValidationSet,
    append_validation_record,
    build_validation_set,
    recover_best,
    split_off_validation,
    start_validation_log,
    validate,
)

logger = logging.getLogger("asintrovae_hf.training")

# What loading the data raises when the cause is the data or the network, not this code.
_DATA_ERRORS = (ValueError, FileNotFoundError, PermissionError, ConnectionError, TimeoutError,
                datasets.exceptions.DatasetsError, PIL.UnidentifiedImageError)


@dataclasses.dataclass
class Networks:
    """The encoder and decoder with their optimizers, learning-rate schedulers and the decoder's EMA."""

    encoder: torch.nn.Module  # prepared (DDP, compiled): what the loop steps
    decoder: torch.nn.Module
    bare_encoder: torch.nn.Module  # the modules inside the wrappers: grids and saving
    bare_decoder: torch.nn.Module
    opt_e: Any
    opt_d: Any
    sched_e: Any
    sched_d: Any
    ema: Optional[EMAModel]


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


@dataclasses.dataclass
class Grids:
    """The fixed inputs of the sample grids; class-conditional: the labels of the samples and of the real images."""

    real: torch.Tensor
    noise: torch.Tensor
    labels: Optional[tuple] = None


@dataclasses.dataclass
class Progress:
    """Where the run stands: the step (with the options, saved in checkpoints), the last checkpoint and losses."""

    state: TrainingState
    last_checkpoint: Optional[str] = None
    last_logged: Dict[str, float] = dataclasses.field(default_factory=dict)
    bar: Any = None


@dataclasses.dataclass
class TrainingRun:
    """
    Everything the loop works with, built by [`setup`]. `config` is the parsed one with what only the set-up can know
    filled in: the device's `channels_last` default and, with `--pretrained_model_name_or_path`, the model's shape.
    """

    config: TrainingConfig
    accelerator: Accelerator
    objective: IntrospectiveObjective
    networks: Networks
    data: TrainingData
    grids: Grids
    progress: Progress
    repo_id: Optional[str] = None
    stop: Optional[StopSignals] = None  # SIGTERM / SIGUSR1 received: checkpoint and exit after this step
    ranks: List[Dict] = dataclasses.field(default_factory=list)  # each process's pid and host (lost-rank errors)
    stop_group: Any = None  # the process group (on the CPU) that agrees on a stop; None: the default group
    validation: Optional[ValidationSet] = None  # --validation_steps: the held-out images
    best: Optional[BestPipeline] = None  # --keep_best_by: best/ (main process)
    validated_steps: set = dataclasses.field(default_factory=set)  # steps validation.jsonl already records


# ---- set-up ------------------------------------------------------------------------------------------------------

def _load_data(data: DataConfig, validation_split: Optional[float] = None):
    """
    The dataset (its first `max_train_samples` images), its image column and, with `validation_split`, the held-out
    rows carved from it before `max_train_samples` (else `None`); an unusable source becomes a [`UsageError`] that
    names it.
    """
    source = data.dataset_name or data.train_data_dir or "digits"
    try:
        dataset = load_image_dataset(data.dataset_name, data.train_data_dir, data.dataset_config_name, data.cache_dir)
        image_column = resolve_image_column(dataset, data.image_column)
    except _DATA_ERRORS + network_errors() as err:
        hint = ""
        if isinstance(err, (ConnectionError, TimeoutError)) or isinstance(err, network_errors()):
            hint = (" Check the network connection (with HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1 only datasets "
                    "already in the cache load), or train from a local copy: --train_data_dir, or a folder written "
                    "by `save_to_disk` as --dataset_name.")
        raise UsageError(f"Cannot use the training data {source!r}: {one_line(err)}{hint}") from err
    if data.builtin is None:
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


def _load_validation_set(config: TrainingConfig, accelerator: Accelerator, held_out, image_column: str,
                         num_classes: Optional[int]) -> Optional[ValidationSet]:
    """`--validation_steps`: the held-out images (every process reads them, so that a bad folder stops them all; the
    classifier of a built-in dataset is loaded on the main process, the only one that validates)."""
    validation, data = config.validation, config.data
    if not validation.validation_steps:
        return None
    builtin = data.builtin.name if data.builtin is not None else None
    column = image_column
    if builtin is not None:
        held_out, source = load_image_dataset(builtin, split="test"), f"the {builtin} 'test' split"
    elif validation.validation_data_dir is not None:
        folder = validation.validation_data_dir
        source = f"--validation_data_dir {folder!r}"
        if not os.path.isdir(folder):
            raise UsageError(f"Cannot use {source}: expected a folder of images, got no such folder.")
        try:
            held_out = load_image_dataset(None, folder, cache_dir=data.cache_dir)
            column = resolve_image_column(held_out, data.image_column)
        except _DATA_ERRORS as err:
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


def _check_trackers(report_to: str) -> None:
    """Accelerate silently drops a tracker whose package is missing: say so instead (also for `train(config)`)."""
    problem = report_to_error(report_to)
    if problem:
        raise UsageError(f"--report_to {problem}")


def _check_compile_backend(device: torch.device) -> None:
    """`torch.compile` on CPU (TorchInductor) builds C++ kernels: fail before training when no compiler works."""
    if device.type != "cpu":
        return
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        from torch._inductor.exc import InvalidCxxCompiler
    except ImportError:  # another torch layout: let torch.compile report problems itself
        return
    try:
        get_cpp_compiler()
    except InvalidCxxCompiler as err:
        raise UsageError(f"--compile on CPU needs a working C++ compiler for TorchInductor ({one_line(err)}). "
                         f"Install g++ (or point the CXX environment variable at a compiler), or drop --compile."
                         ) from None


def _make_output_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write-test")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as err:
        raise UsageError(f"Cannot write to the output folder {path!r}: {one_line(err)}.") from None


def _bare_module(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """
    The module inside the DDP / `torch.compile` wrappers, leaving the wrappers intact.

    The compile wrapper is removed first: `accelerator.unwrap_model` keeps it by default, and when Accelerate's own
    dynamo option (`accelerate launch --dynamo_backend ...`) compiled the prepared DDP model, that wrapper still runs
    DDP's forward, so the grids and the final save on the main process alone would wait for the other processes.
    """
    if is_compiled_module(model):
        model = model._orig_mod
    return accelerator.unwrap_model(model)


def _noise_seed(seed: int, stream: int, step: int) -> int:
    """The seed of noise stream `stream` (a micro-batch, numbered across processes) at `step`: these alone."""
    entropy = [seed & 0xFFFFFFFFFFFFFFFF, stream, step]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def _check_resolution(model: ModelConfig) -> None:
    try:
        check_sample_size(model.resolution, model.block_out_channels)
    except ValueError as err:
        raise ValueError(f"--resolution {model.resolution} cannot be used: {err}") from None


def build_models(config: TrainingConfig, num_class_embeds: Optional[int] = None) -> Tuple[Any, Any, ModelConfig]:
    """
    The encoder, the decoder and the model options they have: from `--pretrained_model_name_or_path` (whose
    configuration then replaces the model options), or new ones as the options describe (class-conditional with
    `num_class_embeds`). An unsupported `--resolution` fails here, before any data.
    """
    model = config.model
    if model.pretrained_model_name_or_path:
        name = model.pretrained_model_name_or_path
        try:
            pipe = AsIntroVAEPipeline.from_pretrained(name, cache_dir=config.data.cache_dir, token=config.hub.hub_token)
        except (OSError, ValueError) + network_errors() as err:
            raise UsageError(f"--pretrained_model_name_or_path {name!r} cannot be loaded: {one_line(err, 300)}"
                             ) from None
        encoder, decoder = pipe.encoder, pipe.decoder
        if not hasattr(encoder.config, "in_channels"):
            raise UsageError(f"--pretrained_model_name_or_path {name!r} holds vector models; the training script "
                             f"trains image models.")
        saved = decoder.config
        if getattr(saved, "num_class_embeds", None) != num_class_embeds:
            raise UsageError(f"--pretrained_model_name_or_path {name!r} has num_class_embeds="
                             f"{getattr(saved, 'num_class_embeds', None)}; this run needs {num_class_embeds} "
                             f"(--class_column {config.data.class_column}).")
        if saved.output_activation != ("sigmoid" if config.objective.loss_type == "bce" else None):
            logger.warning("The pretrained decoder's output activation is %s; --loss_type is %s.",
                           saved.output_activation, config.objective.loss_type)
        model = dataclasses.replace(model, resolution=saved.sample_size, latent_dim=saved.latent_dim,
                                    block_out_channels=tuple(saved.block_out_channels), num_channels=saved.out_channels)
        logger.info("Starting from %s: resolution %d, latent_dim %d, block_out_channels %s, %d channel(s).",
                    name, model.resolution, model.latent_dim, ",".join(map(str, model.block_out_channels)),
                    model.num_channels)
        return encoder.train(), decoder.train(), model
    _check_resolution(model)
    common = dict(sample_size=model.resolution, latent_dim=model.latent_dim,
                  block_out_channels=model.block_out_channels, num_class_embeds=num_class_embeds)
    encoder = AsIntroVAEEncoder(in_channels=model.num_channels, **common)
    decoder = AsIntroVAEDecoder(out_channels=model.num_channels,
                                output_activation="sigmoid" if config.objective.loss_type == "bce" else None, **common)
    return encoder, decoder, model


def _seeded_models(config: TrainingConfig, num_class_embeds: Optional[int] = None):
    """
    [`build_models`] right after the run's only `set_seed`, so that new networks start from the same weights whether
    they are built before the data (unconditional) or after it (class-conditional); the config comes back with the
    model options the networks have.
    """
    set_seed(config.seed)
    encoder, decoder, model = build_models(config, num_class_embeds)
    return encoder, decoder, dataclasses.replace(config, model=model)


def _check_batch_norm_batch(config: TrainingConfig) -> None:
    """BatchNorm in training mode needs more than one value per channel: refuse a 1x1 map of batches of one."""
    batch, resolution, blocks = config.data.train_batch_size, config.model.resolution, config.model.block_out_channels
    final = resolution // 2 ** len(blocks)
    if batch * final * final < 2:
        raise UsageError(
            f"--train_batch_size {batch} with --resolution {resolution} and {len(blocks)} blocks leaves BatchNorm "
            f"one value per channel (a {final}x{final} final feature map): use --train_batch_size 2 or more, or a "
            f"larger --resolution."
        )


# The options that may hold a local path.
_PATH_OPTIONS = ("output_dir", "train_data_dir", "cache_dir", "logging_dir", "dataset_name",
                 "pretrained_model_name_or_path", "resume_from_checkpoint", "validation_data_dir")


def public_options(config: TrainingConfig) -> Dict:
    """
    The options as flat values for trackers, checkpoints and the model card, in `--help`'s order: the Hub token left
    out, and local paths made portable (relative to the output folder when inside it, else their last component).
    """
    output_dir = os.path.abspath(config.output_dir)
    flat = config.options()
    out = {}
    for key in option_names():
        value = flat[key]
        if key == "hub_token":
            continue
        if isinstance(value, (tuple, list)):
            value = ",".join(map(str, value))
        elif isinstance(value, str) and key in _PATH_OPTIONS:
            value = _portable_path(value, output_dir)
        out[key] = value
    return out


def _portable_path(value: str, output_dir: str) -> str:
    looks_local = os.path.isabs(value) or value.startswith((".", "~")) or os.path.exists(value)
    if not looks_local:
        return value  # a Hub id, or a name such as "latest" or "logs"
    path = os.path.abspath(os.path.expanduser(value))
    if path == output_dir or path.startswith(output_dir + os.sep):
        return os.path.relpath(path, output_dir)
    return os.path.basename(os.path.normpath(path))


def _make_accelerator(config: TrainingConfig) -> Accelerator:
    """Accelerate with the run's precision, trackers and folders; logging; warnings about slow settings."""
    report_to = config.logging.report_to
    _check_trackers(report_to)
    try:
        accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=1,  # train_step accumulates itself: an iteration has two updates
            # DDP copies rank 0's BatchNorm statistics into the others at every forward; older torch (2.6 here;
            # 2.13 preserves the version counters) counts that copy as an in-place change and refuses the encoder
            # graph the decoder step reuses ("modified by an inplace operation"). Training uses batch statistics, the saved ones are rank 0's, and
            # `_sync_buffers` makes every replica equal at the end: the copies are not needed.
            # --ddp_timeout: a rank that stops answering ends the run within this bound (the backend's own is 30
            # minutes); one that dies is noticed at once (its connections close)
            kwargs_handlers=[
                DistributedDataParallelKwargs(broadcast_buffers=False),
                InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=config.checkpointing.ddp_timeout)),
            ],
            log_with=None if report_to == "none" else (report_to if report_to == "all" else report_to.split(",")),
            project_config=ProjectConfiguration(project_dir=config.output_dir,
                                                logging_dir=os.path.join(config.output_dir,
                                                                         config.logging.logging_dir)),
        )
    except ValueError as err:  # e.g. bf16 where the hardware has none
        raise UsageError(f"Cannot set up Accelerate with these options: {one_line(err)}") from err
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not accelerator.is_main_process:
        logging.getLogger().setLevel(logging.WARNING)
    if config.compile:
        _check_compile_backend(accelerator.device)
    slow_precision = precision_warning(accelerator.mixed_precision, accelerator.device)
    if slow_precision:
        logger.warning(slow_precision)
    return accelerator


def _hub_repo(config: TrainingConfig, accelerator: Accelerator) -> Optional[str]:
    """With `--push_to_hub`, the repository, created now (on the main process) so that a refusal comes first."""
    if not config.hub.push_to_hub:
        return None
    from ..hub import ensure_repo

    repo_id = config.hub.hub_model_id or os.path.basename(os.path.abspath(config.output_dir))
    if accelerator.is_main_process:
        repo_id = ensure_repo(repo_id, token=config.hub.hub_token, private=config.hub.hub_private_repo).repo_id
    return repo_id


def _lock_output_dir(accelerator: Accelerator, lock: Optional[RunLock]) -> None:
    """The main process takes the output folder's lock; every process stops with its holder's line if it cannot."""
    refusal = None
    if lock is not None and accelerator.is_main_process:
        try:
            lock.acquire()
        except UsageError as err:
            refusal = str(err)
    if accelerator.num_processes > 1:
        refusal = broadcast_object_list([refusal])[0]
    if refusal:
        raise UsageError(refusal)


def setup(config: TrainingConfig, lock: Optional[RunLock] = None) -> TrainingRun:
    """Accelerate, the output folder (locked), the networks, the data, optimizers, schedulers, EMA and checkpoint
    hooks."""
    accelerator = _make_accelerator(config)
    if config.channels_last is None:  # the default: where it was measured faster (see --channels_last)
        config = dataclasses.replace(config, channels_last=accelerator.device.type == "cpu")
    conditional = config.data.class_column is not None
    try:
        # new networks now, so that bad model options fail before any data is read; class-conditional ones once
        # the data has said how many classes there are
        if not conditional:
            encoder, decoder, config = _seeded_models(config)
        elif not config.model.pretrained_model_name_or_path:
            _check_resolution(config.model)
        objective = IntrospectiveObjective(config.objective)
    except ValueError as err:
        raise UsageError(str(err)) from err
    _check_batch_norm_batch(config)
    if accelerator.is_main_process:
        _make_output_dir(config.output_dir)
    _lock_output_dir(accelerator, lock)
    repo_id = _hub_repo(config, accelerator)

    dataset, image_column, held_out = _load_data(config.data, config.validation.validation_split)
    num_classes = None
    if conditional:  # class-conditional networks, with as many classes as the column has
        try:
            num_classes = resolve_class_column(dataset, config.data.class_column)
        except ValueError as err:
            raise UsageError(str(err)) from err
        encoder, decoder, config = _seeded_models(config, num_classes)
    transform = ImageTransform(config.model.resolution, config.model.num_channels,
                               center_crop=config.data.center_crop, random_flip=config.data.random_flip)
    train_dataset = make_train_dataset(dataset, image_column, transform, config.data.class_column)
    data = _training_data(config, accelerator, train_dataset, image_column, num_classes)
    num_grid_real = min(config.logging.num_grid_images // 2, len(train_dataset))
    grid_batch = collate_fn([train_dataset[i] for i in range(num_grid_real)])
    networks = _prepare_networks(config, accelerator, encoder, decoder, data)
    validation = _load_validation_set(config, accelerator, held_out, image_column, num_classes)

    state = TrainingState(0, _resume_options(config, accelerator))
    register_checkpoint_hooks(accelerator, (type(networks.bare_encoder), type(networks.bare_decoder)), state,
                              networks.ema)
    num_grid_images = config.logging.num_grid_images
    grids = Grids(
        real=grid_batch["pixel_values"].to(accelerator.device),
        noise=torch.randn(num_grid_images, config.model.latent_dim,
                          generator=torch.Generator().manual_seed(config.seed)),
        # class-conditional grids: the samples cycle through the classes, the real images keep their own
        labels=None if num_classes is None else (torch.arange(num_grid_images) % num_classes,
                                                 grid_batch["class_labels"].to(accelerator.device)),
    )
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    ranks = gather_object([me]) if accelerator.num_processes > 1 else [me]
    return TrainingRun(config=config, accelerator=accelerator, objective=objective, networks=networks, data=data,
                       grids=grids, progress=Progress(state), repo_id=repo_id, ranks=ranks,
                       stop_group=_stop_group(config, accelerator), validation=validation)


def _stop_group(config: TrainingConfig, accelerator: Accelerator):
    """
    The group in which the processes agree, after each step, on a stop: the default group when it is already gloo
    (CPU), else a gloo group of the same processes, so that the check never waits for the GPU (the loop otherwise
    reads values from the device only every `--logging_steps`).
    """
    if accelerator.num_processes == 1 or torch.distributed.get_backend() == "gloo":
        return None
    return torch.distributed.new_group(backend="gloo",
                                       timeout=datetime.timedelta(seconds=config.checkpointing.ddp_timeout))


def _training_data(config: TrainingConfig, accelerator: Accelerator, train_dataset, image_column: str,
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


def _prepare_networks(config: TrainingConfig, accelerator: Accelerator, encoder, decoder,
                      data: TrainingData) -> Networks:
    """Optimizers and schedulers, the memory layout, `accelerator.prepare` (which also shards `data.loader`),
    `--compile` and the EMA."""
    optimization = config.optimization

    def adam(module, lr):
        return torch.optim.Adam(module.parameters(), lr=lr, betas=(optimization.adam_beta1, optimization.adam_beta2),
                                eps=optimization.adam_epsilon, weight_decay=optimization.adam_weight_decay)

    opt_e, opt_d = adam(encoder, optimization.encoder_learning_rate), adam(decoder, optimization.decoder_learning_rate)
    # A prepared scheduler steps once per process at each step (Accelerate's convention), hence the factors.
    kwargs = scheduler_kwargs(dataclasses.asdict(optimization), data.max_train_steps, accelerator.num_processes)
    sched_e, sched_d = (get_scheduler(optimization.lr_scheduler, opt, **kwargs) for opt in (opt_e, opt_d))
    if config.model.gradient_checkpointing:
        encoder.enable_gradient_checkpointing()
        decoder.enable_gradient_checkpointing()
    if config.channels_last:
        encoder.to(memory_format=torch.channels_last)
        decoder.to(memory_format=torch.channels_last)
    batches_per_epoch = len(data.loader) // accelerator.num_processes
    encoder, decoder, opt_e, opt_d, data.loader, sched_e, sched_d = accelerator.prepare(
        encoder, decoder, opt_e, opt_d, data.loader, sched_e, sched_d
    )
    if len(data.loader) != batches_per_epoch:
        raise RuntimeError(f"Expected {batches_per_epoch} batches per process and epoch, the prepared loader has "
                           f"{len(data.loader)}: the step counts (schedulers, epochs, resume) would be wrong.")
    # Grids and the final save use the bare modules: a DDP forward on the main process alone would hang.
    bare_encoder, bare_decoder = _bare_module(accelerator, encoder), _bare_module(accelerator, decoder)
    if config.compile:
        if is_compiled_module(encoder):  # Accelerate's dynamo option (`accelerate launch --dynamo_backend`) did it
            logger.info("--compile: the networks are already compiled by Accelerate's dynamo option.")
        else:
            logger.info("--compile: the first step compiles the encoder and decoder (TorchInductor; on CPU this "
                        "builds C++ kernels and can take a minute; they are cached for later runs).")
            try:
                encoder, decoder = torch.compile(encoder), torch.compile(decoder)
            except RuntimeError as err:  # e.g. a Python version this torch cannot compile for
                raise UsageError(f"--compile: torch.compile is not available here: {one_line(err)}") from err
    ema = None
    if config.ema.use_ema:
        ema = EMAModel(bare_decoder.parameters(), decay=config.ema.ema_max_decay, use_ema_warmup=config.ema.ema_warmup,
                       inv_gamma=config.ema.ema_inv_gamma, power=config.ema.ema_power, model_cls=type(bare_decoder),
                       model_config=bare_decoder.config)
        ema.to(accelerator.device)
    return Networks(encoder=encoder, decoder=decoder, bare_encoder=bare_encoder, bare_decoder=bare_decoder,
                    opt_e=opt_e, opt_d=opt_d, sched_e=sched_e, sched_d=sched_d, ema=ema)


def _resume_options(config: TrainingConfig, accelerator: Accelerator) -> Dict:
    return {**public_options(config), "mixed_precision": accelerator.mixed_precision,
            "world_size": accelerator.num_processes}


# ---- resume ------------------------------------------------------------------------------------------------------

def resume(run: TrainingRun) -> None:
    """
    Load the checkpoint `--resume_from_checkpoint` names, if any. Options that differ from the checkpoint's run are
    applied (learning rates, Adam and EMA settings are written into the restored states) and logged; options a
    resume cannot honour (the networks' shapes, the data stream) are refused with the flag named.
    """
    config, accelerator, progress = run.config, run.accelerator, run.progress
    requested = config.checkpointing.resume_from_checkpoint
    path = resolve_checkpoint(requested, config.output_dir)
    if requested is not None and path is None:
        logger.info("No checkpoint in %s; starting a new run.", config.output_dir)
    if path is None:
        return
    current = progress.state.options
    saved = TrainingState.load(path)
    max_train_steps = run.data.max_train_steps
    if saved.global_step > max_train_steps:
        raise UsageError(f"Cannot resume from {path!r}: it is at step {saved.global_step}, beyond this run's "
                         f"{max_train_steps} steps (--max_train_steps / --num_epochs); expected a checkpoint at "
                         f"step {max_train_steps} or earlier.")
    refused, applied = compare_options(saved.options, current)
    if refused:
        flag = lambda name: "the number of processes" if name == "world_size" else f"--{name}"  # noqa: E731
        raise UsageError(f"Cannot resume from {path!r}: " + "; ".join(
            f"{flag(name)} was {old!r} in that run and is {new!r} now" for name, old, new in refused
        ) + ". Resume with the same values, or start a new run in another --output_dir.")
    load_checkpoint(accelerator, path)
    if run.networks.ema is not None:  # the averages go back to the device they are updated on
        run.networks.ema.to(accelerator.device)
    for name, old, new in applied:
        logger.info("Resuming with --%s %s (the checkpoint's run had %s).", name, new, old)
    _apply_optimizer_options(run)
    progress.state.options = current
    progress.last_checkpoint = path
    logger.info("Resumed from %s at step %d.", path, progress.state.global_step)


def _apply_optimizer_options(run: TrainingRun) -> None:
    """Write the current learning rates, Adam and EMA settings into the restored optimizer, scheduler and EMA."""
    optimization, ema_config, networks = run.config.optimization, run.config.ema, run.networks
    for opt, sched, lr in ((networks.opt_e, networks.sched_e, optimization.encoder_learning_rate),
                           (networks.opt_d, networks.sched_d, optimization.decoder_learning_rate)):
        inner = getattr(sched, "scheduler", sched)
        inner.base_lrs = [lr for _ in inner.base_lrs]
        for group, factor in zip(opt.param_groups, inner.lr_lambdas):
            group.update(initial_lr=lr, lr=lr * factor(inner.last_epoch),
                         betas=(optimization.adam_beta1, optimization.adam_beta2), eps=optimization.adam_epsilon,
                         weight_decay=optimization.adam_weight_decay)
    if networks.ema is not None:
        networks.ema.decay, networks.ema.use_ema_warmup = ema_config.ema_max_decay, ema_config.ema_warmup
        networks.ema.inv_gamma, networks.ema.power = ema_config.ema_inv_gamma, ema_config.ema_power


# ---- the loop ----------------------------------------------------------------------------------------------------

def _step_batches(run: TrainingRun):
    """
    The batches of each optimizer step to come, in order (groups of `--gradient_accumulation_steps`): epochs from the
    one the resumed step falls in, each shuffled by its own seed, the steps already done skipped.
    """
    accumulation, data = run.config.optimization.gradient_accumulation_steps, run.data
    first_epoch, skip_steps = divmod(run.progress.state.global_step, data.steps_per_epoch)
    for epoch in range(first_epoch, data.num_epochs):
        data.shuffle_generator.manual_seed(run.config.seed + epoch)
        loader = data.loader
        if epoch == first_epoch and skip_steps:
            loader = run.accelerator.skip_first_batches(data.loader, skip_steps * accumulation)
        group = []
        for batch in loader:
            x = batch["pixel_values"]
            x = x.contiguous(memory_format=torch.channels_last) if run.config.channels_last else x
            group.append((x, batch.get("class_labels")))
            if len(group) == accumulation:
                yield group
                group = []


def _read_losses(run: TrainingRun, losses: LossBuffer) -> None:
    """Read the buffered losses on the host: NaN check on every process, then log."""
    if not len(losses):
        return
    accelerator, config, progress = run.accelerator, run.config, run.progress
    bad, means = losses.flush()
    any_bad = accelerator.reduce(torch.tensor(float(bad is not None), device=accelerator.device), "sum")
    if any_bad.item() > 0:
        where = (f"at step {bad[0]}: " + ", ".join(f"{k}={v:.4g}" for k, v in bad[1].items())) if bad else \
            "on another process"
        raise NonFiniteLossError(
            f"Training stopped: non-finite loss {where}. The last good checkpoint is "
            f"{progress.last_checkpoint or 'none (no checkpoint was written yet)'}; nothing after it was saved. "
            f"Hint: lower --beta_neg (now {config.objective.beta_neg}) or the learning rate (now "
            f"{config.optimization.learning_rate:g}), set --max_grad_norm, or train in full precision "
            f"(--mixed_precision no), then resume with --resume_from_checkpoint latest (the new values are applied)."
        )
    means["lr_encoder"] = run.networks.sched_e.get_last_lr()[0]
    means["lr_decoder"] = run.networks.sched_d.get_last_lr()[0]
    with writing("the tracker logs", config.output_dir, progress.last_checkpoint):
        accelerator.log(means, step=progress.state.global_step)
    shown = ("loss_encoder", "loss_decoder", "loss_rec", "kl_real", "dis_encoder", "c", "loss")
    progress.bar.set_postfix({k: f"{means[k]:.4g}" for k in shown if k in means}, refresh=False)
    progress.last_logged = means


def _save_grids(run: TrainingRun, step: int) -> None:
    grids = _grids_with_ema(run)
    with writing(f"the sample grids of step {step}", run.config.output_dir, run.progress.last_checkpoint):
        for name, grid in grids.items():
            grid.save(os.path.join(run.config.output_dir, f"{name}-{step:06d}.png"))
    with writing("the tracker logs", run.config.output_dir, run.progress.last_checkpoint):
        log_images(run.accelerator, grids, step)


def _measures_gradients(config: TrainingConfig, step: int, phase) -> bool:
    """Whether this step measures the encoder's gradient parts (`--log_gradient_norms_steps`, adversarial steps)."""
    every = config.logging.log_gradient_norms_steps
    return bool(every) and not phase.vae and step % every == 0


def _record_gradient_norms(run: TrainingRun, step: int, norms: Dict[str, float]) -> None:
    """Log the gradient norms and append them, one JSON line per measured step, to `gradient_norms.jsonl`."""
    with writing("the tracker logs", run.config.output_dir, run.progress.last_checkpoint):
        run.accelerator.log(norms, step=step)
    if run.accelerator.is_main_process:
        with writing("the log gradient_norms.jsonl", run.config.output_dir, run.progress.last_checkpoint):
            with open(os.path.join(run.config.output_dir, "gradient_norms.jsonl"), "a") as f:
                f.write(json.dumps({"step": step, **norms}) + "\n")


def _optimizer_step(run: TrainingRun, batches: List, noise_generators) -> Dict[str, torch.Tensor]:
    """One iteration over `(images, labels)` batches: the encoder and decoder updates (`train_step`), the
    schedulers and the EMA."""
    config, accelerator, networks = run.config, run.accelerator, run.networks
    step = run.progress.state.global_step
    # Re-seeded from (seed, micro-batch, step), micro-batches numbered across processes: a resumed run draws the
    # same noise as an uninterrupted one, and k processes the same as one process accumulating k batches.
    for k, generator in enumerate(noise_generators):
        generator.manual_seed(_noise_seed(config.seed, accelerator.process_index * len(noise_generators) + k, step))
    phase = run.objective.phase(step, run.data.max_train_steps)
    single = len(batches) == 1
    images, labels = [x for x, _ in batches], [y for _, y in batches]
    labels = None if labels[0] is None else (labels[0] if single else labels)
    terms = train_step(run.objective, networks.encoder, networks.decoder, networks.opt_e, networks.opt_d,
                       images[0] if single else images, config.model.latent_dim, c=phase.c, vae_step=phase.vae,
                       backward=accelerator.backward, generator=noise_generators[0] if single else None,
                       micro_batch_generators=None if single else noise_generators,
                       max_grad_norm=config.optimization.max_grad_norm, clip_grad_norm=accelerator.clip_grad_norm_,
                       labels=labels, measure_gradients=_measures_gradients(config, step, phase))
    if "grad_norm_adversarial" in terms:
        _record_gradient_norms(run, step, {k: float(terms.pop(k)) for k in ("grad_norm_adversarial", "grad_norm_vae")})
    networks.sched_e.step()
    networks.sched_d.step()
    if networks.ema is not None:
        networks.ema.step(networks.bare_decoder.parameters())
    run.progress.state.global_step += 1
    return terms


def _stop_requested(run: TrainingRun) -> bool:
    """Whether any process received SIGTERM / SIGUSR1: all of them stop after the same step."""
    local = run.stop is not None and run.stop.received is not None
    if run.accelerator.num_processes == 1:
        return local
    flag = torch.tensor([float(local)])  # on the CPU, through a gloo group: no wait for the device
    torch.distributed.all_reduce(flag, group=run.stop_group)
    return flag.item() > 0


def train_loop(run: TrainingRun) -> None:
    """Optimizer steps until `max_train_steps`: batches -> encoder and decoder updates -> log, checkpoint, grids."""
    config, accelerator, progress = run.config, run.accelerator, run.progress
    max_train_steps, every = run.data.max_train_steps, config.logging
    noise_generators = [torch.Generator(device=accelerator.device)
                        for _ in range(config.optimization.gradient_accumulation_steps)]
    losses = LossBuffer()
    progress.bar = tqdm(total=max_train_steps, initial=progress.state.global_step, desc="Steps", dynamic_ncols=True,
                        disable=not accelerator.is_main_process)
    logger.info(
        "Training %s: %d images, %d process(es) x batch %d x %d accumulation, %d steps (%d per epoch), device %s, "
        "mixed precision %s", config.objective.objective, run.data.num_images, accelerator.num_processes,
        config.data.train_batch_size, config.optimization.gradient_accumulation_steps, max_train_steps,
        run.data.steps_per_epoch, accelerator.device, accelerator.mixed_precision,
    )
    run.networks.encoder.train(), run.networks.decoder.train()
    try:
        for batches in _step_batches(run):
            if progress.state.global_step >= max_train_steps:
                break
            losses.add(progress.state.global_step + 1, _optimizer_step(run, batches, noise_generators))
            progress.bar.update(1)
            step, last = progress.state.global_step, progress.state.global_step >= max_train_steps
            if step % every.logging_steps == 0 or last:
                _read_losses(run, losses)
            checkpointed = step % config.checkpointing.checkpointing_steps == 0 and not last
            if checkpointed:
                _read_losses(run, losses)  # never checkpoint past a NaN
                progress.last_checkpoint = save_checkpoint(accelerator, config.output_dir, step,
                                                           config.checkpointing.checkpoints_total_limit)
            if step % every.save_images_steps == 0 and accelerator.is_main_process:
                _save_grids(run, step)
            if _validates(config, step, last):
                _validate(run, step)
            if not last and _stop_requested(run):
                _read_losses(run, losses)
                if not checkpointed:
                    progress.last_checkpoint = save_checkpoint(accelerator, config.output_dir, step,
                                                               config.checkpointing.checkpoints_total_limit)
                raise Preempted(run.stop.received or "a signal on another process", step, progress.last_checkpoint)
        _read_losses(run, losses)
    finally:
        progress.bar.close()  # ends the bar's line, so an error prints on a line of its own


# ---- validation --------------------------------------------------------------------------------------------------

def _validates(config: TrainingConfig, step: int, last: bool) -> bool:
    every = config.validation.validation_steps
    return bool(every) and (step % every == 0 or last)


def _start_validation(run: TrainingRun) -> None:
    """After the resume, on the main process: validation.jsonl keeps the steps up to the resumed one; best/ is
    recovered from an interrupted swap and its value read back."""
    config, step = run.config, run.progress.state.global_step
    if not config.validation.validation_steps or not run.accelerator.is_main_process:
        return
    with writing("the log validation.jsonl", config.output_dir, run.progress.last_checkpoint):
        run.validated_steps = start_validation_log(config.output_dir, step)
        if config.validation.keep_best_by:
            recover_best(config.output_dir)
            run.best = BestPipeline(config.output_dir, config.validation.keep_best_by, step)


def _validate(run: TrainingRun, step: int) -> None:
    """Measure the held-out metrics (main process; the others wait), log them, append them to validation.jsonl and
    keep best/; the networks hold their training weights and modes again afterwards."""
    config, accelerator, networks = run.config, run.accelerator, run.networks
    if accelerator.is_main_process and step not in run.validated_steps:
        started = time.perf_counter()
        with ema_weights(networks.ema, networks.bare_decoder):
            metrics = validate(networks.bare_encoder, networks.bare_decoder, run.validation, config.seed,
                               accelerator.device)
            saved_best = False
            if run.best is not None and run.best.improves(metrics[run.best.metric]):
                with writing(f"the best pipeline of step {step}", config.output_dir, run.progress.last_checkpoint):
                    run.best.save(step, metrics, lambda folder: AsIntroVAEPipeline(
                        encoder=networks.bare_encoder, decoder=networks.bare_decoder).save_pretrained(folder))
                saved_best = True
        seconds = time.perf_counter() - started
        record = {"step": step, "metrics": metrics, "seconds": round(seconds, 3),
                  "num_images": len(run.validation.images)}
        if run.best is not None:
            record["best"] = {"metric": run.best.metric, "value": run.best.value, "step": run.best.step,
                              "updated": saved_best}
        with writing("the log validation.jsonl", config.output_dir, run.progress.last_checkpoint):
            append_validation_record(config.output_dir, record)
        run.validated_steps.add(step)
        with writing("the tracker logs", config.output_dir, run.progress.last_checkpoint):
            accelerator.log({f"validation/{k}": v for k, v in metrics.items()}, step=step)
        logger.info("Validation at step %d (%.1f s): %s", step, seconds,
                    ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    if accelerator.num_processes > 1:
        accelerator.wait_for_everyone()


# ---- finish ------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def ema_weights(ema: Optional[EMAModel], decoder: torch.nn.Module):
    """Within the block the decoder holds the EMA weights (the ones that get saved); a no-op without EMA."""
    if ema is None:
        yield
        return
    ema.store(decoder.parameters())
    ema.copy_to(decoder.parameters())
    try:
        yield
    finally:
        ema.restore(decoder.parameters())


def _grids_with_ema(run: TrainingRun):
    """Grids drawn with the EMA decoder weights when EMA is on (the weights that will be saved)."""
    networks, grids = run.networks, run.grids
    with ema_weights(networks.ema, networks.bare_decoder):
        return render_grids(networks.bare_encoder, networks.bare_decoder, grids.real, grids.noise, labels=grids.labels)


@torch.no_grad()
def _sync_buffers(run: TrainingRun) -> None:
    """DDP keeps the weights equal but each process's last forward updated its own BatchNorm statistics: take the
    main process's, the ones that are saved, so that every replica ends identical."""
    if run.accelerator.num_processes > 1:
        for module in (run.networks.bare_encoder, run.networks.bare_decoder):
            for buffer in module.buffers():
                torch.distributed.broadcast(buffer, src=0)


@torch.no_grad()
def replica_checksums(accelerator: Accelerator, encoder, decoder) -> List[Dict[str, List[float]]]:
    """Per process, `{tensor name: [sum, sum of squares]}` for every weight and buffer of both networks."""
    named = [(f"{part}.{name}", t) for part, module in (("encoder", encoder), ("decoder", decoder))
             for name, t in list(module.named_parameters()) + list(module.named_buffers())]
    local = torch.stack([torch.stack([t.double().sum(), t.double().pow(2).sum()]) for _, t in named])
    gathered = accelerator.gather(local[None].to(accelerator.device)).cpu()
    return [{name: row.tolist() for (name, _), row in zip(named, rank)} for rank in gathered]


def finish(run: TrainingRun, started: float) -> Dict:
    """The final checkpoint; on the main process the pipeline (EMA decoder), grids, model card and a reload check."""
    config, accelerator, progress = run.config, run.accelerator, run.progress
    _sync_buffers(run)
    final = os.path.join(config.output_dir, f"checkpoint-{progress.state.global_step}")
    if progress.last_checkpoint is None or os.path.normpath(progress.last_checkpoint) != os.path.normpath(final):
        progress.last_checkpoint = save_checkpoint(accelerator, config.output_dir, progress.state.global_step,
                                                   config.checkpointing.checkpoints_total_limit)
    # else: resumed from the final step's checkpoint (a run that stopped while writing its outputs): kept as it is
    summary = {
        "global_step": progress.state.global_step,
        "world_size": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "mixed_precision": accelerator.mixed_precision,
        "final_losses": progress.last_logged,
        "replica_checksums": replica_checksums(accelerator, run.networks.bare_encoder, run.networks.bare_decoder),
        "seconds": round(time.time() - started, 1),
        "last_checkpoint": os.path.relpath(progress.last_checkpoint, config.output_dir),
        # `--config train_summary.json` replays the run; uploaded with the model, so local paths are made portable
        # as in the model card (OUTPUT_DIR/config.yaml keeps them as given)
        "config": _portable_options(resolved_options(run), config.output_dir),
    }
    if accelerator.is_main_process:
        summary.update(_save_outputs(run))
        with writing("the log train_summary.json", config.output_dir, progress.last_checkpoint):
            with open(os.path.join(config.output_dir, "train_summary.json"), "w") as f:
                json.dump(summary, f, indent=2)
    # Shut down in an order that cannot hang. DDP's reducers hold the process group: if the last of them goes at
    # interpreter exit, the group's destructor joins Gloo's worker threads while holding the GIL, and a worker that
    # needs the GIL to free a finished collective never ends (the 2-rank CPU run hung so at exit, now and then). So
    # the DDP wrappers go first, and the group then goes with `destroy_process_group` (`end_training`).
    accelerator.wait_for_everyone()
    run.networks.encoder = run.networks.decoder = None
    accelerator.free_memory()
    with writing("the tracker logs", config.output_dir, progress.last_checkpoint):
        accelerator.end_training()  # flushes and closes the trackers' files
    if config.hub.push_to_hub and accelerator.is_main_process:
        summary["hub_url"] = _push(config, run.repo_id)
    return summary


def _push(config: TrainingConfig, repo_id: str) -> str:
    """Upload the output folder; a failure says where the complete run is and how to retry only the upload."""
    from ..hub import HubError, push_to_hub, retry_command

    hub, output_dir, logging_dir = config.hub, config.output_dir, config.logging.logging_dir
    try:
        return str(push_to_hub(output_dir, repo_id, token=hub.hub_token, private=hub.hub_private_repo,
                               ignore_patterns=training_ignore_patterns(output_dir, logging_dir)))
    except (HubError, FileNotFoundError) as err:
        command = retry_command(output_dir, repo_id, hub.hub_private_repo, logging_dir)
        raise HubError(f"{one_line(err, 600)} The trained pipeline is saved in {output_dir!r} and intact (the upload "
                       f"changes nothing in it); retry only the upload with: {command}") from None


def _card(run: TrainingRun, config: TrainingConfig) -> None:
    from ..hub import create_model_card

    hyperparameters = public_options(config)
    hyperparameters.update(image_column=run.data.image_column, world_size=run.accelerator.num_processes)
    dataset = config.data.dataset_name or ("imagefolder" if config.data.train_data_dir else "digits")
    create_model_card(
        config.output_dir,
        repo_id=run.repo_id or config.hub.hub_model_id or os.path.basename(os.path.abspath(config.output_dir)),
        hyperparameters=hyperparameters,
        final_losses=run.progress.last_logged,
        dataset_name=_portable_path(dataset, os.path.abspath(config.output_dir)) if dataset else dataset,
        sample_grid="samples.png",
        objective=config.objective.objective,
    )


def _save_outputs(run: TrainingRun) -> Dict:
    """Save the pipeline (EMA decoder when EMA is on), the grids and the model card; reload to check."""
    config, networks, last = run.config, run.networks, run.progress.last_checkpoint
    with ema_weights(networks.ema, networks.bare_decoder), writing("the final pipeline", config.output_dir, last):
        AsIntroVAEPipeline(encoder=networks.bare_encoder, decoder=networks.bare_decoder).save_pretrained(
            config.output_dir)
    with writing("the sample grids", config.output_dir, last):
        for name, grid in _grids_with_ema(run).items():
            grid.save(os.path.join(config.output_dir, f"{name}.png"))
    with writing("the model card", config.output_dir, last):
        _card(run, config)
    # The user's first step is `from_pretrained`: do it once here so a broken save fails the run, not them.
    reloaded = AsIntroVAEPipeline.from_pretrained(config.output_dir)
    reloaded.to(run.accelerator.device)
    count = min(16, config.logging.num_grid_images)
    num_classes = run.data.num_classes
    labels = None if num_classes is None else (torch.arange(count) % num_classes).tolist()
    check = reloaded(batch_size=count, generator=torch.Generator().manual_seed(config.seed), output_type="pt",
                     class_labels=labels).images
    with writing("the sample grids", config.output_dir, last):
        images_to_grid(check).save(os.path.join(config.output_dir, "samples_from_pretrained.png"))
    return {"pipeline": ".", "samples": "samples.png", "reconstructions": "reconstructions.png",
            "samples_from_pretrained": "samples_from_pretrained.png"}


def resolved_options(run: TrainingRun) -> Dict:
    """
    The run's options as `--config` reads them back: every default resolved, with what only the set-up knew (the
    device's `channels_last`, Accelerate's mixed precision, a pretrained model's shape); the Hub token left out. A
    network's learning rate equal to `learning_rate` is written as null (it follows `learning_rate`), so that
    `--config config.yaml --learning_rate X` changes both, as it does without a file.
    """
    options = {**run.config.options(), "mixed_precision": run.accelerator.mixed_precision}
    for name in ("encoder_learning_rate", "decoder_learning_rate"):
        if options[name] == options["learning_rate"]:
            options[name] = None
    return resolved_config(options)


def _portable_options(options: Dict, output_dir: str) -> Dict:
    """`options` with the local paths made portable, as [`public_options`] does for the model card."""
    root = os.path.abspath(output_dir)
    return {key: _portable_path(value, root) if isinstance(value, str) and key in _PATH_OPTIONS else value
            for key, value in options.items()}


def _write_resolved_config(run: TrainingRun) -> None:
    """
    `OUTPUT_DIR/config.yaml`. It is a record, not training state: on a full disk (or a denied write) the run warns in
    one line and goes on, and stops at its first checkpoint or output that cannot be written, with the last good
    checkpoint named, as for any other write.
    """
    path = os.path.join(run.config.output_dir, "config.yaml")
    try:
        _write_config_file(run, path)
    except Exception as err:
        if not is_disk_error(err):
            raise
        logger.warning("Cannot write the resolved configuration %s (%s); training goes on without it.", path,
                       describe_disk_error(err, run.config.output_dir))


def _write_config_file(run: TrainingRun, path: str) -> None:
    write_config(resolved_options(run), path, header=(
        "The resolved configuration of this run, written by asintrovae-train: every option with the value it had.\n"
        f"Replay it with: asintrovae-train --config {path} (flags given as well override it)."))


def train(config: TrainingConfig) -> Dict:
    """
    Train with the given config (e.g. from `parse_args`) and save the pipeline to `config.output_dir`.

    Returns:
        `dict`: A summary: steps, world size, final loss terms, output paths (relative to the output folder), timings.
    """
    started = time.time()
    lock = RunLock(config.output_dir)
    with StopSignals() as stop, quiet_writer_threads():
        try:
            run = setup(config, lock)
            run.stop = stop
            try:
                if run.accelerator.is_main_process:
                    remove_partial_checkpoints(run.config.output_dir)
                    _write_resolved_config(run)
                    with writing("the tracker logs", run.config.output_dir, None):
                        run.accelerator.init_trackers(run.config.logging.tracker_project_name,
                                                      config=public_options(run.config))
                run.accelerator.wait_for_everyone()
                resume(run)
                _start_validation(run)
                train_loop(run)
                return finish(run, started)
            except Preempted:
                _shut_down(run)
                raise
            except RuntimeError as err:
                if run.accelerator.num_processes > 1 and not isinstance(err, EXPECTED_ERRORS + (OutputWriteError,)) \
                        and is_collective_failure(err):
                    raise _lost_rank(run, err) from None
                raise
        finally:
            lock.release()


def _shut_down(run: TrainingRun) -> None:
    """After a stop at a step: the order of `finish` that cannot hang (DDP wrappers, then the process group)."""
    run.accelerator.wait_for_everyone()
    run.networks.encoder = run.networks.decoder = None
    run.accelerator.free_memory()
    run.accelerator.end_training()


def _lost_rank(run: TrainingRun, err: BaseException) -> LostRankError:
    progress, config = run.progress, run.config
    lost = describe_lost_ranks(run.ranks, run.accelerator.process_index)
    return LostRankError(
        f"Lost contact with the other processes at step {progress.state.global_step}: {lost} "
        f"({type(err).__name__}: {one_line(err, 300)}). The last checkpoint is "
        f"{progress.last_checkpoint or 'none (no checkpoint was written yet)'}; resume with "
        f"--resume_from_checkpoint latest once every process can run. (--ddp_timeout "
        f"{config.checkpointing.ddp_timeout} s bounds the wait for a process that stops answering.)"
    )


def resume_command(argv: Optional[List[str]]) -> str:
    """The command line of this run with `--resume_from_checkpoint latest` (launcher options are the user's)."""
    args, words, skip = list(sys.argv[1:] if argv is None else argv), [], False
    for word in args:
        if skip:
            skip = False
        elif word == "--resume_from_checkpoint":
            skip = True
        elif not word.startswith("--resume_from_checkpoint="):
            words.append(word)
    script = sys.argv[0] if argv is None else "scripts/train_as_introvae.py"
    launcher = "accelerate launch <the same launcher options> " if int(os.environ.get("WORLD_SIZE", "1")) > 1 \
        else "python "
    return launcher + shlex.join([script, *words, "--resume_from_checkpoint", "latest"])


def main(argv: Optional[List[str]] = None) -> int:
    """
    Command-line entry point: expected failures print one clear line instead of a traceback (exit status 1); a stop
    on SIGTERM / SIGUSR1 exits with `PREEMPTED_EXIT_CODE` (75) after writing a checkpoint.
    """
    config = parse_args(argv)
    try:
        summary = train(config)
    except Preempted as stop:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"Preempted: {stop} Exiting with status {PREEMPTED_EXIT_CODE}; to continue, run "
                  f"{resume_command(argv)}", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except LostRankError as err:
        # the process group cannot be shut down cleanly with a peer gone (its destructor may wait on it): exit now
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    except EXPECTED_ERRORS + (OutputWriteError,) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    logger.info("Done in %.1f s: %s", summary["seconds"], json.dumps(summary.get("final_losses", {})))
    return 0
