"""What several test files share: the tiny training options, the plugin-less interpreter, tiny pipelines."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from asintrovae_hf import (
    AsIntroVAEDecoder,
    AsIntroVAEEncoder,
    AsIntroVAEPipeline,
    AsIntroVAEVectorDecoder,
    AsIntroVAEVectorEncoder,
)

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """Import `scripts/<name>.py` as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
TRAIN_SCRIPT = ROOT / "scripts" / "train_as_introvae.py"

# A tiny run on the built-in digits: 8x8 images, 64 of them, batches of 16 (4 steps per epoch).
TINY = ["--resolution", "8", "--block_out_channels", "8,16", "--latent_dim", "4", "--train_batch_size", "16",
        "--max_train_samples", "64", "--num_grid_images", "8", "--beta_neg", "8", "--report_to", "none"]

# Prepended to a script run with `python -c`: that interpreter cannot import the plugin, as on a machine without it.
NO_PLUGIN = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):  # this machine does not have the plugin
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "asintrovae_hf":
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Block())
"""


def reset_accelerate() -> None:
    """Forget the Accelerator of a previous in-process run (Accelerate keeps its state in class attributes)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def run_training_script(args, env=None, **kwargs) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", **(env or {}))
    return subprocess.run([sys.executable, str(TRAIN_SCRIPT), *args], env=full_env, capture_output=True, text=True,
                          timeout=600, **kwargs)


def pipeline_weights(folder):
    """A saved pipeline's (or checkpoint's) weights, keyed `encoder.<name>` / `decoder.<name>`."""
    folder = Path(folder)
    return {f"{part}.{k}": v for part in ("encoder", "decoder")
            for k, v in load_file(folder / part / "diffusion_pytorch_model.safetensors").items()}


def tiny_image_pipeline(channels=1, size=16, latent_dim=4, block_out_channels=(8, 16), seed=0) -> AsIntroVAEPipeline:
    """Fresh conv models from a fixed seed, in eval mode."""
    torch.manual_seed(seed)
    kw = dict(sample_size=size, latent_dim=latent_dim, block_out_channels=block_out_channels)
    return AsIntroVAEPipeline(encoder=AsIntroVAEEncoder(in_channels=channels, **kw).eval(),
                              decoder=AsIntroVAEDecoder(out_channels=channels, **kw).eval())


def tiny_vector_pipeline(features=2, latent_dim=2, hidden_dims=(8,), seed=0) -> AsIntroVAEPipeline:
    torch.manual_seed(seed)
    return AsIntroVAEPipeline(
        encoder=AsIntroVAEVectorEncoder(in_features=features, latent_dim=latent_dim, hidden_dims=hidden_dims),
        decoder=AsIntroVAEVectorDecoder(out_features=features, latent_dim=latent_dim, hidden_dims=hidden_dims),
    )


def tiny_conditional_pipeline(num_classes=3, size=8, latent_dim=4, block_out_channels=(8, 16), seed=0):
    """A class-conditional tiny conv pipeline (`num_class_embeds=num_classes`), in eval mode."""
    torch.manual_seed(seed)
    kw = dict(sample_size=size, latent_dim=latent_dim, block_out_channels=block_out_channels,
              num_class_embeds=num_classes)
    return AsIntroVAEPipeline(encoder=AsIntroVAEEncoder(in_channels=1, **kw).eval(),
                              decoder=AsIntroVAEDecoder(out_channels=1, **kw).eval())


def reorder_tests(items, order: str):
    """
    The collected tests in another order, to show no test depends on the ones before it: `"reverse"` reverses the
    modules and the tests in each, `"shuffle:SEED"` shuffles both with `random.Random(SEED)`. A module's tests stay
    together (module fixtures are made once). `""` keeps pytest's order.
    """
    import random

    if not order:
        return list(items)
    modules = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    groups = list(modules.values())
    if order == "reverse":
        return [item for group in reversed(groups) for item in reversed(group)]
    kind, _, seed = order.partition(":")
    if kind != "shuffle" or not seed.isdigit():
        raise ValueError(f"ASINTROVAE_TEST_ORDER must be 'reverse' or 'shuffle:SEED' (SEED an integer); got {order!r}.")
    rng = random.Random(int(seed))
    rng.shuffle(groups)
    for group in groups:
        rng.shuffle(group)
    return [item for group in groups for item in group]


# ---- launching ranks (tests/training/test_faults.py, tests/training/test_faults_long.py) ---------------------------------------------

def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ranks_env(**extra) -> dict:
    """The environment of a CPU run with Accelerate: no network, one thread per process."""
    return dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                **extra)


def launch_ranks(args, log_path, num_processes=2, machine=None, env=None):
    """
    `accelerate launch` of the training script with `num_processes` gloo ranks on the CPU, in a new session (so that
    the test can signal or kill the whole group), stdout and stderr into `log_path`. `machine = (rank, count, port)`
    launches one node of a multi-node run on 127.0.0.1.
    """
    if machine is None:
        launcher = ["--num_machines", "1", "--main_process_port", str(free_port())]
    else:
        rank, count, port = machine
        launcher = ["--num_machines", str(count), "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                    "--main_process_port", str(port)]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
           *launcher, "--mixed_precision", "no", "--dynamo_backend", "no", str(TRAIN_SCRIPT), *args]
    log = open(log_path, "w")
    try:
        return subprocess.Popen(cmd, env=env or ranks_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        log.close()


def worker_pids(launcher_pid: int, count: int, timeout: float = 120) -> dict:
    """`{rank: pid}` of the training processes a launcher started (its children with a RANK variable)."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        found = {}
        try:
            children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()
        except OSError:
            children = []
        for pid in map(int, children):
            try:
                text = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
                env = dict(item.split("=", 1) for item in text.split("\0") if "=" in item)
            except OSError:
                continue
            if "RANK" in env:
                found[int(env["RANK"])] = pid
        if len(found) == count:
            return found
        time.sleep(0.05)
    raise TimeoutError(f"the launcher {launcher_pid} did not start {count} ranks within {timeout} s")


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, exited but not yet reaped by its parent, counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
