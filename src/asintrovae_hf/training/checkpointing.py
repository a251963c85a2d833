"""Training checkpoints: crash-safe, readable with `from_pretrained`, and never a source of code execution.

A checkpoint `checkpoint-N/` holds:

- `encoder/`, `decoder/` and, with EMA, `decoder_ema/`: the networks in `save_pretrained` format (safetensors and
  JSON; `AsIntroVAEDecoder.from_pretrained("checkpoint-N", subfolder="decoder_ema")` opens one). They are written by
  Accelerate save/load hooks, as diffusers' training examples do, in place of Accelerate's own `model*.safetensors`.
- `training_state.json`: the step and the options of the run that wrote it.
- Accelerate's optimizer, scheduler and RNG files (`*.bin`, `random_states_*.pkl`), which torch pickles.

Loading never runs code from the checkpoint: nothing is registered with `register_for_checkpointing` (Accelerate
reloads those pickles with `weights_only=False`), and before `load_state` every pickle in the folder must load with
`torch.load(weights_only=True)`, which refuses a pickle that would call anything but tensor and plain-data
constructors (Accelerate would skip a refused RNG file silently, and the resumed run would differ).

Writes are atomic: a checkpoint is written to `checkpoint-N.partial` and renamed once every process has finished,
so `latest` always names a complete checkpoint, and a failed write (a full disk) leaves the previous one intact.

The 2D toy loop (`asintrovae_hf.experiments.toy`), one process without an `Accelerator`, writes the same folders
through [`save_checkpoint_folder`], [`save_networks`] and [`TrainingState`], and reads them back through
[`check_checkpoint_files`] and [`load_networks`].
"""

import json
import logging
import os
import re
import shutil
from typing import Any, Callable, Dict, List, Optional, Sequence

from accelerate import Accelerator

from ..errors import CheckpointError, one_line, unpickling_detail
from ..json_io import JsonFileError, read_json
from .faults import describe_disk_error, is_disk_error
from ..models.loading import check_plain_tree, check_weight_file

logger = logging.getLogger(__name__)

_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
PARTIAL_SUFFIX = ".partial"
REPLACED_SUFFIX = ".replaced"  # a checkpoint of the same step being replaced by a new one
STATE_FILE = "training_state.json"
MAX_STATE_BYTES = 1024 * 1024  # the step and the options: a few KiB
COMPONENTS = ("encoder", "decoder")
EMA_FOLDER = "decoder_ema"
# Files Accelerate writes with torch's pickle format; every other file type in a checkpoint is refused.
PICKLE_PATTERN = re.compile(r"^(optimizer(_\d+)?\.bin|scheduler(_\d+)?\.bin|random_states_\d+\.pkl|scaler\.pt)$")


class TrainingState:
    """The loop state Accelerate does not know about: the step, and the options of the run (for resume checks)."""

    def __init__(self, global_step: int = 0, options: Optional[Dict[str, Any]] = None):
        self.global_step = global_step
        self.options = dict(options or {})

    def save(self, folder: str) -> None:
        with open(os.path.join(folder, STATE_FILE), "w") as f:
            json.dump({"global_step": self.global_step, "options": self.options}, f, indent=2, sort_keys=True)

    @classmethod
    def load(cls, folder: str) -> "TrainingState":
        """
        Read `training_state.json`: a regular file of at most `MAX_STATE_BYTES` holding a JSON object whose
        `global_step` is a non-negative integer, equal to N for a folder named `checkpoint-N`.
        """
        path = os.path.join(folder, STATE_FILE)
        where = f"Checkpoint {folder!r}: {STATE_FILE}"
        try:
            if os.path.islink(path) or (os.path.lexists(path) and not os.path.isfile(path)):
                raise CheckpointError(f"{where} is a symlink or special file; expected a regular file.")
            if os.path.getsize(path) > MAX_STATE_BYTES:
                raise CheckpointError(f"{where} is {os.path.getsize(path):,} bytes; expected at most "
                                      f"{MAX_STATE_BYTES:,}.")
            data = read_json(path, where, max_bytes=MAX_STATE_BYTES)
            if not isinstance(data, dict) or not isinstance(data.get("options", {}), dict):
                raise CheckpointError(f"{where} must hold a JSON object with 'global_step' and 'options' (an "
                                      f"object), got {one_line(ValueError(repr(data)), 80)}.")
            step = data["global_step"]
        except JsonFileError as err:  # too large, too deep, not JSON: the reader's line says which
            raise CheckpointError(f"{err} Resume from another checkpoint.") from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise CheckpointError(f"{where} is missing or unreadable ({type(err).__name__}: {one_line(err, 300)})."
                                  ) from None
        match = _CHECKPOINT_RE.match(os.path.basename(os.path.normpath(folder)))
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise CheckpointError(f"{where}: global_step must be a non-negative integer, got "
                                  f"{one_line(ValueError(repr(step)), 80)}.")
        if match and step != int(match.group(1)):
            raise CheckpointError(f"{where}: global_step is {step}, but the folder is checkpoint-{match.group(1)}; "
                                  f"expected the same step (the file was edited or copied from another checkpoint).")
        return cls(step, data.get("options", {}))


