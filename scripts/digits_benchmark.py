#!/usr/bin/env python
"""The four methods on the built-in digits over seeds: train each with the training script, evaluate its digits FID,
and append one JSON line per finished run; a batch that was stopped resumes where it stopped (a run killed mid-way
resumes from its last checkpoint).

    python scripts/digits_benchmark.py --methods vae introvae soft-introvae as-introvae:reference as-introvae \
        --seeds 0 1 2 --max_train_steps 1000 --output_dir results/digits
    # a variant, with objective flags passed to the training script
    python scripts/digits_benchmark.py --methods as-introvae --label mean-encoder --seeds 0 1 2 \
        --output_dir results/digits -- --encoder_reduction mean
    # the paper's mechanism: the encoder's gradient from the adversarial terms, at a resolution (the digits upscaled)
    python scripts/digits_benchmark.py --methods soft-introvae as-introvae --seeds 0 --label r32 \
        --output_dir results/mechanism -- --resolution 32 --log_gradient_norms_steps 20
    # robustness: every cell of a grid of objective options, per method
    python scripts/digits_benchmark.py --methods soft-introvae as-introvae as-introvae:reference --seeds 0 \
        --grid beta_kl=0.25,1,4 --grid beta_neg=64,256,1024 --output_dir results/robustness

A method is `objective[:preset]`. Everything after `--` goes to `scripts/train_as_introvae.py` for every run. Writes
`OUTPUT_DIR/runs.jsonl` (one line per run: method, seed, steps, digits FID, reconstruction MSE, seconds, the options)
and `OUTPUT_DIR/results.md` (mean ± sample std over seeds, and the digit classes the samples cover), and, for runs with
`--log_gradient_norms_steps`, the gradient norms in each line and `OUTPUT_DIR/gradient_norms.png`, and for grids
`OUTPUT_DIR/grid.md` (FID per cell; per method the cells within 1.5x of the best, and the collapsed cells: FID above
2x the best cell of all methods, or a run stopped by a non-finite loss, recorded with FID NaN) and
`OUTPUT_DIR/grid.png`; the trained pipelines go to `OUTPUT_DIR/runs/`.
"""

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

from asintrovae_hf.experiments.figures import gradient_norm_figure
from asintrovae_hf.experiments.images.robustness_grid import (
    grid_cells,
    grid_markdown,
    parse_grid_option,
    save_grid_heatmap,
)
from asintrovae_hf.json_io import read_json, read_json_lines
from asintrovae_hf.objectives.registry import objective_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = ("reference", "recommended")


def objectives():
    """The registered objectives, the simplest built-in first (the tables' order)."""
    return objective_names()[::-1]


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=list(objectives()))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--max_train_steps", type=int, default=1000)
    p.add_argument("--label", default=None, help="A name for these settings in the table.")
    p.add_argument("--num_samples", type=int, default=1797, help="Samples for the digits FID.")
    p.add_argument("--grid", action="append", type=parse_grid_option, default=[], metavar="OPTION=V1,V2,...",
                   help="Run every combination of the listed values of objective options (repeatable).")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output_dir", default="results/digits")
    p.add_argument("--summarize", action="store_true", help="Only rebuild results.md from runs.jsonl.")
    args = p.parse_args(argv)
    for method in args.methods:
        objective, _, preset = method.partition(":")
        if objective not in objectives() or (preset and preset not in PRESETS):
            p.error(f"--methods takes objective[:preset] with objective in {', '.join(objectives())} and preset in "
                    f"{', '.join(PRESETS)}; got {method!r}")
    args.train_args = extra
    return args


def run_name(method: str, label, seed: int, overrides=None) -> str:
    name = method.replace(":", "-") + (f"-{label}" if label else "")
    name += "".join(f"-{option}{value:g}" for option, value in sorted((overrides or {}).items()))
    return f"{name}-seed{seed}"


def grid_flags(overrides) -> list:
    return [word for option, value in sorted(overrides.items()) for word in (f"--{option}", f"{value:g}")]


def display_name(method: str, label) -> str:
    objective, _, preset = method.partition(":")
    return objective + (f" ({preset})" if preset else "") + (f" [{label}]" if label else "")


def read_records(path):
    if not os.path.isfile(path):
        return []
    # a line torn by a kill is skipped: that run is redone
    return [value for _, value in read_json_lines(path, skip_invalid=True)]


