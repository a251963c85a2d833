"""
The `vs_reference` section: a full iteration of the training script (`scripts/train_as_introvae.py`, i.e.
`asintrovae_hf.training.loop`: data loading, both updates, EMA, logging) against a full iteration of the authors'
own loop (`Train_AVAE` in `A_VAE.py`, imported from the checkout `--reference_path` names, run unmodified), side by
side in one process, one iteration of each in turn, at `digits16` and `mnist28`, batch 32, for each `--precisions`
value (the reference under the same autocast) and at 1 thread and all threads (`--reference_threads`). Per loop:
the median s/iter (and the fastest and slowest), images/s, `ratio` (the reference's s/iter over ours: above 1 we
are faster), the peak memory of one iteration above what was allocated when it began, the FLOPs of one iteration
(`torch.utils.flop_counter.FlopCounterMode`: convolutions and matrix products), the achieved GFLOP/s and, with
`--peak_gflops` (per CPU core, or per GPU), its fraction of the peak. `--device cuda` runs both on the GPU (timing
synchronised, CUDA memory statistics).

Both loops run unmodified, each in its own thread of this process, and take turns (`_Turns`, `_Lane`): one
iteration of this package's loop, then one of the reference's `Train_AVAE`, and so on. An iteration is timed from
the moment its loop asks its data loader for a batch to the moment it asks for the next one: data loading, both
updates, EMA, logging and whatever else the loop does. The turn passes only at those moments (and set-up and the
end of a run hold it too), so the two never compute at the same time and a change in the machine's load hits both
alike.

The reference needs stand-ins for what it cannot have here, and only those: `torchvision` when it cannot be
imported (a stub whose `utils.save_image` does nothing), its `get_dataset` (MNIST download) replaced by the
built-in digits resized in memory, and, where missing, `metrics.fid_score` (imported, unused by `Train_AVAE`, not
in its repository), `matplotlib` and `tkinter` (used only after the last iteration). Nothing of it is copied here.
"""

import contextlib
import importlib
import importlib.machinery
import os
import statistics
import sys
import threading
import time
import types
from typing import Dict, List, Optional

import torch
from torch.profiler import ProfilerActivity, profile

from ...process_settings import torch_threads
from .measure import MIB, peak_from_events, quiet_stderr, sync
from .iteration_speed import TRAINING_CONFIGS

COLUMNS = ["config", "precision", "threads", "implementation", "iters", "s_per_iter", "s_min", "s_max",
           "images_per_s", "ratio", "peak_mib", "gflop_per_iter", "gflops", "peak_fraction"]

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
        sync(self.device)
        self._open = True
        if self._index == self.measure_iteration:
            from torch.utils.flop_counter import FlopCounterMode

            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
                self._base_bytes = torch.cuda.memory_allocated(self.device)
            else:
                with quiet_stderr():
                    self._profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
                    self._profiler.start()
            self._flop_mode = FlopCounterMode(display=False)
            self._flop_mode.__enter__()
        self._t0 = time.perf_counter()

    def _end(self, record: bool = True) -> None:
        if not self._open:
            return
        sync(self.device)
        seconds = time.perf_counter() - self._t0
        self._open = False
        if self._flop_mode is not None:
            self._flop_mode.__exit__(None, None, None)
            self.flops = self._flop_mode.get_total_flops() if record else None
            self._flop_mode = None
            if self.device.type == "cuda":
                self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base_bytes
            else:
                with quiet_stderr():
                    self._profiler.stop()
                self.peak_bytes = peak_from_events(self._profiler)
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


def _digits_images(size: int) -> torch.Tensor:
    """The built-in digits as `N x 1 x size x size` floats in [0, 1], transformed as the training script does."""
    from ...data import ImageTransform, load_digits_dataset

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

    from ...training import loop as training
    from ...training.args import parse_args

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


def section_vs_reference(args) -> List[Dict]:
    """The `vs_reference` section: `compare_with_reference` per thread count, configuration and precision."""
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
