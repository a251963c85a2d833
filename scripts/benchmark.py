#!/usr/bin/env python
"""Benchmarks of the library's costly parts, one section each.

    python scripts/benchmark.py                          # every registered section, readable tables
    python scripts/benchmark.py --section as_distance --json > as_distance.json
    python scripts/benchmark.py --section as_distance --batch_sizes 64 256 --latent_dims 32 --threads 2

Sections are registered in `SECTIONS` (name -> function taking the parsed arguments, returning a list of dicts,
one per measured configuration): `as_distance` and `training`.

`training` times whole training iterations (`asintrovae_hf.train_step`: encoder update then decoder update) of
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
import json
import math
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
from torch.profiler import ProfilerActivity, profile

from asintrovae_hf.as_distance import as_distance

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
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    # frees before allocations at equal times, so that ties never inflate the peak
    events.sort(key=lambda e: (e.start_ns(), e.nbytes()))
    live = peak = 0
    for e in events:
        if e.device_type() == torch.autograd.DeviceType.CPU:
            live += e.nbytes()
            peak = max(peak, live)
    return peak


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


# ---------------------------------------------------------------------------------------------------------------
# the sections, by name. Each takes the parsed arguments and returns a list of dicts (one per configuration).
# ---------------------------------------------------------------------------------------------------------------

SECTIONS: Dict[str, Callable[[argparse.Namespace], List[Dict]]] = {
    "as_distance": _section_as_distance,
    "training": _section_training,
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
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.section == "all":
        names = list(SECTIONS)
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
