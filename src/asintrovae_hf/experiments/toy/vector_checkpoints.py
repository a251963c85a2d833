"""
The toy loop's checkpoints in the image training's `checkpoint-N/` format ([`training.checkpointing`]): `encoder/` and
`decoder/` in `save_pretrained` format, `training_state.json` (the step, and the run's length in its options),
Accelerate's file names for the optimizers', schedulers' and random states' pickles (the torch RNG and the toy's own
data and noise generator), and `training_log.json` (the seconds, devices and logged terms so far).
"""

import json
import os
from typing import Dict, Optional, Tuple

import torch

from ...errors import CheckpointError, one_line
from ...json_io import JsonFileError, read_json
from ...training.checkpointing import (
    TrainingState,
    check_checkpoint_files,
    list_checkpoints,
    load_networks,
    remove_partial_checkpoints,
    save_checkpoint_folder,
    save_networks,
)

LOG_FILE = "training_log.json"  # the toy run's seconds, devices and logged terms
OPTIMIZER_FILES = ("optimizer.bin", "optimizer_1.bin")  # Accelerate's names, in the image checkpoints' order
SCHEDULER_FILES = ("scheduler.bin", "scheduler_1.bin")
RANDOM_STATES_FILE = "random_states_0.pkl"


def save_toy_checkpoint(checkpoint_dir: str, step: int, num_iter: int, log: Dict, networks, optimizers, schedulers,
                        generator: torch.Generator) -> None:
    """Write `checkpoint_dir/checkpoint-{step}` and remove the older ones."""

    def write(folder: str) -> None:
        save_networks(folder, networks)
        TrainingState(step, {"num_iter": num_iter}).save(folder)
        with open(os.path.join(folder, LOG_FILE), "w") as f:
            json.dump(log, f)
        for name, target in zip(OPTIMIZER_FILES + SCHEDULER_FILES, tuple(optimizers) + tuple(schedulers)):
            torch.save(target.state_dict(), os.path.join(folder, name))
        torch.save({"torch_manual_seed": torch.get_rng_state(), "generator": generator.get_state()},
                   os.path.join(folder, RANDOM_STATES_FILE))

    save_checkpoint_folder(write, checkpoint_dir, step, total_limit=1,
                           resume_hint="run the same command again to resume")


def load_toy_checkpoint(checkpoint_dir: str, num_iter: int, networks, optimizers, schedulers,
                        generator: torch.Generator) -> Optional[Tuple[int, Dict]]:
    """
    Restore the state of the newest checkpoint in `checkpoint_dir` in place and return its step and log (`None`
    when there is none yet). A damaged checkpoint or one from another run is refused by name in one line.
    """
    remove_partial_checkpoints(checkpoint_dir)
    found = list_checkpoints(checkpoint_dir)
    if not found:
        return None
    folder = found[-1]
    afresh = f"Delete {folder!r} to start this toy run afresh."
    try:
        check_checkpoint_files(folder)
        state = TrainingState.load(folder)
    except CheckpointError as err:
        raise CheckpointError(f"{err} {afresh}") from None
    if state.options.get("num_iter") != num_iter or not 0 < state.global_step < num_iter:
        raise CheckpointError(f"The toy checkpoint {folder!r} is not a checkpoint of a {num_iter}-iteration run. "
                              f"{afresh}")
    try:
        log = read_json(os.path.join(folder, LOG_FILE), expect=dict)
        load_networks(folder, networks, [type(network) for network in networks])
        for name, target in zip(OPTIMIZER_FILES + SCHEDULER_FILES, tuple(optimizers) + tuple(schedulers)):
            target.load_state_dict(torch.load(os.path.join(folder, name), map_location="cpu", weights_only=True))
        random_states = torch.load(os.path.join(folder, RANDOM_STATES_FILE), weights_only=True)
        generator.set_state(random_states["generator"])
        torch.set_rng_state(random_states["torch_manual_seed"])
        log = {"history": [dict(entry) for entry in log["history"]], "seconds": float(log["seconds"]),
               "devices": [str(device) for device in log["devices"]]}
    except (OSError, JsonFileError, KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"The toy checkpoint {folder!r} cannot be loaded ({one_line(err)}). {afresh}") from None
    return state.global_step, log
