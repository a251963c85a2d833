"""The set-up of a training run: Accelerate, the output folder, the networks with their optimizers, schedulers and EMA,
the data (read by `inputs.py`), the sample grids' inputs, and the resume from a checkpoint. [`setup`] builds the
[`TrainingRun`] the loop (`loop.py`) steps; everything here reads the frozen [`TrainingConfig`] that `parse_args` built.
"""

import dataclasses
import datetime
import logging
import os
import socket
from typing import Any, Dict, List, Optional, Tuple

from ..errors import require

require("accelerate", "datasets", "tqdm", purpose="Training")

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

from .checkpointing import (  # noqa: E402
    TrainingState,
    compare_options,
    load_checkpoint,
    register_checkpoint_hooks,
    resolve_checkpoint,
)
from ..data import ImageTransform, collate_fn, make_train_dataset, resolve_class_column  # noqa: E402
from ..errors import UsageError, network_errors, one_line  # noqa: E402
from .faults import RunLock, StopSignals  # noqa: E402
from ..models.autoencoder_image import AsIntroVAEDecoder, AsIntroVAEEncoder  # noqa: E402
from ..models.loading import check_sample_size  # noqa: E402
from ..objectives.introspective import IntrospectiveObjective  # noqa: E402
from ..pipelines.pipeline_asintrovae import AsIntroVAEPipeline  # noqa: E402
from .precision import precision_warning  # noqa: E402
from .args import report_to_error, scheduler_kwargs  # noqa: E402
from .config import ModelConfig, TrainingConfig  # noqa: E402
from .inputs import TrainingData, load_training_data, load_validation_set, make_training_data  # noqa: E402
from .outputs import public_options  # noqa: E402
from .validation import BestPipeline, ValidationSet  # noqa: E402

logger = logging.getLogger("asintrovae_hf.training")


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

    dataset, image_column, held_out = load_training_data(config.data, config.validation.validation_split)
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
    data = make_training_data(config, accelerator, train_dataset, image_column, num_classes)
    num_grid_real = min(config.logging.num_grid_images // 2, len(train_dataset))
    grid_batch = collate_fn([train_dataset[i] for i in range(num_grid_real)])
    networks = _prepare_networks(config, accelerator, encoder, decoder, data)
    validation = load_validation_set(config, accelerator, held_out, image_column, num_classes)

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

