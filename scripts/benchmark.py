#!/usr/bin/env python
"""Benchmarks of the library's costly parts, one section each.

    python scripts/benchmark.py                          # every registered section, readable tables
    python scripts/benchmark.py --section as_distance --json > as_distance.json
    python scripts/benchmark.py --section as_distance --batch_sizes 64 256 --latent_dims 32 --threads 2
    python scripts/benchmark.py --section training --training_configs digits16 --train_batch_size 32

    python scripts/benchmark.py --section vs_reference --reference_path /tmp/AS-IntroVAE --peak_gflops 78
    python scripts/benchmark.py --section gradient_checkpointing --train_batch_size 32

Sections are registered in `asintrovae_hf.experiments.speed.SECTIONS` (name -> function taking the parsed arguments,
returning a list of dicts, one per measured configuration): `as_distance`, `training`, `gradient_checkpointing`
and `vs_reference` (run by `all` only when `--reference_path` is given). What each measures is written in its
module's docstring: `asintrovae_hf/experiments/speed/as_distance_speed.py`, `iteration_speed.py` (`training` and
`gradient_checkpointing`) and `vs_reference.py`; the timing and peak-memory measurement in `measure.py`. Each
section prints a table (to stderr with `--json`, which prints all rows as one JSON list on stdout).
"""

import argparse
import json
import sys

import torch

from asintrovae_hf.experiments.speed import SECTIONS, TABLE_COLUMNS, TRAINING_CONFIGS, format_table
from asintrovae_hf.process_settings import torch_threads


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
        print(f"The {args.section!r} section is not implemented yet (register it in SECTIONS in "
              f"asintrovae_hf/experiments/speed/__init__.py).", file=sys.stderr)
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
