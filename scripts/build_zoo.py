#!/usr/bin/env python
"""Make a shipped pipeline (`asintrovae_hf.zoo`) from a run of `scripts/heldout_benchmark.py`: copy its pipeline
files, measure it on the held-out split, and write its model card and `zoo_entry.json`.

    python scripts/build_zoo.py --results results/mnist --runs_dir /path/to/results/mnist/runs \
        --dataset mnist-5k --method as-introvae --seed 0 --name as-introvae-mnist-5k

The seed is given, never picked by a metric: the card says which seed it is and, where the method has several seeds
recorded, where this one falls among them. The card's intervals are over every recorded seed of the method.

The code files of a shipped pipeline are today's package, bundled as `save_pretrained` bundles them. After a change
to a bundled module, rewrite them (and nothing else) in every shipped pipeline, or in `--name` alone, with

    python scripts/build_zoo.py --code_only
"""

import argparse
import json
import os
import shutil
import sys

import torch

from asintrovae_hf.builtin_datasets import get_builtin_dataset, split_record
from asintrovae_hf.evaluation.heldout import evaluate_heldout
from asintrovae_hf.evaluation.statistics import describe, format_interval
from asintrovae_hf.hub import create_model_card
from asintrovae_hf.json_io import read_json, read_json_lines
from asintrovae_hf.pipelines.pipeline_asintrovae import AsIntroVAEPipeline
from asintrovae_hf.pipelines.remote_code import save_code
from asintrovae_hf.zoo import ENTRY_FILE, ZOO_DIR

PIPELINE_FILES = ("model_index.json",)
COMPONENT_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
CARD_METRICS = (("fd", "Frechet distance to the held-out images (classifier features)", 2),
                ("precision", "precision (k = 3)", 3), ("recall", "recall (k = 3)", 3),
                ("class_entropy", "class entropy of the samples (nats; 2.303 = all ten equal)", 3),
                ("smallest_class_share", "share of the rarest class among the samples", 4),
                ("reconstruction_mse", "held-out reconstruction MSE per pixel", 5),
                ("nll_bits_per_dim", "held-out importance-weighted NLL (bits per dimension)", 4))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", help="The benchmark's output folder (runs.jsonl, calibration.json).")
    p.add_argument("--runs_dir", default=None, help="Where the trained runs are (default: RESULTS/runs).")
    p.add_argument("--dataset")
    p.add_argument("--method", help="objective[:preset], as in the records.")
    p.add_argument("--seed", type=int)
    p.add_argument("--name")
    p.add_argument("--output_root", default=ZOO_DIR)
    p.add_argument("--code_only", action="store_true",
                   help="Only rewrite the code files of the shipped pipeline --name (default: of all of them).")
    args = p.parse_args(argv)
    missing = [name for name in ("results", "dataset", "method", "seed", "name") if getattr(args, name) is None]
    if missing and not args.code_only:
        p.error("the following arguments are required: " + ", ".join("--" + name for name in missing))
    return args


def read_records(path):
    return [record for _, record in read_json_lines(path)]


def write_code(out: str) -> None:
    """The code files of the pipeline in `out` as today's package bundles them (`remote_code.save_code`); its
    weights and configs are left as they are."""
    save_code(AsIntroVAEPipeline.from_pretrained(out), out)


def copy_pipeline(run: str, out: str) -> None:
    """The run's weights, configs and sample grid, with the code files written by today's package."""
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    for name in PIPELINE_FILES:
        shutil.copy2(os.path.join(run, name), os.path.join(out, name))
    for component in ("encoder", "decoder"):
        os.makedirs(os.path.join(out, component))
        for name in os.listdir(os.path.join(run, component)):
            if name in COMPONENT_FILES:
                shutil.copyfile(os.path.join(run, component, name), os.path.join(out, component, name))
    shutil.copyfile(os.path.join(run, "samples_from_pretrained.png"), os.path.join(out, "samples.png"))
    write_code(out)


