"""The training loop behind `asintrovae-train` (`accelerate launch -m asintrovae_hf.commands.train`).

Shaped like diffusers' `train_unconditional.py`: Accelerate for devices, processes and mixed precision; diffusers'
`EMAModel` and `get_scheduler`; `accelerator.save_state` checkpoints (safe and crash-proof in `checkpointing.py`).
What is new here is the two-optimizer introspective update (`train_step.py`). [`train`] reads as set-up and resume
(`setup.py`), the loop (batch -> objective and optimizer steps -> log, checkpoint, grids, validation, stop requests)
and finish (`outputs.py`). Everything here reads the frozen [`TrainingConfig`] that `parse_args` built.
"""

import json
import logging
import os
import time
from typing import Dict, List

from ..errors import require

require("accelerate", "datasets", "tqdm", purpose="Training")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from .checkpointing import remove_partial_checkpoints, save_checkpoint  # noqa: E402
from ..errors import EXPECTED_ERRORS, NonFiniteLossError, one_line  # noqa: E402
from .faults import (  # noqa: E402
    LostRankError,
    OutputWriteError,
    Preempted,
    RunLock,
    StopSignals,
    describe_lost_ranks,
    is_collective_failure,
    quiet_writer_threads,
    writing,
)
from .image_grids import log_images  # noqa: E402
from ..pipelines.pipeline_asintrovae import AsIntroVAEPipeline  # noqa: E402
from .train_step import train_step  # noqa: E402
from .config import TrainingConfig  # noqa: E402
from .outputs import (  # noqa: E402
    _grids_with_ema,
    _write_resolved_config,
    ema_weights,
    finish,
    public_options,
)
from .setup import TrainingRun, resume, setup  # noqa: E402
from .loss_log import LossBuffer  # noqa: E402
from .validation import (  # noqa: E402
    BestPipeline,
    append_validation_record,
    recover_best,
    start_validation_log,
    validate,
)

logger = logging.getLogger("asintrovae_hf.training")


def _noise_seed(seed: int, stream: int, step: int) -> int:
    """The seed of noise stream `stream` (a micro-batch, numbered across processes) at `step`: these alone."""
    entropy = [seed & 0xFFFFFFFFFFFFFFFF, stream, step]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


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


# The command line's entry point lives in cli.py; `from asintrovae_hf.training.loop import main` keeps working.
from .cli import main  # noqa: E402, F401