def run_one(args, method, seed, overrides=None):
    """
    Train and evaluate one run; a run that the training script stops for a non-finite loss is a result (digits FID
    NaN, the script's message in `stopped`), any other failure raises.
    """
    objective, _, preset = method.partition(":")
    overrides = overrides or {}
    train_args = args.train_args + grid_flags(overrides)
    folder = os.path.join(args.output_dir, "runs", run_name(method, args.label, seed, overrides))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    train = [sys.executable, os.path.join(ROOT, "scripts", "train_as_introvae.py"), "--objective", objective,
             "--output_dir", folder, "--seed", str(seed), "--max_train_steps", str(args.max_train_steps),
             "--checkpointing_steps", "250", "--checkpoints_total_limit", "1", "--save_images_steps",
             str(args.max_train_steps), "--report_to", "none", "--resume_from_checkpoint", "latest",
             *(["--preset", preset] if preset else []), *train_args]
    started = time.time()
    training = subprocess.run(train, env=env, stderr=subprocess.PIPE, text=True)
    seconds = time.time() - started
    record = {"name": display_name(method, args.label), "method": objective, "preset": preset or None,
              "label": args.label, "seed": seed, "steps": args.max_train_steps, "train_args": train_args,
              "overrides": overrides, "seconds": round(seconds, 1)}
    if training.returncode != 0:
        sys.stderr.write(training.stderr[-4000:])
        stopped = [line for line in training.stderr.splitlines() if "non-finite loss" in line]
        if not stopped:
            raise subprocess.CalledProcessError(training.returncode, train)
        return {**record, "digits_fid": math.nan, "stopped": stopped[-1][-500:]}
    metrics = os.path.join(folder, "metrics.json")
    evaluate = [sys.executable, os.path.join(ROOT, "scripts", "evaluate.py"), "--pipeline", folder,
                "--num_samples", str(args.num_samples), "--seed", str(seed), "--output", metrics,
                "--metrics", "digits_fid", "reconstruction", "class_coverage"]
    subprocess.run(evaluate, env=env, check=True, stdout=subprocess.DEVNULL)
    result = read_json(metrics, expect=dict)
    summary = read_json(os.path.join(folder, "train_summary.json"), expect=dict)
    return {**record, "digits_fid": result["digits_fid"], "reconstruction_mse": result["reconstruction_mse"],
            "psnr": result["psnr"], "classes_covered": result["classes_covered"],
            "class_entropy": result["class_entropy"], "final_losses": summary.get("final_losses", {}),
            "gradient_norms": read_gradient_norms(folder)}


def read_gradient_norms(folder):
    """`[[step, adversarial, vae], ...]` from a run's `gradient_norms.jsonl` (`--log_gradient_norms_steps`); a step
    measured again after a resume keeps its last line."""
    path = os.path.join(folder, "gradient_norms.jsonl")
    by_step = {}
    for line in read_records(path):
        by_step[line["step"]] = [line["step"], line["grad_norm_adversarial"], line["grad_norm_vae"]]
    return [by_step[step] for step in sorted(by_step)]


def _fid_text(fids) -> str:
    """`"mean ± sample std"`, or the value alone for one seed."""
    return f"{np.mean(fids):.2f} ± {np.std(fids, ddof=1):.2f}" if len(fids) > 1 else f"{fids[0]:.2f}"


def markdown(records) -> str:
    rows = ["| method | steps | seeds | digits FID (mean ± sample std) | classes covered | reconstruction MSE | s/run |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    groups = {}
    for r in records:
        groups.setdefault((r["name"], r["steps"]), []).append(r)
    order = {m: i for i, m in enumerate(objectives())}
    for (name, steps), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], order.get(kv[1][0]["method"], 9),
                                                                    kv[0][0])):
        fids = [r["digits_fid"] for r in rs]
        rows.append(f"| {name} | {steps} | {', '.join(str(r['seed']) for r in sorted(rs, key=lambda r: r['seed']))} "
                    f"| {_fid_text(fids)} | {_classes_covered(rs)} "
                    f"| {np.mean([r.get('reconstruction_mse', np.nan) for r in rs]):.4f}"
                    f" | {np.mean([r['seconds'] for r in rs]):.0f} |")
    return "\n".join(rows) + "\n"


def _classes_covered(records) -> str:
    covered = [r["classes_covered"] for r in records if "classes_covered" in r]
    return f"{np.mean(covered):.1f}" if len(covered) == len(records) else "n/a"


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, "runs.jsonl")
    names = [name for name, _ in args.grid]
    cells = [dict(zip(names, values)) for values in itertools.product(*[values for _, values in args.grid])]
    if not args.summarize:
        for overrides in cells:  # cell by cell, so a grid still running already compares the methods
            for method in args.methods:
                for seed in args.seeds:
                    done = {(r["name"], r["seed"], r["steps"], tuple(r["train_args"])) for r in read_records(path)}
                    key = (display_name(method, args.label), seed, args.max_train_steps,
                           tuple(args.train_args + grid_flags(overrides)))
                    if key in done:
                        continue
                    record = run_one(args, method, seed, overrides)
                    with open(path, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    print(json.dumps({k: record[k] for k in ("name", "seed", "overrides", "digits_fid", "seconds")}),
                          flush=True)
    records = read_records(path)
    plain = [r for r in records if not r.get("overrides")]  # grid runs have their own table
    table = markdown(plain) if plain else ""
    if plain:
        with open(os.path.join(args.output_dir, "results.md"), "w") as f:
            f.write(table)
    gradient_norm_figure(records, os.path.join(args.output_dir, "gradient_norms.png"))
    grid = grid_cells(records, "digits_fid")
    if grid:
        order = lambda name: (objectives().index(name.split(" ")[0]), name)  # noqa: E731
        grid_table = grid_markdown(grid, "digits FID", "digits", near=1.5, collapse=2.0, order=order)
        table += "\n" + grid_table
        with open(os.path.join(args.output_dir, "grid.md"), "w") as f:
            f.write(grid_table)
        save_grid_heatmap(grid, os.path.join(args.output_dir, "grid.png"), "digits FID", "digits", order=order)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
