"""
The `as_distance` section: forward + backward of `asintrovae_hf.as_distance` (sum reduction, `squash=True`: the
encoder step's setting) against a naive broadcast form (`naive_as_distance`: every `B x B x Z` intermediate
materialised and kept by autograd), timed (best of `--repeats` after one warm-up run) and with the peak memory of
that forward + backward (`measure.peak_memory_bytes`: CUDA statistics, or the CPU allocator's events under the
profiler).

The naive form is skipped, with a message, where its estimated peak (`NAIVE_TENSORS` float32 tensors of
`B x B x Z` entries; measured here, see `NAIVE_TENSORS`) exceeds `--max_naive_gib`. Columns: seconds (`_s`) and
peak MiB (`_mib`) of both, `time_ratio` and `mem_ratio` (naive / ours), `ours_err` and `naive_err` (relative error
of each float32 value against `as_distance` evaluated in float64), and `target_met` from `B = 512, Z = 128` up
(our peak memory <= 1/10 of the naive one and our time <= naive's).
"""

import sys
from typing import Callable, Dict, List, Optional

import torch

from ...objectives.as_distance import as_distance
from .measure import GIB, MIB, peak_memory_bytes, time_call

# Peak of the naive forward + backward, in float32 tensors of B x B x Z entries, as measured by this benchmark
# (19.0-19.2 for B in 64..512, Z in 32..256): each of the three kernel sums R(a,a), R(b,b), R(a,b) keeps about six
# B x B x Z intermediates alive for the backward pass (a rough "8 tensors" underestimates it by more than 2x).
NAIVE_TENSORS = 19

COLUMNS = ["B", "Z", "ours_s", "naive_s", "time_ratio", "ours_mib", "naive_mib", "mem_ratio", "ours_err",
           "naive_err", "target_met", "note"]


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


def section_as_distance(args) -> List[Dict]:
    """The `as_distance` section: `benchmark_as_distance` with the command line's options, and the target."""
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
