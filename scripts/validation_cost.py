"""What `--validation_steps` costs: the README's main command (built-in digits, default model and options) trained
twice side by side, one torch thread each, with and without validation, and the overhead in percent.

    python scripts/validation_cost.py                                   # 1000 steps, validating every 250
    python scripts/validation_cost.py --max_train_steps 250 --validation_steps 50   # quicker, scaled to 1000 / 250

The two runs start at the same moment on their own core, so that the machine's other load falls on both alike. Two
measures are printed: the wall-clock difference of the runs (`train()`'s own seconds, from train_summary.json), and the
validations' own seconds (validation.jsonl) against the plain run's time per step. With `--max_train_steps S` and
`--validation_steps V` other than the target (`--target_steps 1000`, `--target_every 250`), both are scaled: the
overhead is (validations in the target x mean seconds of one) / (target steps x plain seconds per step), and the wall
difference is scaled by the ratio of validations per step (target / measured).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_as_introvae.py"


def _launch(output_dir: str, steps: int, extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    cmd = [sys.executable, str(SCRIPT), "--output_dir", output_dir, "--max_train_steps", str(steps), *extra]
    return cmd, subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max_train_steps", type=int, default=1000)
    parser.add_argument("--validation_steps", type=int, default=250)
    parser.add_argument("--target_steps", type=int, default=1000)
    parser.add_argument("--target_every", type=int, default=250)
    parser.add_argument("--work_dir", default=None, help="Default: a temporary folder, removed afterwards.")
    parser.add_argument("--output", default=None, help="Also write the result as JSON here.")
    args = parser.parse_args(argv)
    work = args.work_dir or tempfile.mkdtemp(prefix="validation-cost-")
    plain_dir, val_dir = os.path.join(work, "plain"), os.path.join(work, "validated")
    started = time.time()
    plain_cmd, plain = _launch(plain_dir, args.max_train_steps, [])
    val_cmd, validated = _launch(val_dir, args.max_train_steps, ["--validation_steps", str(args.validation_steps)])
    walls = {}
    for name, proc in (("plain", plain), ("validated", validated)):
        _, err = proc.communicate()
        walls[name] = time.time() - started
        if proc.returncode != 0:
            raise SystemExit(f"the {name} run failed ({proc.returncode}): {err.strip().splitlines()[-1:]}")
    from asintrovae_hf.json_io import read_json, read_json_lines

    seconds = {name: read_json(Path(d, "train_summary.json"))["seconds"]
               for name, d in (("plain", plain_dir), ("validated", val_dir))}
    records = [record for _, record in read_json_lines(Path(val_dir, "validation.jsonl"))]
    per_validation = sum(r["seconds"] for r in records) / len(records)
    measured_count = len(records)
    target_count = -(-args.target_steps // args.target_every)  # every `target_every` steps, and the last
    per_step = seconds["plain"] / args.max_train_steps
    wall_overhead = (seconds["validated"] - seconds["plain"]) / seconds["plain"]
    scale = (target_count / args.target_steps) / (measured_count / args.max_train_steps)
    result = {
        "commands": [" ".join(plain_cmd[1:]), " ".join(val_cmd[1:])],
        "threads": 1,
        "train_seconds": seconds,
        "validations": measured_count,
        "mean_validation_seconds": round(per_validation, 3),
        "num_validation_images": records[0]["num_images"],
        "plain_seconds_per_step": round(per_step, 4),
        "measured_wall_overhead_percent": round(100 * wall_overhead, 2),
        "target": f"{args.target_steps} steps, --validation_steps {args.target_every} ({target_count} validations)",
        "target_overhead_percent_from_validation_seconds": round(
            100 * target_count * per_validation / (args.target_steps * per_step), 2),
        "target_overhead_percent_from_wall_difference": round(100 * wall_overhead * scale, 2),
    }
    print(json.dumps(result, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    if not args.work_dir:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