# Options a resumed run cannot honour: they shape the networks or the stream of batches that the checkpoint's step
# points into. Changing one on resume is refused; every other changed option is applied (and logged).
FIXED_ON_RESUME = ("resolution", "num_channels", "latent_dim", "block_out_channels", "dataset_name",
                   "dataset_config_name", "train_data_dir", "image_column", "class_column", "max_train_samples",
                   "center_crop", "random_flip", "train_batch_size", "gradient_accumulation_steps", "seed", "use_ema",
                   "mixed_precision", "world_size", "validation_split", "validation_data_dir")
# Options that only say where things go or how they are shown: not compared.
NOT_COMPARED = ("output_dir", "resume_from_checkpoint", "logging_dir", "report_to", "tracker_project_name",
                "cache_dir", "dataloader_num_workers", "push_to_hub", "hub_model_id", "hub_private_repo", "preset",
                "pretrained_model_name_or_path", "logging_steps", "checkpointing_steps", "checkpoints_total_limit",
                "save_images_steps", "num_grid_images", "compile", "channels_last", "ddp_timeout", "validation_steps",
                "num_validation_images", "keep_best_by")


def compare_options(saved: Dict[str, Any], current: Dict[str, Any]):
    """
    `(refused, applied)`: the options that differ between the checkpoint's run and this one, as
    `(name, saved value, current value)`, split into those a resume cannot honour and those it applies.
    """
    refused, applied = [], []
    for name in sorted(set(saved) & set(current)):
        if name in NOT_COMPARED or saved[name] == current[name]:
            continue
        (refused if name in FIXED_ON_RESUME else applied).append((name, saved[name], current[name]))
    return refused, applied


def list_checkpoints(output_dir: str) -> List[str]:
    """Complete checkpoints in `output_dir`, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT_RE.match(name))]
    return [os.path.join(output_dir, name) for _, name in sorted(found)]


def resolve_checkpoint(resume_from_checkpoint: Optional[str], output_dir: str) -> Optional[str]:
    """The folder `--resume_from_checkpoint` names (`latest` or a path), or `None` when there is none yet."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = resume_from_checkpoint
    if not os.path.isdir(path) and os.path.isdir(os.path.join(output_dir, path)):
        path = os.path.join(output_dir, path)
    if not os.path.isdir(path):
        raise CheckpointError(
            f"--resume_from_checkpoint {resume_from_checkpoint!r}: no such checkpoint folder "
            f"(complete checkpoints in {output_dir!r}: {[os.path.basename(p) for p in list_checkpoints(output_dir)]})."
        )
    if path.endswith(PARTIAL_SUFFIX):
        raise CheckpointError(f"{path!r} is a partial checkpoint (its write was interrupted); it cannot be resumed.")
    return path


EMA_STATE_FILE = "ema_state.json"
RESUME_HINT = "resume with --resume_from_checkpoint latest"


def save_networks(folder: str, models: Sequence) -> None:
    """Write the encoder and the decoder to `folder/encoder` and `folder/decoder` (`save_pretrained` format)."""
    for name, model in zip(COMPONENTS, models):
        model.save_pretrained(os.path.join(folder, name))


def load_networks(folder: str, models: Sequence, model_classes: Sequence[type]) -> None:
    """Load the weights of `folder/encoder` and `folder/decoder` into `models` (modules of `model_classes`)."""
    for name, model_cls, model in zip(COMPONENTS, model_classes, models):
        model.load_state_dict(model_cls.from_pretrained(folder, subfolder=name).state_dict())


