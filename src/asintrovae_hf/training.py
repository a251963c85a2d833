"""The training loop behind `accelerate launch scripts/train_as_introvae.py`.

Shaped like diffusers' `train_unconditional.py`: Accelerate for devices, processes and mixed precision; diffusers'
`EMAModel` and `get_scheduler`; `accelerator.save_state` checkpoints (made crash-safe in `checkpointing.py`).
What is new here is the two-optimizer introspective update (`train_step.py`).
"""

import argparse
import contextlib
import importlib.util
import json
import logging
import math
import os
import sys
import time
from typing import Dict, List, Optional

import datasets
import numpy as np
import PIL
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from diffusers.utils import make_image_grid
from diffusers.utils.torch_utils import is_compiled_module
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from .checkpointing import (
    CheckpointError,
    TrainingState,
    load_checkpoint,
    remove_partial_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from .data import ImageTransform, collate_fn, load_image_dataset, make_train_dataset, resolve_image_column
from .models import AsIntroVAEDecoder, AsIntroVAEEncoder, check_sample_size
from .objective_config import ObjectiveConfig, option_names
from .objectives import IntrospectiveObjective
from .pipeline import AsIntroVAEPipeline
from .train_step import train_step
from .hub import HubError, _network_errors, training_ignore_patterns
from .training_args import parse_args

logger = logging.getLogger("asintrovae_hf.training")


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


class UsageError(RuntimeError):
    """
    An expected failure caused by the options or the environment (bad option values, data that cannot be found or
    reached, a missing tracker package or compiler): `main` prints its message on one line, without a traceback.
    Only the setup steps convert errors into it, so an error raised by a bug in the training loop keeps its traceback.
    """


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


# What loading the data raises when the cause is the data or the network, not this code.
_DATA_ERRORS = (ValueError, FileNotFoundError, PermissionError, ConnectionError, TimeoutError,
                datasets.exceptions.DatasetsError, PIL.UnidentifiedImageError)


def _load_data(args: argparse.Namespace):
    """The dataset and its image column; an unusable source becomes a [`UsageError`] that names it."""
    source = args.dataset_name or args.train_data_dir or "digits"
    try:
        dataset = load_image_dataset(args.dataset_name, args.train_data_dir, args.dataset_config_name,
                                     args.cache_dir)
        return dataset, resolve_image_column(dataset, args.image_column)
    except _DATA_ERRORS + _network_errors() as err:
        hint = ""
        if isinstance(err, (ConnectionError, TimeoutError)) or isinstance(err, _network_errors()):
            hint = (" Check the network connection (with HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1 only datasets "
                    "already in the cache load), or train from a local copy: --train_data_dir, or a folder written "
                    "by `save_to_disk` as --dataset_name.")
        raise UsageError(f"Cannot use the training data {source!r}: {_one_line(err)}{hint}") from err


def _check_trackers(report_to: str) -> None:
    """Accelerate silently drops a tracker whose package is missing: say so instead."""
    wanted = {"tensorboard": ("tensorboard",), "wandb": ("wandb",)}.get(report_to, ())
    for package in wanted:
        if importlib.util.find_spec(package) is None:
            raise UsageError(f"--report_to {report_to} needs the {package!r} package: `pip install {package}`, or "
                             f"pass --report_to none.")


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
        raise UsageError(f"--compile on CPU needs a working C++ compiler for TorchInductor ({_one_line(err)}). "
                         f"Install g++ (or point the CXX environment variable at a compiler), or drop --compile."
                         ) from None


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


def _noise_seed(seed: int, process_index: int, step: int) -> int:
    """The seed of the noise generator at `step` on process `process_index`: a function of these alone."""
    entropy = [seed & 0xFFFFFFFFFFFFFFFF, process_index, step]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def objective_config_from_args(args: argparse.Namespace) -> ObjectiveConfig:
    """The objective of the parsed options (`parse_args` has resolved the preset into the fields)."""
    return ObjectiveConfig(**{name: getattr(args, name) for name in option_names()})


def build_models(args: argparse.Namespace):
    """The encoder and decoder the options describe; an unsupported `--resolution` fails here, before any data."""
    try:
        check_sample_size(args.resolution, args.block_out_channels)
    except ValueError as err:
        raise ValueError(f"--resolution {args.resolution} cannot be used: {err}") from None
    common = dict(sample_size=args.resolution, latent_dim=args.latent_dim, block_out_channels=args.block_out_channels)
    encoder = AsIntroVAEEncoder(in_channels=args.num_channels, **common)
    decoder = AsIntroVAEDecoder(
        out_channels=args.num_channels, output_activation="sigmoid" if args.loss_type == "bce" else None, **common
    )
    return encoder, decoder


def images_to_grid(images: torch.Tensor, cols: int = 8, min_tile: int = 48) -> Image.Image:
    """
    `B x C x H x W` images in `[0, 1]` -> one PIL grid, `cols` wide (diffusers' `make_image_grid`). Small images
    are enlarged (nearest neighbour) to at least `min_tile` pixels and framed, so a grid of 16x16 digits is legible.
    """
    arr = (images.detach().float().clamp(0, 1).cpu().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    mode = "L" if arr.shape[-1] == 1 else "RGB"
    scale = max(1, math.ceil(min_tile / max(arr.shape[1], arr.shape[2])))
    pil = [Image.fromarray(a[..., 0] if mode == "L" else a, mode) for a in arr]
    pil = [ImageOps.expand(p.resize((p.width * scale, p.height * scale), Image.NEAREST), border=2, fill=128)
           for p in pil]
    cols = min(cols, len(pil))
    rows = math.ceil(len(pil) / cols)
    pil += [Image.new(mode, pil[0].size)] * (rows * cols - len(pil))
    return make_image_grid(pil, rows=rows, cols=cols)


@torch.no_grad()
def render_grids(encoder, decoder, real: torch.Tensor, noise: torch.Tensor, cols: int = 8) -> Dict[str, Image.Image]:
    """Samples from fixed noise; rows of real images above rows of their reconstructions. Eval mode."""
    was_training = encoder.training, decoder.training
    encoder.eval(), decoder.eval()
    samples = decoder(noise.to(real.device))
    cols = min(cols, len(real))
    real = real[: (len(real) // cols) * cols]
    recs = decoder(encoder(real)[0])
    encoder.train(was_training[0]), decoder.train(was_training[1])
    return {
        "samples": images_to_grid(samples, cols),
        "reconstructions": images_to_grid(torch.cat([real, recs]), cols),
    }


def _log_images(accelerator: Accelerator, grids: Dict[str, Image.Image], step: int) -> None:
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            for name, grid in grids.items():
                arr = np.asarray(grid)
                tracker.writer.add_image(name, arr if arr.ndim == 3 else arr[..., None], step, dataformats="HWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({name: wandb.Image(grid) for name, grid in grids.items()}, step=step)


def _host_terms(recent: List[Dict[str, torch.Tensor]]) -> List[Dict[str, float]]:
    return [{k: float(v) for k, v in terms.items()} for terms in recent]


def _first_non_finite(steps: List[int], terms: List[Dict[str, float]]):
    for step, values in zip(steps, terms):
        if not all(math.isfinite(v) for v in values.values()):
            return step, values
    return None


def train(args: argparse.Namespace) -> Dict:
    """
    Train with the parsed options and save the pipeline to `args.output_dir`.

    Returns:
        `dict`: A summary: steps, world size, final loss terms, output paths, timings.
    """
    started = time.time()
    logging_dir = os.path.join(args.output_dir, args.logging_dir)
    _check_trackers(args.report_to)
    try:
        accelerator = Accelerator(
            mixed_precision=args.mixed_precision,
            log_with=None if args.report_to == "none" else args.report_to,
            project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=logging_dir),
        )
    except ValueError as err:  # e.g. bf16 where the hardware has none
        raise UsageError(f"Cannot set up Accelerate with these options: {_one_line(err)}") from err
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not accelerator.is_main_process:
        logging.getLogger().setLevel(logging.WARNING)
    if args.compile:
        _check_compile_backend(accelerator.device)

    set_seed(args.seed)
    try:
        encoder, decoder = build_models(args)
        objective = IntrospectiveObjective(objective_config_from_args(args))
    except ValueError as err:
        raise UsageError(str(err)) from err

    if args.push_to_hub:
        from .hub import ensure_repo

        repo_id = args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))
        if accelerator.is_main_process:
            ensure_repo(repo_id, token=args.hub_token, private=args.hub_private_repo)

    # ---- data ------------------------------------------------------------------------------------------------
    dataset, image_column = _load_data(args)
    if args.max_train_samples is not None:
        dataset = dataset.select(range(min(args.max_train_samples, len(dataset))))
    transform = ImageTransform(args.resolution, args.num_channels, center_crop=args.center_crop,
                               random_flip=args.random_flip)
    train_dataset = make_train_dataset(dataset, image_column, transform)
    if len(train_dataset) < args.train_batch_size * accelerator.num_processes:
        raise UsageError(
            f"The dataset has {len(train_dataset)} images, fewer than one batch of "
            f"{args.train_batch_size} x {accelerator.num_processes} process(es)."
        )
    # Shuffling uses its own generator, re-seeded each epoch, so a resumed run sees the same order.
    shuffle_generator = torch.Generator().manual_seed(args.seed)
    train_dataloader = torch.utils.data.DataLoader(
        train_dataset,
        batch_size=args.train_batch_size,
        shuffle=True,
        generator=shuffle_generator,
        collate_fn=collate_fn,
        num_workers=args.dataloader_num_workers,
        drop_last=True,
    )
    grid_real = collate_fn([train_dataset[i] for i in range(min(args.num_grid_images // 2, len(train_dataset)))])[
        "pixel_values"
    ]

    # ---- optimisation ----------------------------------------------------------------------------------------
    opt_e = torch.optim.Adam(encoder.parameters(), lr=args.encoder_learning_rate,
                             betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.adam_weight_decay)
    opt_d = torch.optim.Adam(decoder.parameters(), lr=args.decoder_learning_rate,
                             betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.adam_weight_decay)
    # Batches per process and epoch once Accelerate shards the loader: with `drop_last` it drops the batches that
    # do not fill a round over all processes (checked after `prepare`).
    steps_per_epoch = len(train_dataloader) // accelerator.num_processes
    max_train_steps = args.max_train_steps or args.num_epochs * steps_per_epoch
    num_epochs = math.ceil(max_train_steps / steps_per_epoch)
    # A prepared scheduler steps once per process at each step (Accelerate's convention), hence the factors.
    sched_e, sched_d = (
        get_scheduler(args.lr_scheduler, opt, num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                      num_training_steps=max_train_steps * accelerator.num_processes)
        for opt in (opt_e, opt_d)
    )

    if args.channels_last:
        encoder.to(memory_format=torch.channels_last)
        decoder.to(memory_format=torch.channels_last)
    encoder, decoder, opt_e, opt_d, train_dataloader, sched_e, sched_d = accelerator.prepare(
        encoder, decoder, opt_e, opt_d, train_dataloader, sched_e, sched_d
    )
    if len(train_dataloader) != steps_per_epoch:
        raise RuntimeError(f"Expected {steps_per_epoch} batches per process and epoch, the prepared loader has "
                           f"{len(train_dataloader)}: the step counts (schedulers, epochs, resume) would be wrong.")
    # Grids and the final save use the bare modules: a DDP forward on the main process alone would hang.
    unwrapped_encoder, unwrapped_decoder = _bare_module(accelerator, encoder), _bare_module(accelerator, decoder)
    if args.compile:
        if is_compiled_module(encoder):  # Accelerate's dynamo option (`accelerate launch --dynamo_backend`) did it
            logger.info("--compile: the networks are already compiled by Accelerate's dynamo option.")
        else:
            logger.info("--compile: the first step compiles the encoder and decoder (TorchInductor; on CPU this "
                        "builds C++ kernels and can take a minute; they are cached for later runs).")
            try:
                encoder, decoder = torch.compile(encoder), torch.compile(decoder)
            except RuntimeError as err:  # e.g. a Python version this torch cannot compile for
                raise UsageError(f"--compile: torch.compile is not available here: {_one_line(err)}") from err

    ema = None
    if args.use_ema:
        ema = EMAModel(unwrapped_decoder.parameters(), decay=args.ema_decay, model_cls=AsIntroVAEDecoder,
                       model_config=unwrapped_decoder.config)
        ema.to(accelerator.device)
        accelerator.register_for_checkpointing(ema)
    # Re-seeded at every step from (seed, process, step), so every process draws the same noise in a resumed run as
    # in an uninterrupted one (a checkpoint holds the main process's generator state only).
    noise_generator = torch.Generator(device=accelerator.device)
    state = TrainingState()
    accelerator.register_for_checkpointing(state)

    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        remove_partial_checkpoints(args.output_dir)
        accelerator.init_trackers("asintrovae", config=public_hyperparameters(args))
    accelerator.wait_for_everyone()

    resume_path = resolve_checkpoint(args.resume_from_checkpoint, args.output_dir)
    if args.resume_from_checkpoint is not None and resume_path is None:
        logger.info("No checkpoint in %s; starting a new run.", args.output_dir)
    if resume_path is not None:
        load_checkpoint(accelerator, resume_path)
        if ema is not None:  # Accelerate loads registered objects onto the CPU: the averages go back to the device
            ema.to(accelerator.device)
        logger.info("Resumed from %s at step %d.", resume_path, state.global_step)
    global_step = state.global_step
    first_epoch, resume_batches = divmod(global_step, steps_per_epoch)

    latent_dim = args.latent_dim
    grid_noise = torch.randn(args.num_grid_images, latent_dim, generator=torch.Generator().manual_seed(args.seed))
    grid_real = grid_real.to(accelerator.device)
    last_checkpoint = resume_path
    recent_steps, recent_terms, last_logged = [], [], {}

    logger.info(
        "Training %s: %d images, %d process(es) x batch %d, %d steps (%d per epoch), device %s, mixed precision %s",
        args.objective, len(train_dataset), accelerator.num_processes, args.train_batch_size, max_train_steps,
        steps_per_epoch, accelerator.device, accelerator.mixed_precision,
    )
    progress = tqdm(total=max_train_steps, initial=global_step, disable=not accelerator.is_main_process,
                    desc="Steps", dynamic_ncols=True)

    def flush_losses() -> None:
        """Read the losses of the last steps on the host: NaN check on every process, then log."""
        nonlocal recent_steps, recent_terms, last_logged
        if not recent_terms:
            return
        host = _host_terms(recent_terms)
        bad = _first_non_finite(recent_steps, host)
        any_bad = accelerator.reduce(torch.tensor(float(bad is not None), device=accelerator.device), "sum")
        if any_bad.item() > 0:
            where = (f"at step {bad[0]}: " + ", ".join(f"{k}={v:.4g}" for k, v in bad[1].items())) if bad else \
                "on another process"
            raise NonFiniteLossError(
                f"Training stopped: non-finite loss {where}. The last good checkpoint is "
                f"{last_checkpoint or 'none (no checkpoint was written yet)'}; nothing after it was saved. "
                f"Hint: lower --beta_neg (now {args.beta_neg}) or the learning rate, or train in full precision "
                f"(--mixed_precision no), then resume with --resume_from_checkpoint latest."
            )
        last_logged = {k: float(np.mean([h[k] for h in host if k in h])) for k in host[-1]}
        last_logged["lr_encoder"] = sched_e.get_last_lr()[0]
        last_logged["lr_decoder"] = sched_d.get_last_lr()[0]
        accelerator.log(last_logged, step=recent_steps[-1])
        shown = {k: f"{last_logged[k]:.4g}" for k in ("loss_encoder", "loss_decoder", "loss_rec", "kl_real", "dis_encoder", "c", "loss") if k in last_logged}
        progress.set_postfix(shown, refresh=False)
        recent_steps, recent_terms = [], []

    # ---- the loop --------------------------------------------------------------------------------------------
    encoder.train(), decoder.train()
    for epoch in range(first_epoch, num_epochs):
        if global_step >= max_train_steps:
            break
        shuffle_generator.manual_seed(args.seed + epoch)
        loader = train_dataloader
        if epoch == first_epoch and resume_batches:
            loader = accelerator.skip_first_batches(train_dataloader, resume_batches)
        for batch in loader:
            x = batch["pixel_values"]
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            noise_generator.manual_seed(_noise_seed(args.seed, accelerator.process_index, global_step))
            phase = objective.config.phase(global_step, max_train_steps)
            terms = train_step(objective, encoder, decoder, opt_e, opt_d, x, latent_dim, c=phase.c,
                               vae_step=phase.vae, backward=accelerator.backward, generator=noise_generator)
            sched_e.step()
            sched_d.step()
            if ema is not None:
                ema.step(unwrapped_decoder.parameters())
            global_step += 1
            state.global_step = global_step
            progress.update(1)
            recent_steps.append(global_step)
            recent_terms.append(terms)

            if global_step % args.logging_steps == 0 or global_step == max_train_steps:
                flush_losses()
            if global_step % args.checkpointing_steps == 0 and global_step < max_train_steps:
                flush_losses()
                last_checkpoint = save_checkpoint(accelerator, args.output_dir, global_step,
                                                  args.checkpoints_total_limit)
            if global_step % args.save_images_steps == 0 and accelerator.is_main_process:
                grids = _grids_with_ema(unwrapped_encoder, unwrapped_decoder, ema, grid_real, grid_noise)
                for name, grid in grids.items():
                    grid.save(os.path.join(args.output_dir, f"{name}-{global_step:06d}.png"))
                _log_images(accelerator, grids, global_step)
            if global_step >= max_train_steps:
                break
    flush_losses()
    progress.close()

    # ---- the final checkpoint, pipeline and model card -------------------------------------------------------
    last_checkpoint = save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit)
    checksums = _replica_checksums(accelerator, encoder, decoder)
    summary = {
        "global_step": global_step,
        "world_size": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "mixed_precision": accelerator.mixed_precision,
        "final_losses": last_logged,
        "replica_checksums": checksums,
        "seconds": round(time.time() - started, 1),
        "last_checkpoint": last_checkpoint,
    }
    if accelerator.is_main_process:
        summary.update(_save_outputs(args, accelerator, unwrapped_encoder, unwrapped_decoder, ema, grid_real, grid_noise,
                                     last_logged, image_column))
        with open(os.path.join(args.output_dir, "train_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    # Shut down in an order that cannot hang. DDP's reducers hold the process group: if the last of them goes at
    # interpreter exit, the group's destructor joins Gloo's worker threads while holding the GIL, and a worker that
    # needs the GIL to free a finished collective never ends (the 2-rank CPU run hung so at exit, now and then). So
    # the DDP wrappers go first, and the group then goes with `destroy_process_group` (`end_training`).
    accelerator.wait_for_everyone()
    del encoder, decoder
    accelerator.free_memory()
    accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        from .hub import push_to_hub

        summary["hub_url"] = push_to_hub(args.output_dir, repo_id, token=args.hub_token,
                                         private=args.hub_private_repo,
                                         ignore_patterns=training_ignore_patterns(args.output_dir, args.logging_dir))
    return summary


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


def public_hyperparameters(args: argparse.Namespace) -> Dict:
    """The options as flat values for trackers and the model card; the Hub token is left out."""
    return {k: (",".join(map(str, v)) if isinstance(v, (tuple, list)) else v)
            for k, v in vars(args).items() if k != "hub_token"}


def _grids_with_ema(encoder, unwrapped_decoder, ema, real, noise) -> Dict[str, Image.Image]:
    """Grids drawn with the EMA decoder weights when EMA is on (the weights that will be saved)."""
    with ema_weights(ema, unwrapped_decoder):
        return render_grids(encoder, unwrapped_decoder, real, noise.to(real.device))


@torch.no_grad()
def _replica_checksums(accelerator: Accelerator, encoder, decoder) -> List[List[float]]:
    """Per-process `[sum, sum of squares]` of all weights: equal on every process when DDP kept them in sync."""
    params = list(encoder.parameters()) + list(decoder.parameters())
    local = torch.stack([sum(p.double().sum() for p in params), sum(p.double().pow(2).sum() for p in params)])
    return accelerator.gather(local[None].to(accelerator.device)).cpu().tolist()


def _save_outputs(args, accelerator, encoder, unwrapped_decoder, ema, grid_real, grid_noise, final_losses,
                  image_column) -> Dict:
    """Save the pipeline (EMA decoder when EMA is on), the grids and the model card; reload to check."""
    from .hub import create_model_card

    with ema_weights(ema, unwrapped_decoder):
        AsIntroVAEPipeline(encoder=encoder, decoder=unwrapped_decoder).save_pretrained(args.output_dir)
        grids = render_grids(encoder, unwrapped_decoder, grid_real, grid_noise.to(grid_real.device))
    for name, grid in grids.items():
        grid.save(os.path.join(args.output_dir, f"{name}.png"))

    hyperparameters = public_hyperparameters(args)
    hyperparameters["image_column"] = image_column
    hyperparameters["world_size"] = accelerator.num_processes
    repo_id = args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))
    create_model_card(
        args.output_dir,
        repo_id=repo_id,
        hyperparameters=hyperparameters,
        final_losses=final_losses,
        dataset_name=args.dataset_name or ("imagefolder" if args.train_data_dir else "digits"),
        sample_grid="samples.png",
        objective=args.objective,
    )

    # The user's first step is `from_pretrained`: do it once here so a broken save fails the run, not them.
    reloaded = AsIntroVAEPipeline.from_pretrained(args.output_dir)
    reloaded.to(accelerator.device)
    check = reloaded(batch_size=min(16, args.num_grid_images), generator=torch.Generator().manual_seed(args.seed),
                     output_type="pt").images
    images_to_grid(check).save(os.path.join(args.output_dir, "samples_from_pretrained.png"))
    return {
        "pipeline": os.path.abspath(args.output_dir),
        "samples": os.path.join(args.output_dir, "samples.png"),
        "reconstructions": os.path.join(args.output_dir, "reconstructions.png"),
        "samples_from_pretrained": os.path.join(args.output_dir, "samples_from_pretrained.png"),
    }


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry point: expected failures print one clear line instead of a traceback."""
    args = parse_args(argv)
    try:
        summary = train(args)
    except (UsageError, NonFiniteLossError, CheckpointError, HubError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 1
    logger.info("Done in %.1f s: %s", summary["seconds"], json.dumps(summary.get("final_losses", {})))
    return 0
