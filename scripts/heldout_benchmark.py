#!/usr/bin/env python
"""The methods on a built-in dataset under the held-out protocol: train each (method, seed) on the dataset's fixed
train split, evaluate it on the held-out split, and append one JSON line per finished run to OUTPUT_DIR/runs.jsonl.
Resumable at any point: a finished run is skipped, a run killed mid-way resumes from its last checkpoint, and a run
trained but not yet evaluated is evaluated.

    # the MNIST table (docs/results.md): the 2-core budget of the paper's MNIST setting
    python scripts/heldout_benchmark.py --dataset_name mnist-5k --output_dir results/mnist \
        --methods soft-introvae:reference soft-introvae as-introvae --seeds 0 1 2 3 4
    python scripts/heldout_benchmark.py --dataset_name mnist-5k --output_dir results/mnist \
        --methods vae introvae as-introvae:reference --seeds 0 1 2
    # rebuild OUTPUT_DIR/results.md (means, sample std, 95 % intervals, paired comparisons) from the records
    python scripts/heldout_benchmark.py --output_dir results/mnist --summarize

A method is `objective[:preset]`. The training options of a dataset are its `BUDGETS` entry, then whatever follows
`--` (for every run). `--phase train` only trains (the evaluation can run later, e.g. after a metric changes); each
record carries the code version, the device and the seconds of its training.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

import torch

from asintrovae_hf.experiments.provenance import code_version, device_description
from asintrovae_hf.json_io import read_json
from asintrovae_hf.objectives.config import PRESETS
from asintrovae_hf.objectives.registry import objective_names
from asintrovae_hf.process_settings import torch_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What a 2-core CPU can afford per run (docs/results.md, "The MNIST table": the paper's setting is the named
# configuration `mnist`; this keeps its objective, learning rate and latent size and shrinks the networks, the batch and
# the number of steps).
BUDGETS = {
    "mnist-5k": ["--resolution", "28", "--block_out_channels", "16,32", "--latent_dim", "32", "--train_batch_size",
                 "32", "--max_train_steps", "1500", "--learning_rate", "2e-4", "--beta_rec", "1", "--beta_kl", "1",
                 "--beta_neg", "256"],
    "digits": ["--resolution", "16", "--block_out_channels", "32,64", "--latent_dim", "32", "--train_batch_size", "64",
               "--max_train_steps", "1000"],
}


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset_name", choices=sorted(BUDGETS), default="mnist-5k")
    p.add_argument("--methods", nargs="+", default=["soft-introvae", "as-introvae"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--label", default=None, help="A name for these settings in the table.")
    p.add_argument("--phase", choices=("all", "train", "evaluate"), default="all")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output_dir", default="results/mnist")
    p.add_argument("--summarize", action="store_true", help="Only rebuild results.md from runs.jsonl.")
    p.add_argument("--calibrate", action="store_true",
                   help="Only write OUTPUT_DIR/calibration.json: the sample metrics of reference pairs (train against "
                        "held-out images, uniform noise) and the classifier's held-out accuracy.")
    args = p.parse_args(argv)
    for method in args.methods:
        objective, _, preset = method.partition(":")
        if objective not in objective_names() or (preset and preset not in PRESETS):
            p.error(f"--methods takes objective[:preset] with objective in {', '.join(objective_names())} and preset in "
                    f"{', '.join(PRESETS)}; got {method!r}")
    args.train_args = extra
    return args


def run_name(method: str, label, seed: int) -> str:
    return method.replace(":", "-") + (f"-{label}" if label else "") + f"-seed{seed}"


def read_records(path):
    """The records of `path`; a line torn by a kill is skipped (its run is evaluated again)."""
    from asintrovae_hf.json_io import read_json_lines

    return [record for _, record in read_json_lines(path)] if os.path.isfile(path) else []


def train_one(args, method: str, seed: int, folder: str) -> None:
    """Train (or finish training) one run; writes `run_info.json` (seconds, device, code version) when done."""
    info_path = os.path.join(folder, "run_info.json")
    if os.path.isfile(info_path):
        return
    objective, _, preset = method.partition(":")
    train_args = BUDGETS[args.dataset_name] + args.train_args
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    command = [sys.executable, os.path.join(ROOT, "scripts", "train_as_introvae.py"), "--dataset_name",
               args.dataset_name, "--objective", objective, *(["--preset", preset] if preset else []), "--output_dir",
               folder, "--seed", str(seed), "--checkpointing_steps", "250", "--checkpoints_total_limit", "1",
               "--save_images_steps", "100000", "--report_to", "none", "--resume_from_checkpoint", "latest",
               *train_args]
    started = time.time()
    previous = 0.0
    partial = os.path.join(folder, "run_info.partial.json")
    if os.path.isfile(partial):
        previous = read_json(partial)["seconds"]
    training = subprocess.run(command, env=env, stderr=subprocess.PIPE, text=True)
    seconds = previous + time.time() - started
    os.makedirs(folder, exist_ok=True)
    if training.returncode != 0:
        with open(partial, "w") as f:
            json.dump({"seconds": seconds}, f)
        stopped = [line for line in training.stderr.splitlines() if "non-finite loss" in line]
        if not stopped:
            sys.stderr.write(training.stderr[-4000:])
            raise subprocess.CalledProcessError(training.returncode, command)
        info = {"stopped": stopped[-1][-500:]}
    else:
        info = {}
    info.update({"command": command[1:], "train_args": train_args, "seconds": round(seconds, 1),
                 "device": device_description(args.threads), "code_version": code_version(),
                 "torch": torch.__version__, "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(
                     timespec="seconds")})
    with open(info_path, "w") as f:
        json.dump(info, f, indent=2)
    if os.path.isfile(partial):
        os.remove(partial)


def evaluate_one(args, method: str, seed: int, folder: str) -> dict:
    from asintrovae_hf.evaluation.heldout import evaluate_heldout

    objective, _, preset = method.partition(":")
    info = read_json(os.path.join(folder, "run_info.json"))
    record = {"dataset": args.dataset_name, "method": objective, "preset": preset or None, "label": args.label,
              "name": method + (f" [{args.label}]" if args.label else ""), "seed": seed, **info}
    if "stopped" in info:
        return record
    with torch_threads(args.threads):
        record["metrics"] = evaluate_heldout(folder, args.dataset_name, seed=seed)
    record["evaluation_code_version"] = code_version()
    record["final_losses"] = read_json(os.path.join(folder, "train_summary.json")).get("final_losses", {})
    return record


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    path = os.path.join(args.output_dir, "runs.jsonl")
    if args.calibrate:
        from asintrovae_hf.evaluation.heldout import calibrate

        with torch_threads(args.threads):
            result = calibrate(args.dataset_name)
        result = {**result, "code_version": code_version(),
                  "device": device_description(args.threads)}
        with open(os.path.join(args.output_dir, "calibration.json"), "w") as f:
            json.dump(result, f, indent=2)
        print(json.dumps(result, indent=2))
        return 0
    if not args.summarize:
        for seed in args.seeds:  # seed by seed, so that a batch still running already compares the methods
            for method in args.methods:
                name = method + (f" [{args.label}]" if args.label else "")
                if any(r["name"] == name and r["seed"] == seed and r["dataset"] == args.dataset_name
                       for r in read_records(path)):
                    continue
                folder = os.path.join(args.output_dir, "runs", run_name(method, args.label, seed))
                if args.phase in ("all", "train"):
                    train_one(args, method, seed, folder)
                if args.phase in ("all", "evaluate") and os.path.isfile(os.path.join(folder, "run_info.json")):
                    record = evaluate_one(args, method, seed, folder)
                    with open(path, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    print(json.dumps({k: record.get(k) for k in ("name", "seed", "seconds")}), flush=True)
    from asintrovae_hf.evaluation.heldout import summarize_runs

    records = read_records(path)
    if records:
        table = summarize_runs(records)
        with open(os.path.join(args.output_dir, "results.md"), "w") as f:
            f.write(table)
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