def register_checkpoint_hooks(accelerator: Accelerator, model_classes, state: TrainingState, ema=None) -> None:
    r"""
    Make `accelerator.save_state` / `load_state` write and read the networks as `encoder/` and `decoder/`
    (`save_pretrained` format), the EMA decoder as `decoder_ema/` (the decoder with the averaged weights and its own
    BatchNorm statistics, ready to sample from, plus `ema_state.json`: decay, step and warm-up settings) and the
    [`TrainingState`] as JSON.

    Args:
        accelerator (`Accelerator`): Its prepared models must be the encoder and the decoder, in that order.
        model_classes (`Sequence[type]`): The encoder and decoder classes.
        state (`TrainingState`): Saved and loaded in place.
        ema (`EMAModel`, *optional*): The decoder's EMA.
    """
    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            save_networks(output_dir, [accelerator.unwrap_model(model) for model in models])
            if ema is not None:
                decoder = accelerator.unwrap_model(models[1])
                ema.store(decoder.parameters())
                ema.copy_to(decoder.parameters())
                try:
                    decoder.save_pretrained(os.path.join(output_dir, EMA_FOLDER))
                finally:
                    ema.restore(decoder.parameters())
                ema_state = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
                with open(os.path.join(output_dir, EMA_FOLDER, EMA_STATE_FILE), "w") as f:
                    json.dump(ema_state, f, indent=2, sort_keys=True)
            state.save(output_dir)
        del weights[:]  # saved above: Accelerate writes no model.safetensors of its own

    def load_hook(models, input_dir):
        load_networks(input_dir, [accelerator.unwrap_model(model) for model in models], model_classes)
        del models[:]
        if ema is not None:
            if not os.path.isdir(os.path.join(input_dir, EMA_FOLDER)):
                raise CheckpointError(f"Checkpoint {input_dir!r} has no {EMA_FOLDER}/ (it was written without "
                                      f"--use_ema); resume with --no-use_ema, or start a new run.")
            folder = os.path.join(input_dir, EMA_FOLDER)
            averaged = model_classes[1].from_pretrained(folder)
            try:
                ema_state = read_json(os.path.join(folder, EMA_STATE_FILE), f"Checkpoint {input_dir!r}: "
                                      f"{EMA_FOLDER}/{EMA_STATE_FILE}", max_bytes=MAX_STATE_BYTES, expect=dict)
            except (OSError, JsonFileError) as err:
                raise CheckpointError(f"{one_line(err)} Resume from another checkpoint.") from None
            ema.load_state_dict({**ema_state, "shadow_params": [p.detach() for p in averaged.parameters()]})
        loaded_state = TrainingState.load(input_dir)
        state.global_step, state.options = loaded_state.global_step, loaded_state.options

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def check_checkpoint_files(path: str) -> None:
    """
    Refuse a checkpoint holding anything that could run code, hang or exhaust memory when loaded: every entry must be
    a regular file or folder (no symlink, whose target the walk would not see, and no FIFO, device or socket, which
    would hang the resume), and every file safetensors, JSON, or one of Accelerate's pickles that declares no more data
    than it holds and loads with `weights_only=True`.
    """
    from accelerate.utils import load as accelerate_load

    try:
        check_plain_tree(path, f"Checkpoint {path!r}")
    except ValueError as err:
        raise CheckpointError(f"{err} Remove it, or resume from another checkpoint.") from None
    for root, _, files in os.walk(path):
        for name in sorted(files):
            file = os.path.join(root, name)
            relative = os.path.relpath(file, path)
            if name.endswith(".json"):
                continue
            if not name.endswith(".safetensors") and (root != path or not PICKLE_PATTERN.match(name)):
                raise CheckpointError(
                    f"Checkpoint {path!r} holds {relative!r}, which is not one of its files (safetensors, JSON, and "
                    f"Accelerate's optimizer, scheduler and RNG states); refusing to load it. Remove the file, or "
                    f"resume from another checkpoint."
                )
            try:
                check_weight_file(file, what=f"Checkpoint {path!r}: file")
            except ValueError as err:
                raise CheckpointError(f"{err} Resume from another checkpoint.") from None
            if name.endswith(".safetensors"):
                continue
            try:  # Accelerate's loader: weights_only=True, with the numpy types of RNG states allowed; mapped, so
                # that no pickle can declare more than the file holds
                accelerate_load(file, map_location="cpu", weights_only=True, mmap=True)
            except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
                raise CheckpointError(
                    f"Checkpoint {path!r}: {relative} cannot be loaded safely ({type(err).__name__}: "
                    f"{unpickling_detail(err)}). It is corrupt, or holds more than tensors and plain data (a pickle "
                    f"that would run code); it is never loaded otherwise. Resume from another checkpoint."
                ) from None


