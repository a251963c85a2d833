#!/usr/bin/env python
"""Benchmarks of the library's costly parts, one section each.

    python scripts/benchmark.py                          # every registered section, readable tables
    python scripts/benchmark.py --section as_distance --json > as_distance.json
    python scripts/benchmark.py --section as_distance --batch_sizes 64 256 --latent_dims 32 --threads 2

    python scripts/benchmark.py --section vs_reference --reference_path /tmp/AS-IntroVAE --peak_gflops 78
    python scripts/benchmark.py --section gradient_checkpointing --train_batch_size 32

Sections are registered in `SECTIONS` (name -> function taking the parsed arguments, returning a list of dicts,
one per measured configuration): `as_distance`, `training`, `gradient_checkpointing` and `vs_reference` (run by
`all` only when `--reference_path` is given).

`gradient_checkpointing` runs one AS-IntroVAE training iteration at `rgb64` (3 x 64 x 64, channels 64,128,256,512,
Z 256) with and without `enable_gradient_checkpointing()` on both networks (`--gradient_checkpointing` of the
training script) and reports the peak memory of the iteration (measured as for `as_distance`, below) and its time.

`vs_reference` times a full iteration of the training script (`scripts/train_as_introvae.py`: data loading, both
updates, EMA, logging) against a full iteration of the authors' own loop (`Train_AVAE` in `A_VAE.py`, imported from
the checkout `--reference_path` names, run unmodified), side by side in one process, one iteration of each in turn,
at `digits16` and `mnist28`, batch 32, for each `--precisions` value (the reference under the same autocast) and at
1 thread and all threads (`--reference_threads`). Per loop: the median s/iter (and the fastest and slowest),
images/s, `ratio` (the reference's s/iter over ours: above 1 we are faster), the peak memory of one iteration above
what was allocated when it began, the FLOPs of one iteration (`torch.utils.flop_counter.FlopCounterMode`:
convolutions and matrix products), the achieved GFLOP/s and, with `--peak_gflops` (per CPU core, or per GPU), its
fraction of the peak. `--device cuda` runs both on the GPU (timing synchronised, CUDA memory statistics).

`training` times whole training iterations (`asintrovae_hf.training.train_step`: encoder update then decoder update) of
each objective at two configurations, `digits16` (the built-in default: 1 x 16 x 16, channels 32,64, Z 32) and
`mnist28` (the reference MNIST network: 1 x 28 x 28, channels 64,128, Z 32), in float32 and under bf16 autocast,
and with `--compile` also with `torch.compile`d networks, the objectives' iterations interleaved. It reports
the median seconds per iteration (after warm-up), iterations and images per second, and `as_over_soft`: the AS-IntroVAE iteration time over the
Soft-IntroVAE one of the same configuration (target <= 1.10).

`as_distance` times forward + backward of `asintrovae_hf.as_distance` (sum reduction, `squash=True`: the encoder
step's setting) against a naive broadcast form written below (every `B x B x Z` intermediate materialised and kept
by autograd), and measures the peak memory of that forward + backward:

- On CUDA: `torch.cuda.max_memory_allocated()` minus the memory allocated before the call.
- On the CPU: the same quantity, from the CPU allocator's own events: the call runs once under
  `torch.profiler.profile(profile_memory=True)`, which records every tensor allocation and free (size and time);
  the peak is the maximum of their running sum. This counts exactly the bytes of live tensors, like the CUDA
  figure, and is neither blurred by the rest of the process (as `ru_maxrss` is: the interpreter, torch's own
  libraries and freed-but-cached pages) nor dependent on the C allocator. Profiling slows the call down, so the
  timings come from separate, unprofiled runs (best of `--repeats` after one warm-up run).

The naive form is skipped, with a message, where its estimated peak (`NAIVE_TENSORS` float32 tensors of
`B x B x Z` entries; measured here, see `NAIVE_TENSORS`) exceeds `--max_naive_gib`. Columns: seconds (`_s`) and
peak MiB (`_mib`) of both, `time_ratio` and `mem_ratio` (naive / ours), `ours_err` and `naive_err` (relative error
of each float32 value against `as_distance` evaluated in float64), and `target_met` from `B = 512, Z = 128` up
(our peak memory <= 1/10 of the naive one and our time <= naive's).
"""

