"""Crash-safe training checkpoints on top of `accelerator.save_state` / `load_state`.

Accelerate writes the state (models, optimizers, schedulers, EMA, RNG states, the step) but not atomically: a
crash in the middle of `save_state` leaves a folder that looks like a checkpoint and cannot be loaded. So each
checkpoint is written to `checkpoint-N.partial` and renamed to `checkpoint-N` only once every process has
finished; a rename within one directory is atomic, so `latest` always names a complete checkpoint.
"""

import logging
import os
import re
import shutil
from typing import List, Optional

from accelerate import Accelerator

logger = logging.getLogger(__name__)

_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
PARTIAL_SUFFIX = ".partial"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or corrupt."""


class TrainingState:
    """The loop state Accelerate does not know about: the step (the noise is re-seeded from it at each step)."""

    def __init__(self):
        self.global_step = 0

    def state_dict(self) -> dict:
        return {"global_step": self.global_step}

    def load_state_dict(self, state: dict) -> None:
        self.global_step = int(state["global_step"])


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


def save_checkpoint(accelerator: Accelerator, output_dir: str, step: int, total_limit: Optional[int] = None) -> str:
    """Write `checkpoint-{step}` atomically (call on every process) and keep at most `total_limit` of them."""
    final = os.path.join(output_dir, f"checkpoint-{step}")
    partial = final + PARTIAL_SUFFIX
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(partial)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _fsync_tree(partial)
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.replace(partial, final)
        _fsync_dir(output_dir)
        if total_limit is not None:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                logger.info("Removing old checkpoint %s (--checkpoints_total_limit %d)", old, total_limit)
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: str) -> None:
    """`accelerator.load_state(path)`, with an error that names the checkpoint when it cannot be loaded."""
    try:
        accelerator.load_state(path)
    except Exception as err:  # torch, safetensors and pickle raise many types for a damaged file
        raise CheckpointError(
            f"Checkpoint {path!r} cannot be loaded: {type(err).__name__}: {err}. It is corrupt, incomplete, or was "
            f"written with other model options. Delete it to resume from an earlier checkpoint, or pass another "
            f"folder with --resume_from_checkpoint."
        ) from err


def remove_partial_checkpoints(output_dir: str) -> None:
    """Delete leftovers of checkpoint writes that a crash interrupted."""
    if os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            if name.startswith("checkpoint-") and name.endswith(PARTIAL_SUFFIX):
                shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)


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