def card_sections(entry: dict) -> str:
    spec = get_builtin_dataset(entry["dataset"])
    split = entry["split"]
    lines = ["", "## Held-out evaluation", "",
             f"Measured on the {split['num_heldout']} held-out images of `{entry['dataset']}`, which neither this "
             f"model nor the feature classifier (held-out accuracy {entry['classifier_heldout_accuracy']:.3f}) was "
             f"trained on (`asintrovae_hf.evaluation.heldout`). This model is seed {entry['seed']} of the method"
             + (f", {entry['seed_rank']}" if entry.get("seed_rank") else "") + "; it was not chosen by a metric.", "",
             "| metric | this model | method over seeds: mean ± sample std [95 % interval] | real train images "
             "(reference) |", "| --- | --- | --- | --- |"]
    for key, label, digits in CARD_METRICS:
        summary = entry["method_summary"].get(key)
        reference = entry["calibration"].get(key)
        over_seeds = f"{format_interval(summary, digits)} (seeds {entry['method_seeds']})" if summary else "n/a"
        lines.append(f"| {label} | {entry['metrics'][key]:.{digits}f} | {over_seeds} | "
                     f"{'' if reference is None else f'{reference:.{digits}f}'} |")
    lines += ["", "Sample metrics are means of 3 draws of as many samples as held-out images; the reference column "
                  "scores real train images against the held-out ones (the best a model can do). Recompute:", "",
              "```python", "from asintrovae_hf.evaluation.heldout import evaluate_heldout",
              "from asintrovae_hf.zoo import zoo_path", "",
              f"evaluate_heldout(zoo_path({entry['name']!r}), {entry['dataset']!r}, seed=0)", "```", "",
              "## Data, split and license", "",
              f"{spec.description}; source {spec.homepage}; license **{spec.license}** (the data). Split: "
              f"{split['split']}: {split['num_train']} train images (classes {split['train_class_counts']}), "
              f"{split['num_heldout']} held out (classes {split['heldout_class_counts']}). The card's license field "
              f"is this project's; the training data keep their own ({spec.license}): check its terms before "
              f"redistributing a model trained on them.", "",
              "## Reproduce", "", "Trained on " + entry["device"] + f" in {entry['train_seconds']:.0f} s with:", "",
              "```bash", entry["command"], "```", "",
              "## Push it to the Hub", "", "```bash",
              f"python -m asintrovae_hf.hub --output_dir \"$(python -c 'from asintrovae_hf.zoo import zoo_path; "
              f"print(zoo_path(\"{entry['name']}\"))')\" --hub_model_id {entry['name']}", "```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.code_only:
        root = args.output_root
        shipped = [name for name in sorted(os.listdir(root)) if os.path.isfile(os.path.join(root, name, ENTRY_FILE))]
        for name in [args.name] if args.name else shipped:
            write_code(os.path.join(root, name))
        return 0
    runs_dir = args.runs_dir or os.path.join(args.results, "runs")
    records = [r for r in read_records(os.path.join(args.results, "runs.jsonl"))
               if r["dataset"] == args.dataset and r["name"] == args.method and "metrics" in r]
    record = next((r for r in records if r["seed"] == args.seed), None)
    if record is None:
        sys.exit(f"error: no record of {args.method} seed {args.seed} on {args.dataset} in {args.results}")
    run = os.path.join(runs_dir, args.method.replace(":", "-") + f"-seed{args.seed}")
    out = os.path.join(args.output_root, args.name)
    copy_pipeline(run, out)
    metrics = evaluate_heldout(out, args.dataset, seed=0)
    calibration = read_json(os.path.join(args.results, "calibration.json"))
    seeds = sorted(r["seed"] for r in records)
    fds = sorted((r["metrics"]["fd"], r["seed"]) for r in records)
    rank = [s for _, s in fds].index(args.seed) + 1
    objective, _, preset = args.method.partition(":")
    command = " ".join(["asintrovae-train", "--dataset_name", args.dataset, "--objective", objective,
                        *(["--preset", preset] if preset else []), "--seed", str(args.seed), "--output_dir", args.name,
                        *record["train_args"]])
    entry = {"name": args.name, "dataset": args.dataset, "method": args.method, "objective": objective,
             "preset": preset or "recommended", "seed": args.seed,
             "seed_rank": f"ranked {rank} of {len(seeds)} recorded seeds by Frechet distance" if len(seeds) > 1
             else None, "metrics": metrics,
             "method_summary": {key: describe([r["metrics"][key] for r in records]) for key, _, _ in CARD_METRICS}
             if len(records) > 1 else {}, "method_seeds": ", ".join(map(str, seeds)),
             "calibration": calibration["train_vs_heldout"],
             "classifier_heldout_accuracy": calibration["classifier_heldout_accuracy"],
             "split": split_record(args.dataset), "command": command, "device": record["device"],
             "train_seconds": record["seconds"], "code_version": record["code_version"],
             "recheck": {"metric": "reconstruction_mse", "value": metrics["reconstruction_mse"], "rel_tolerance": 1e-3}}
    with open(os.path.join(out, ENTRY_FILE), "w") as f:
        json.dump(entry, f, indent=2)
    summary = read_json(os.path.join(run, "train_summary.json"))
    # the run's options as its checkpoints record them
    options = read_json(os.path.join(run, summary["last_checkpoint"], "training_state.json"))["options"]
    options = {k: v for k, v in options.items() if k not in ("output_dir", "resume_from_checkpoint")}
    create_model_card(out, repo_id=f"you/{args.name}", hyperparameters=options,
                      final_losses=summary.get("final_losses"), dataset_name=args.dataset, sample_grid="samples.png",
                      objective=objective)
    with open(os.path.join(out, "README.md"), "a") as f:
        f.write(card_sections(entry))
    size = sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(out) for name in names)
    print(json.dumps({"name": args.name, "bytes": size, "fd": metrics["fd"], "seed_rank": entry["seed_rank"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