import argparse
import contextlib
import importlib
import importlib.machinery
import json
import math
import os
import statistics
import sys
import threading
import time
import types
from typing import Callable, Dict, List, Optional

import torch
from torch.profiler import ProfilerActivity, profile

from asintrovae_hf.objectives.as_distance import as_distance
from asintrovae_hf.process_settings import torch_threads

GIB = 2.0**30
MIB = 2.0**20

# Peak of the naive forward + backward, in float32 tensors of B x B x Z entries, as measured by this script
# (19.0-19.2 for B in 64..512, Z in 32..256): each of the three kernel sums R(a,a), R(b,b), R(a,b) keeps about six
# B x B x Z intermediates alive for the backward pass (a rough "8 tensors" underestimates it by more than 2x).
NAIVE_TENSORS = 19


# ---------------------------------------------------------------------------------------------------------------
# measurement helpers (shared by every section)
# ---------------------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Seconds of the fastest of `repeats` runs of `fn`, after one warm-up run."""
    fn()
    _sync(device)
    best = math.inf
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (the profiler's start/stop lines are written there from C++)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory_bytes(fn: Callable[[], None], device: torch.device) -> int:
    """Peak bytes of tensors allocated by `fn` above what was allocated before it (see the module docstring)."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return max(0, torch.cuda.max_memory_allocated(device) - base)
    if device.type != "cpu":
        raise ValueError(f"peak memory is measured on 'cpu' and 'cuda' devices only, got {device.type!r}.")
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return _peak_from_events(prof)


# ---------------------------------------------------------------------------------------------------------------
# section: as_distance
# ---------------------------------------------------------------------------------------------------------------


def naive_as_distance(mu_a, logvar_a, mu_b, logvar_b, squash: bool = True) -> torch.Tensor:
    """The broadcast form of the AS-Distance (sum reduction): every `B x B x Z` intermediate is materialised."""
    if squash:
        mu_a, logvar_a, mu_b, logvar_b = (torch.tanh(t) for t in (mu_a, logvar_a, mu_b, logvar_b))

    def kernel_sum(mu_u, logvar_u, mu_v, logvar_v):
        diff = mu_u.unsqueeze(1) - mu_v.unsqueeze(0)
        var_sum = logvar_u.exp().unsqueeze(1) + logvar_v.exp().unsqueeze(0)
        return (torch.exp(-0.5 * diff.pow(2) / var_sum) / var_sum.sqrt()).sum()

    return (
        kernel_sum(mu_a, logvar_a, mu_a, logvar_a)
        + kernel_sum(mu_b, logvar_b, mu_b, logvar_b)
        - 2.0 * kernel_sum(mu_a, logvar_a, mu_b, logvar_b)
    )


def benchmark_as_distance(
    batch_sizes=(64, 256, 512, 1024),
    latent_dims=(32, 128, 256),
    device: str = "cpu",
    repeats: int = 3,
    max_naive_gib: float = 8.0,
    chunk_size: Optional[int] = None,
    seed: int = 0,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
) -> List[Dict]:
    """
    Time and peak memory of forward + backward of `as_distance` (sum, `squash=True`) and of the naive broadcast
    form, for each `B` in `batch_sizes` and `Z` in `latent_dims` (both batches of size `B`). Returns one dict per
    `(B, Z)`: seconds and MiB for both (`None` where the naive form was skipped, with the reason in `note`), their
    ratios naive / ours, and the relative errors of both float32 values against a float64 evaluation.
    """
    device = torch.device(device)
    rows = []
    for b in batch_sizes:
        for z in latent_dims:
            gen = torch.Generator().manual_seed(seed)
            inputs = [torch.randn(b, z, generator=gen).to(device).requires_grad_() for _ in range(4)]

            def step(fn):
                def run():  # forward + backward; the gradients are freed on return
                    torch.autograd.grad(fn(*inputs), inputs)

                return run

            ours = step(lambda *x: as_distance(*x, reduction="sum", squash=True, chunk_size=chunk_size))
            naive = step(naive_as_distance)
            row = {"section": "as_distance", "device": str(device), "threads": torch.get_num_threads(), "B": b, "Z": z}
            with torch.no_grad():
                value = float(as_distance(*inputs, reduction="sum", squash=True, chunk_size=chunk_size))
                # float64 reference (as_distance in float64 matches a float64 broadcast form to ~1e-12: see tests)
                exact = float(as_distance(*(t.double() for t in inputs), reduction="sum", squash=True))
            row["ours_s"] = time_call(ours, device, repeats)
            row["ours_mib"] = peak_memory_bytes(ours, device) / MIB
            estimate_gib = NAIVE_TENSORS * b * b * z * 4 / GIB
            row.update(naive_s=None, naive_mib=None, time_ratio=None, mem_ratio=None, note="")
            row["ours_err"] = abs(value - exact) / max(abs(exact), 1e-30)
            row["naive_err"] = None
            if estimate_gib > max_naive_gib:
                row["note"] = f"naive skipped: estimated {estimate_gib:.1f} GiB > --max_naive_gib {max_naive_gib:g}"
                log(f"B={b} Z={z}: {row['note']}")
            else:
                with torch.no_grad():
                    naive_value = float(naive_as_distance(*inputs))
                row["naive_s"] = time_call(naive, device, repeats)
                row["naive_mib"] = peak_memory_bytes(naive, device) / MIB
                row["time_ratio"] = row["naive_s"] / row["ours_s"]
                row["mem_ratio"] = row["naive_mib"] / max(row["ours_mib"], 1e-9)
                row["naive_err"] = abs(naive_value - exact) / max(abs(exact), 1e-30)
            row["value"], row["value_float64"] = value, exact
            log(f"B={b} Z={z}: ours {row['ours_s']:.3f} s {row['ours_mib']:.1f} MiB"
                + ("" if row["naive_s"] is None else f", naive {row['naive_s']:.3f} s {row['naive_mib']:.1f} MiB"))
            rows.append(row)
    return rows


def _section_as_distance(args) -> List[Dict]:
    rows = benchmark_as_distance(
        batch_sizes=args.batch_sizes,
        latent_dims=args.latent_dims,
        device=args.device,
        repeats=args.repeats,
        max_naive_gib=args.max_naive_gib,
        chunk_size=args.chunk_size,
        seed=args.seed,
    )
    # the target: from B = 512, Z = 128 up, our peak memory <= 1/10 of the naive one and our time <= naive's
    for row in rows:
        if row["B"] >= 512 and row["Z"] >= 128 and row["mem_ratio"] is not None:
            row["target_met"] = bool(row["mem_ratio"] >= 10.0 and row["time_ratio"] >= 1.0)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# training iterations
# ---------------------------------------------------------------------------------------------------------------

TRAINING_CONFIGS = {
    # name: (channels, size, block_out_channels, latent_dim)
    "digits16": (1, 16, (32, 64), 32),
    "mnist28": (1, 28, (64, 128), 32),
    "rgb64": (3, 64, (64, 128, 256, 512), 256),
}


def _training_setup(objective_name, config_name, batch_size, device, compile_models, seed):
    from asintrovae_hf import AsIntroVAEDecoder, AsIntroVAEEncoder, IntrospectiveObjective

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
    from asintrovae_hf import train_step

    objective, encoder, decoder, opt_e, opt_d, x, latent_dim = setup
    device_type = torch.device(device).type
    start = time.perf_counter()
    with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        terms = train_step(objective, encoder, decoder, opt_e, opt_d, x, latent_dim, c=0.5,
                           vae_step=objective.config.objective == "vae")
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


def _section_training(args) -> List[Dict]:
    rows = []
    objectives = ("vae", "introvae", "soft-introvae", "as-introvae")
    for config_name in args.training_configs:
        for dtype in (None, torch.bfloat16):
            for compile_models in ((False, True) if args.compile else (False,)):
                group = time_training(objectives, config_name, args.train_batch_size, args.device, dtype,
                                      compile_models, iters=args.train_iters, warmup=args.train_warmup,
                                      seed=args.seed)
                ratio = group[3]["s_per_iter"] / group[2]["s_per_iter"]
                for row in group:
                    row["as_over_soft"] = ratio
                    row["target_met"] = ratio <= 1.10
                print(f"{config_name} {group[0]['precision']} compile={compile_models}: AS/Soft = {ratio:.3f}",
                      file=sys.stderr, flush=True)
                rows += group
    return rows


def _section_gradient_checkpointing(args) -> List[Dict]:
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


# ---------------------------------------------------------------------------------------------------------------
# section: vs_reference -- a full iteration of the training script against one of the authors' training loop
# ---------------------------------------------------------------------------------------------------------------
#
# Both loops run unmodified, each in its own thread of this process, and take turns: one iteration of this
# package's loop (`asintrovae_hf.training.loop`, what `scripts/train_as_introvae.py` runs), then one of the reference's
# `Train_AVAE`, and so on. An iteration is timed from the moment its loop asks its data loader for a batch to the
# moment it asks for the next one: data loading, both updates, EMA, logging and whatever else the loop does. The
# turn passes only at those moments (and set-up and the end of a run hold it too), so the two never compute at
# the same time and a change in the machine's load hits both alike.
#
# The reference needs stand-ins for what it cannot have here, and only those: `torchvision` when it cannot be
# imported (a stub whose `utils.save_image` does nothing), its `get_dataset` (MNIST download) replaced by the
# built-in digits resized in memory, and, where missing, `metrics.fid_score` (imported, unused by `Train_AVAE`, not
# in its repository), `matplotlib` and `tkinter` (used only after the last iteration). Nothing of it is copied here.

REFERENCE_MODULES = ("A_VAE", "utils", "models", "arch", "dataset")


class _Turns:
    """Lets training loops in several threads run one at a time, in a fixed rotation."""

    def __init__(self, names):
        self._cond = threading.Condition()
        self._order = list(names)
        self._turn = 0
        self._done = set()

    def wait(self, name: str) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._order[self._turn] == name)

    def pass_on(self, name: str, done: bool = False) -> None:
        with self._cond:
            if done:
                self._done.add(name)
            if self._order[self._turn] != name:
                return
            for k in range(1, len(self._order) + 1):
                candidate = (self._turn + k) % len(self._order)
                if self._order[candidate] not in self._done:
                    self._turn = candidate
                    break
            self._cond.notify_all()


class _Lane:
    """
    One loop's clock. [`wrap`] its data loader: each batch request ends an iteration and starts the next. Iteration
    0 is a warm-up; iteration `measure_iteration` (1) counts FLOPs (`FlopCounterMode`) and the peak memory above what
    was allocated when it began (CUDA: `max_memory_allocated`; CPU: the profiler's allocation events); the later ones
    are timed.
    """

    def __init__(self, name: str, turns: _Turns, device: torch.device, measure_iteration: int = 1):
        self.name, self.turns, self.device = name, turns, device
        self.measure_iteration = measure_iteration
        self.times: List[float] = []
        self.flops: Optional[int] = None
        self.peak_bytes: Optional[int] = None
        self.error: Optional[BaseException] = None
        self._index, self._t0, self._open = 0, None, False
        self._flop_mode = self._profiler = None
        self._base_bytes = 0

    def _begin(self) -> None:
        _sync(self.device)
        self._open = True
        if self._index == self.measure_iteration:
            from torch.utils.flop_counter import FlopCounterMode

            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
                self._base_bytes = torch.cuda.memory_allocated(self.device)
            else:
                with _quiet_stderr():
                    self._profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
                    self._profiler.start()
            self._flop_mode = FlopCounterMode(display=False)
            self._flop_mode.__enter__()
        self._t0 = time.perf_counter()

    def _end(self, record: bool = True) -> None:
        if not self._open:
            return
        _sync(self.device)
        seconds = time.perf_counter() - self._t0
        self._open = False
        if self._flop_mode is not None:
            self._flop_mode.__exit__(None, None, None)
            self.flops = self._flop_mode.get_total_flops() if record else None
            self._flop_mode = None
            if self.device.type == "cuda":
                self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base_bytes
            else:
                with _quiet_stderr():
                    self._profiler.stop()
                self.peak_bytes = _peak_from_events(self._profiler)
                self._profiler = None
        elif record and self._index > self.measure_iteration:
            self.times.append(seconds)
        self._index += 1

    def wrap(self, iterable):
        """Yield from `iterable`, each iteration timed; the turn passes to the other loop between iterations."""
        it = iter(iterable)
        try:
            while True:
                self._begin()
                try:
                    item = next(it)
                except StopIteration:
                    return
                yield item
                self._end()
                self.turns.pass_on(self.name)
                self.turns.wait(self.name)
        finally:  # the loop ended or stopped asking (a `break`): the iteration just begun is not one
            self._end(record=False)

    def run(self, fn, threads: int) -> threading.Thread:
        """Run `fn()` (a whole training run) in a thread that starts and ends holding the turn."""

        def target():
            with torch_threads(threads):
                self.turns.wait(self.name)
                try:
                    fn()
                except BaseException as err:  # reported by the caller
                    self.error = err
                finally:
                    self._end(record=False)
                    self.turns.pass_on(self.name, done=True)

        thread = threading.Thread(target=target, name=self.name, daemon=True)
        thread.start()
        return thread


def _peak_from_events(prof) -> int:
    """Peak of the running sum of the CPU allocations and frees a profiler recorded (frees first at equal times)."""
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: (e.start_ns(), e.nbytes()))
    live = peak = 0
    for e in events:
        if e.device_type() == torch.autograd.DeviceType.CPU:
            live += e.nbytes()
            peak = max(peak, live)
    return peak


def _digits_images(size: int) -> torch.Tensor:
    """The built-in digits as `N x 1 x size x size` floats in [0, 1], transformed as the training script does."""
    from asintrovae_hf.data import ImageTransform, load_digits_dataset

    transform = ImageTransform(size, 1, center_crop=True)
    return torch.stack([transform(image) for image in load_digits_dataset()["image"]])


class _InMemoryLoader:
    """`iters` shuffled batches of `(images, labels)` from memory, as the reference's MNIST loader yields them."""

    def __init__(self, images: torch.Tensor, batch_size: int, iters: int, lane: _Lane):
        self.images, self.batch_size, self.iters, self.lane = images, batch_size, iters, lane

    def __len__(self) -> int:
        return self.iters

    def _batches(self):
        generator = torch.Generator().manual_seed(0)
        order = torch.empty(0, dtype=torch.long)
        for _ in range(self.iters):
            while len(order) < self.batch_size:
                order = torch.cat([order, torch.randperm(len(self.images), generator=generator)])
            index, order = order[: self.batch_size], order[self.batch_size:]
            yield self.images[index], torch.zeros(self.batch_size, dtype=torch.long)

    def __iter__(self):
        return self.lane.wrap(self._batches())


def _stub_module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attributes)
    return module


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except Exception:  # noqa: BLE001 - torchvision fails with RuntimeError beside a mismatched torch
        return False


@contextlib.contextmanager
def _reference_import_path(path: str):
    """Import the reference's top-level modules (`utils`, `models`, ...) from `path`, with the stand-ins in place."""
    from unittest import mock

    saved = {name: sys.modules.pop(name) for name in REFERENCE_MODULES if name in sys.modules}
    stubs = {}
    if not _importable("torchvision"):
        nothing = lambda *args, **kwargs: None  # noqa: E731
        datasets_stub = _stub_module("torchvision.datasets", **{n: nothing for n in
                                                               ("CIFAR10", "MNIST", "FashionMNIST", "SVHN", "LSUN")})
        transforms_stub = _stub_module("torchvision.transforms", ToTensor=nothing, Compose=nothing, Resize=nothing,
                                       CenterCrop=nothing, RandomCrop=nothing, RandomHorizontalFlip=nothing)
        utils_stub = _stub_module("torchvision.utils", save_image=nothing, make_grid=nothing)
        stubs.update({"torchvision": _stub_module("torchvision", utils=utils_stub, datasets=datasets_stub,
                                                  transforms=transforms_stub),
                      "torchvision.utils": utils_stub, "torchvision.datasets": datasets_stub,
                      "torchvision.transforms": transforms_stub})
    if not os.path.isdir(os.path.join(path, "metrics")):
        fid = _stub_module("metrics.fid_score", calculate_fid_given_dataset=lambda *a, **k: float("nan"))
        stubs.update({"metrics": _stub_module("metrics", fid_score=fid), "metrics.fid_score": fid})
    if not _importable("matplotlib"):
        pyplot = mock.MagicMock(name="matplotlib.pyplot")
        stubs.update({"matplotlib": _stub_module("matplotlib", use=lambda *a, **k: None, pyplot=pyplot),
                      "matplotlib.pyplot": pyplot})
    if not _importable("tkinter"):
        stubs["tkinter"] = _stub_module("tkinter", Variable=object)
    missing = [name for name in stubs if name not in sys.modules]
    sys.modules.update({name: stubs[name] for name in missing})
    sys.path.insert(0, path)
    try:
        yield
    finally:
        # the reference's modules keep what they imported; the process (diffusers' own checks for torchvision)
        # does not see the stand-ins
        sys.path.remove(path)
        for name in (*REFERENCE_MODULES, *missing):
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def load_reference_loop(path: str):
    """The reference's `A_VAE` module (its `Train_AVAE` loop), imported from a checkout at `path`."""
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(os.path.join(path, "A_VAE.py")):
        raise FileNotFoundError(f"--reference_path {path!r} holds no A_VAE.py: give a checkout of the authors' "
                                f"AS-IntroVAE repository.")
    with _reference_import_path(path):
        return importlib.import_module("A_VAE")


def _run_reference(a_vae, lane: _Lane, config_name: str, batch_size: int, iters: int, device: torch.device,
                   autocast_dtype, workdir: str):
    channels, size, blocks, latent_dim = TRAINING_CONFIGS[config_name]
    images = _digits_images(size)
    loader = _InMemoryLoader(images, batch_size, iters, lane)
    # the reference's own data set-up, MNIST downloaded and wrapped in a DataLoader, becomes the digits in memory
    a_vae.get_dataset = lambda dataset, batch_size, num_workers: (channels, list(blocks), size, loader)
    os.makedirs(os.path.join(workdir, "plot_loss"), exist_ok=True)
    precision = contextlib.nullcontext() if autocast_dtype is None else torch.autocast(device.type, autocast_dtype)
    with precision:
        a_vae.Train_AVAE(dataset="mnist", z_dim=latent_dim, lr_d=2e-4, lr_g=2e-4, batch_size=batch_size,
                         num_workers=0, num_epochs=1, num_vae=0, save_interval=10**9, recon_loss_type="mse",
                         beta_kl=1.0, beta_rec=1.0, beta_neg=256.0, test_iter=10**9, seed=-1, device=device,
                         gamma_r=1e-8, with_fid=False, device_ids=[device.index or 0] if device.type == "cuda" else [])


def _run_package(lane: _Lane, config_name: str, batch_size: int, iters: int, device: torch.device, precision: str,
                 workdir: str, extra_args=()):
    from accelerate.state import AcceleratorState

    from asintrovae_hf.training import loop as training
    from asintrovae_hf.training.args import parse_args

    channels, size, blocks, latent_dim = TRAINING_CONFIGS[config_name]
    # the reference's MNIST settings (its math: the "reference" preset, beta_neg 256)
    args = parse_args(["--resolution", str(size), "--num_channels", str(channels), "--latent_dim", str(latent_dim),
                       "--block_out_channels", ",".join(map(str, blocks)), "--train_batch_size", str(batch_size),
                       "--max_train_steps", str(iters), "--preset", "reference", "--beta_neg", "256",
                       "--mixed_precision", precision, "--report_to", "none", "--output_dir",
                       os.path.join(workdir, "package"), *extra_args])
    AcceleratorState._reset_state(reset_partial_state=True)
    original = training._step_batches
    training._step_batches = lambda run: lane.wrap(original(run))
    try:
        training.train(args)
    finally:
        training._step_batches = original
        AcceleratorState._reset_state(reset_partial_state=True)


def compare_with_reference(a_vae, config_name: str, batch_size: int, iters: int, device: torch.device,
                           precision: str, threads: int, extra_args=()) -> List[Dict]:
    """
    One side-by-side run: this package's training script and the reference loop, `iters` iterations each in turn
    (the first two measure FLOPs and memory, not time). Returns a row per loop.
    """
    import tempfile

    autocast_dtype = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    turns = _Turns(["asintrovae-hf", "reference"])
    lanes = {name: _Lane(name, turns, device) for name in ("asintrovae-hf", "reference")}
    env = {"ACCELERATE_USE_CPU": "true" if device.type == "cpu" else "false", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    saved_env = {k: os.environ.get(k) for k in env}
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="asintrovae-bench-") as workdir:
        os.environ.update(env)
        os.chdir(workdir)  # the reference writes into its working directory
        log = open(os.path.join(workdir, "loops.log"), "w")
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                torch.set_num_threads(threads)
                jobs = [
                    lanes["asintrovae-hf"].run(lambda: _run_package(lanes["asintrovae-hf"], config_name, batch_size,
                                                                    iters + 2, device, precision, workdir,
                                                                    extra_args), threads),
                    lanes["reference"].run(lambda: _run_reference(a_vae, lanes["reference"], config_name, batch_size,
                                                                  iters + 2, device, autocast_dtype, workdir),
                                           threads),
                ]
                for job in jobs:
                    job.join()
        finally:
            log.close()
            os.chdir(cwd)
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            with open(os.path.join(workdir, "loops.log")) as f:
                tail = f.read()[-3000:]
    rows = []
    for name, lane in lanes.items():
        if lane.error is not None:
            raise RuntimeError(f"The {name} loop failed: {one_line_error(lane.error)}\n--- its output ---\n{tail}") \
                from lane.error
        seconds = statistics.median(lane.times) if lane.times else float("nan")
        rows.append({"section": "vs_reference", "device": str(device), "threads": threads, "config": config_name,
                     "batch": batch_size, "precision": "fp32" if precision == "no" else precision,
                     "implementation": name, "iters": len(lane.times), "s_per_iter": seconds,
                     "s_min": min(lane.times, default=float("nan")), "s_max": max(lane.times, default=float("nan")),
                     "images_per_s": batch_size / seconds,
                     "peak_mib": None if lane.peak_bytes is None else lane.peak_bytes / MIB,
                     "gflop_per_iter": None if lane.flops is None else lane.flops / 1e9})
    ours, ref = rows
    for row in rows:
        row["ratio"] = ref["s_per_iter"] / ours["s_per_iter"]  # reference time / ours: > 1 means we are faster
    return rows


def one_line_error(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def _section_vs_reference(args) -> List[Dict]:
    if not args.reference_path:
        raise SystemExit("--section vs_reference needs --reference_path: a local checkout of the authors' "
                         "AS-IntroVAE code (e.g. `git clone <its repository> /tmp/AS-IntroVAE`).")
    try:
        a_vae = load_reference_loop(args.reference_path)
    except (FileNotFoundError, ImportError) as err:
        raise SystemExit(f"Cannot import the reference loop: {err}") from None
    device = torch.device(args.device)
    threads_list = sorted(set(args.reference_threads or [1, os.cpu_count() or 1]))
    rows = []
    for threads in threads_list:
        for config_name in args.training_configs:
            for precision in args.precisions:
                print(f"vs_reference: {config_name} {precision} {threads} thread(s) ...", file=sys.stderr, flush=True)
                pair = compare_with_reference(a_vae, config_name, args.reference_batch_size, args.reference_iters,
                                              device, precision, threads)
                for row in pair:
                    if row["gflop_per_iter"] is not None:
                        row["gflops"] = row["gflop_per_iter"] / row["s_per_iter"]
                        if args.peak_gflops:  # per core on the CPU, per device on a GPU
                            peak = args.peak_gflops * (threads if device.type == "cpu" else 1)
                            row["peak_fraction"] = row["gflops"] / peak
                print(f"  ours {pair[0]['s_per_iter']:.3f} s/iter, reference {pair[1]['s_per_iter']:.3f} s/iter: "
                      f"ratio {pair[0]['ratio']:.3f}", file=sys.stderr, flush=True)
                rows += pair
    return rows


# ---------------------------------------------------------------------------------------------------------------
# the sections, by name. Each takes the parsed arguments and returns a list of dicts (one per configuration).
# ---------------------------------------------------------------------------------------------------------------

SECTIONS: Dict[str, Callable[[argparse.Namespace], List[Dict]]] = {
    "as_distance": _section_as_distance,
    "training": _section_training,
    "vs_reference": _section_vs_reference,
    "gradient_checkpointing": _section_gradient_checkpointing,
}


# ---------------------------------------------------------------------------------------------------------------
# output and command line
# ---------------------------------------------------------------------------------------------------------------


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return f"{value:.2e}"
    return str(value)


def format_table(rows: List[Dict], columns: Optional[List[str]] = None) -> str:
    """A plain-text table of `rows` (missing entries shown as `-`)."""
    if not rows:
        return "(no rows)"
    if columns is None:
        columns = []
        for row in rows:
            columns += [k for k in row if k not in columns]
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


TABLE_COLUMNS = {
    "as_distance": ["B", "Z", "ours_s", "naive_s", "time_ratio", "ours_mib", "naive_mib", "mem_ratio", "ours_err",
                    "naive_err", "target_met", "note"],
    "training": ["config", "objective", "batch", "precision", "compile", "s_per_iter", "iters_per_s", "images_per_s",
                 "as_over_soft", "target_met"],
    "gradient_checkpointing": ["config", "batch", "checkpointing", "s_per_iter", "peak_mib", "memory_ratio",
                               "time_ratio"],
    "vs_reference": ["config", "precision", "threads", "implementation", "iters", "s_per_iter", "s_min", "s_max",
                     "images_per_s", "ratio", "peak_mib", "gflop_per_iter", "gflops", "peak_fraction"],
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--section", default="all", choices=list(SECTIONS) + ["all"],
                   help="Which benchmark to run; `all` runs every registered section.")
    p.add_argument("--json", action="store_true",
                   help="Print the results as one JSON list on stdout (the tables then go to stderr).")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads; 1 by default because the machine is shared.")
    p.add_argument("--device", default="cpu", help="`cpu` or `cuda` (`cuda:N`).")
    p.add_argument("--repeats", type=int, default=3, help="Timed runs per measurement (the fastest is reported).")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("as_distance")
    g.add_argument("--batch_sizes", type=int, nargs="+", default=[64, 256, 512, 1024])
    g.add_argument("--latent_dims", type=int, nargs="+", default=[32, 128, 256])
    g.add_argument("--max_naive_gib", type=float, default=8.0,
                   help="Skip the naive form where its estimated peak memory exceeds this many GiB.")
    g.add_argument("--chunk_size", type=int, default=None, help="as_distance's chunk_size (default: its own).")
    g = p.add_argument_group("training")
    g.add_argument("--training_configs", nargs="+", default=list(TRAINING_CONFIGS), choices=list(TRAINING_CONFIGS))
    g.add_argument("--train_batch_size", type=int, default=64)
    g.add_argument("--train_iters", type=int, default=10, help="Timed iterations (the median is reported).")
    g.add_argument("--train_warmup", type=int, default=3)
    g.add_argument("--compile", action="store_true", help="Also time torch.compile'd networks (slow to compile).")
    g = p.add_argument_group("gradient_checkpointing (also uses --train_batch_size)")
    g.add_argument("--checkpointing_configs", nargs="+", default=["rgb64"], choices=list(TRAINING_CONFIGS))
    g = p.add_argument_group("vs_reference (also uses --training_configs)")
    g.add_argument("--reference_path", default=None,
                   help="A local checkout of the authors' AS-IntroVAE code; its Train_AVAE loop is imported from there.")
    g.add_argument("--reference_iters", type=int, default=5,
                   help="Timed iterations of each loop (after one warm-up and one measuring FLOPs and memory).")
    g.add_argument("--reference_batch_size", type=int, default=32)
    g.add_argument("--precisions", nargs="+", default=["no", "bf16"], choices=["no", "bf16", "fp16"],
                   help="--mixed_precision values of the training script; the reference runs under the same autocast.")
    g.add_argument("--reference_threads", type=int, nargs="+", default=None,
                   help="Thread counts to compare at (default: 1 and all the CPU's threads).")
    g.add_argument("--peak_gflops", type=float, default=None,
                   help="Peak GFLOP/s of one CPU core (times the thread count) or of the GPU: adds the achieved "
                        "fraction of it.")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available here (torch {torch.__version__}, "
                f"built {'with' if torch.version.cuda else 'without'} CUDA). Use --device cpu.")
    if device.type not in ("cpu", "cuda"):
        p.error(f"--device must be cpu or cuda[:N], got {args.device!r}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    with torch_threads(args.threads):
        return _main(args)


def _main(args) -> int:
    if args.section == "all":
        names = [name for name in SECTIONS if name != "vs_reference" or args.reference_path]
    elif args.section in SECTIONS:
        names = [args.section]
    else:
        print(f"The {args.section!r} section is not implemented yet (register it in SECTIONS in {__file__}).",
              file=sys.stderr)
        return 2
    out = sys.stderr if args.json else sys.stdout
    results = []
    for name in names:
        rows = SECTIONS[name](args)
        results += rows
        print(f"\n== {name} ({args.device}, {torch.get_num_threads()} thread(s), times: best of {args.repeats}) ==",
              file=out)
        print(format_table(rows, TABLE_COLUMNS.get(name)), file=out, flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
