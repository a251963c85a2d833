"""The outputs of a training run: the final checkpoint, the pipeline (EMA decoder), sample grids, model card, the
reload check, the upload, and the resolved configuration (`OUTPUT_DIR/config.yaml`, `train_summary.json`).
"""

import contextlib
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Dict, List, Optional

from ..errors import require

require("accelerate", "datasets", "tqdm", purpose="Training")

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from diffusers.training_utils import EMAModel  # noqa: E402

from .checkpointing import save_checkpoint  # noqa: E402
from ..errors import one_line  # noqa: E402
from ..hub import training_ignore_patterns  # noqa: E402
from .faults import describe_disk_error, is_disk_error, writing  # noqa: E402
from .image_grids import images_to_grid, render_grids  # noqa: E402
from ..pipelines.pipeline_asintrovae import AsIntroVAEPipeline  # noqa: E402
from .args import option_names  # noqa: E402
from .config import TrainingConfig  # noqa: E402
from .config_files import resolved_config, write_config  # noqa: E402

if TYPE_CHECKING:  # setup.py imports this module
    from .setup import TrainingRun

logger = logging.getLogger("asintrovae_hf.training")


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


def _grids_with_ema(run: "TrainingRun"):
    """Grids drawn with the EMA decoder weights when EMA is on (the weights that will be saved)."""
    networks, grids = run.networks, run.grids
    with ema_weights(networks.ema, networks.bare_decoder):
        return render_grids(networks.bare_encoder, networks.bare_decoder, grids.real, grids.noise, labels=grids.labels)


@torch.no_grad()
def _sync_buffers(run: "TrainingRun") -> None:
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


def finish(run: "TrainingRun", started: float) -> Dict:
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


def _card(run: "TrainingRun", config: TrainingConfig) -> None:
    from ..hub import create_model_card

    hyperparameters = public_options(config)
    hyperparameters.update(image_column=run.data.image_column, world_size=run.accelerator.num_processes)
    dataset = config.data.source.card_name
    create_model_card(
        config.output_dir,
        repo_id=run.repo_id or config.hub.hub_model_id or os.path.basename(os.path.abspath(config.output_dir)),
        hyperparameters=hyperparameters,
        final_losses=run.progress.last_logged,
        dataset_name=_portable_path(dataset, os.path.abspath(config.output_dir)) if dataset else dataset,
        sample_grid="samples.png",
        objective=config.objective.objective,
    )


def _save_outputs(run: "TrainingRun") -> Dict:
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


def resolved_options(run: "TrainingRun") -> Dict:
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


def _write_resolved_config(run: "TrainingRun") -> None:
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


def _write_config_file(run: "TrainingRun", path: str) -> None:
    write_config(resolved_options(run), path, header=(
        "The resolved configuration of this run, written by asintrovae-train: every option with the value it had.\n"
        f"Replay it with: asintrovae-train --config {path} (flags given as well override it)."))