def save_checkpoint(accelerator: Accelerator, output_dir: str, step: int, total_limit: Optional[int] = None) -> str:
    """Write `checkpoint-{step}` atomically (call on every process) and keep at most `total_limit` of them."""
    final = os.path.join(output_dir, f"checkpoint-{step}")
    partial = final + PARTIAL_SUFFIX
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    _write_partial(accelerator.save_state, final, RESUME_HINT)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _publish(final, total_limit)
    accelerator.wait_for_everyone()
    return final


def save_checkpoint_folder(write: Callable[[str], None], output_dir: str, step: int,
                           total_limit: Optional[int] = None, resume_hint: str = RESUME_HINT) -> str:
    """
    [`save_checkpoint`] for a single process without Accelerate: `write(folder)` fills the empty folder
    `checkpoint-{step}.partial`, which then replaces `checkpoint-{step}` atomically. A full disk raises a
    [`CheckpointError`] that names the intact previous checkpoint and ends with `resume_hint`.
    """
    def write_new(folder: str) -> None:
        os.makedirs(folder)
        write(folder)

    final = os.path.join(output_dir, f"checkpoint-{step}")
    shutil.rmtree(final + PARTIAL_SUFFIX, ignore_errors=True)
    _write_partial(write_new, final, resume_hint)
    _publish(final, total_limit)
    return final


def _write_partial(write: Callable[[str], Any], final: str, resume_hint: str) -> None:
    try:
        write(final + PARTIAL_SUFFIX)
    except Exception as err:  # a full disk, a folder that went read-only (torch and safetensors say so in their own
        # exception types); the previous checkpoint is untouched until this one is complete
        if not is_disk_error(err):
            raise
        shutil.rmtree(final + PARTIAL_SUFFIX, ignore_errors=True)
        output_dir = os.path.dirname(final)
        previous = list_checkpoints(output_dir)
        raise CheckpointError(
            f"Cannot write checkpoint {final!r}: {describe_disk_error(err, output_dir)} The previous checkpoint "
            f"{previous[-1] if previous else '(none)'!r} is intact; free space and {resume_hint}."
        ) from None


def _publish(final: str, total_limit: Optional[int]) -> None:
    """Rename the complete `final.partial` to `final` and keep the newest `total_limit` checkpoints."""
    partial, output_dir = final + PARTIAL_SUFFIX, os.path.dirname(final)
    _fsync_tree(partial)
    replaced = final + REPLACED_SUFFIX
    if os.path.isdir(final):  # set aside, not deleted, until the new one is in place: a crash keeps one of them
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(final, replaced)
    os.replace(partial, final)
    _fsync_dir(output_dir)
    shutil.rmtree(replaced, ignore_errors=True)
    if total_limit is not None:
        for old in list_checkpoints(output_dir)[:-total_limit]:
            logger.info("Removing old checkpoint %s (--checkpoints_total_limit %d)", old, total_limit)
            shutil.rmtree(old)


def load_checkpoint(accelerator: Accelerator, path: str) -> None:
    """Check the checkpoint's files, then `accelerator.load_state(path)`; failures name the checkpoint."""
    check_checkpoint_files(path)
    try:
        accelerator.load_state(path)
    except CheckpointError:
        raise
    except Exception as err:  # torch, safetensors and diffusers raise many types for a damaged file
        raise CheckpointError(
            f"Checkpoint {path!r} cannot be loaded: {type(err).__name__}: {one_line(err, 300)}. It is corrupt, "
            f"incomplete, or was written with other model options. Delete it to resume from an earlier checkpoint, "
            f"or pass another folder with --resume_from_checkpoint."
        ) from err


def remove_partial_checkpoints(output_dir: str) -> None:
    """
    Delete leftovers of checkpoint writes that a crash interrupted; a checkpoint that was being replaced by a new one
    of the same step when the crash came is put back if the new one is not in place.
    """
    if not os.path.isdir(output_dir):
        return
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        if not name.startswith("checkpoint-"):
            continue
        if name.endswith(PARTIAL_SUFFIX):
            shutil.rmtree(path, ignore_errors=True)
        elif name.endswith(REPLACED_SUFFIX):
            final = path[: -len(REPLACED_SUFFIX)]
            if os.path.isdir(final):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.replace(path, final)


def _fsync_tree(path: str) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(root)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
