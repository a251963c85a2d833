"""
Whole training iterations (`asintrovae_hf.training.train_step`: encoder update then decoder update), in two
sections.

`training` times each objective's iteration at two configurations, `digits16` (the built-in default:
1 x 16 x 16, channels 32,64, Z 32) and `mnist28` (the reference MNIST network: 1 x 28 x 28, channels 64,128, Z 32),
in float32 and under bf16 autocast, and with `--compile` also with `torch.compile`d networks, the objectives'
iterations interleaved. It reports the median seconds per iteration (after warm-up), iterations and images per
second, and `as_over_soft`: the AS-IntroVAE iteration time over the Soft-IntroVAE one of the same configuration
(target <= 1.10).

`gradient_checkpointing` runs one AS-IntroVAE training iteration at `rgb64` (3 x 64 x 64, channels
64,128,256,512, Z 256) with and without `enable_gradient_checkpointing()` on both networks
(`--gradient_checkpointing` of the training script) and reports the peak memory of the iteration
(`measure.peak_memory_bytes`) and its time (best of `--repeats` after one warm-up run).
"""

import statistics
import sys
import time
from typing import Dict, List

import torch

from ..models.autoencoders import AsIntroVAEDecoder, AsIntroVAEEncoder
from ..objectives.introspective import IntrospectiveObjective
from ..objectives.registry import objective_names
from ..training.train_step import train_step
from .measure import peak_memory_bytes, time_call

TRAINING_CONFIGS = {
    # name: (channels, size, block_out_channels, latent_dim)
    "digits16": (1, 16, (32, 64), 32),
    "mnist28": (1, 28, (64, 128), 32),
    "rgb64": (3, 64, (64, 128, 256, 512), 256),
}

TRAINING_COLUMNS = ["config", "objective", "batch", "precision", "compile", "s_per_iter", "iters_per_s",
                    "images_per_s", "as_over_soft", "target_met"]
CHECKPOINTING_COLUMNS = ["config", "batch", "checkpointing", "s_per_iter", "peak_mib", "memory_ratio", "time_ratio"]


def _training_setup(objective_name, config_name, batch_size, device, compile_models, seed):
    channels, size, blocks, latent_dim = TRAINING_CONFIGS[config_name]
    torch.manual_seed(seed)
    kw = dict(sample_size=size, latent_dim=latent_dim, block_out_channels=blocks)
    encoder = AsIntroVAEEncoder(in_channels=channels, **kw).to(device)
    decoder = AsIntroVAEDecoder(out_channels=channels, **kw).to(device)
    opt_e = torch.optim.Adam(encoder.parameters(), 2e-4)
    opt_d = torch.optim.Adam(decoder.parameters(), 2e-4)
    if compile_models:
        encoder, decoder = torch.compile(encoder), torch.compile(decoder)
    objective = IntrospectiveObjective(objective=objective_name)
    x = torch.rand(batch_size, channels, size, size, device=device)
    return objective, encoder, decoder, opt_e, opt_d, x, latent_dim


def _one_step(setup, device, autocast_dtype) -> float:
    objective, encoder, decoder, opt_e, opt_d, x, latent_dim = setup
    device_type = torch.device(device).type
    start = time.perf_counter()
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        terms = train_step(objective, encoder, decoder, opt_e, opt_d, x, latent_dim, c=0.5)
    if device_type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert all(torch.isfinite(v).all() for v in terms.values()), f"non-finite loss in {objective.config.objective}"
    return seconds


def time_training(objectives, config_name, batch_size, device, autocast_dtype=None, compile_models=False,
                  iters=10, warmup=3, seed=0) -> List[Dict]:
    """
    Median seconds of one `train_step` per objective at `config_name` (fixed batch, c = 0.5). The objectives'
    iterations are interleaved (one step of each in turn), so a change in the machine's load hits all of them alike
    and their ratios stay meaningful on a shared machine.
    """
    setups = {name: _training_setup(name, config_name, batch_size, device, compile_models, seed) for name in objectives}
    times = {name: [] for name in objectives}
    for i in range(warmup + iters):
        for name in objectives:
            seconds = _one_step(setups[name], device, autocast_dtype)
            if i >= warmup:
                times[name].append(seconds)
    rows = []
    for name in objectives:
        seconds = statistics.median(times[name])
        rows.append({"config": config_name, "objective": name, "batch": batch_size,
                     "precision": "bf16-autocast" if autocast_dtype is not None else "fp32",
                     "compile": "on" if compile_models else "off", "s_per_iter": seconds,
                     "iters_per_s": 1.0 / seconds, "images_per_s": batch_size / seconds})
    return rows


def section_training(args) -> List[Dict]:
    """The `training` section: every objective per configuration, precision and compile setting."""
    rows = []
    objectives = objective_names()[::-1]  # every registered objective, the simplest built-in first
    for config_name in args.training_configs:
        for dtype in (None, torch.bfloat16):
            for compile_models in ((False, True) if args.compile else (False,)):
                group = time_training(objectives, config_name, args.train_batch_size, args.device, dtype,
                                      compile_models, iters=args.train_iters, warmup=args.train_warmup,
                                      seed=args.seed)
                seconds = {row["objective"]: row["s_per_iter"] for row in group}
                ratio = seconds["as-introvae"] / seconds["soft-introvae"]
                for row in group:
                    row["as_over_soft"] = ratio
                    row["target_met"] = ratio <= 1.10
                print(f"{config_name} {group[0]['precision']} compile={compile_models}: AS/Soft = {ratio:.3f}",
                      file=sys.stderr, flush=True)
                rows += group
    return rows


def section_gradient_checkpointing(args) -> List[Dict]:
    """
    One AS-IntroVAE `train_step` with and without gradient checkpointing (`enable_gradient_checkpointing()` on both
    networks): the peak memory of the step (activations, gradients; the Adam state exists already) and its time.
    """
    rows = []
    for config_name in args.checkpointing_configs:
        pair = []
        for enabled in (False, True):
            setup = _training_setup("as-introvae", config_name, args.train_batch_size, args.device, False, args.seed)
            if enabled:
                setup[1].enable_gradient_checkpointing()
                setup[2].enable_gradient_checkpointing()
            step = lambda: _one_step(setup, args.device, None)  # noqa: E731
            step()  # the Adam state is allocated by the first step
            peak = peak_memory_bytes(step, torch.device(args.device))
            seconds = time_call(step, torch.device(args.device), args.repeats)
            pair.append({"config": config_name, "batch": args.train_batch_size,
                         "checkpointing": "on" if enabled else "off", "s_per_iter": seconds,
                         "peak_mib": peak / 2 ** 20})
        off, on = pair
        for row in pair:
            row["memory_ratio"] = off["peak_mib"] / on["peak_mib"]
            row["time_ratio"] = on["s_per_iter"] / off["s_per_iter"]
        rows += pair
    return rows
