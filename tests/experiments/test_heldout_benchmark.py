"""scripts/heldout_benchmark.py end to end: train a tiny run on the digits' train split, evaluate it on the held-out
split, record one JSON line, skip it when run again, and summarize."""

import json

import pytest
from helpers import load_script

pytestmark = pytest.mark.slow

TINY = ["--max_train_steps", "2", "--resolution", "8", "--block_out_channels", "8,16", "--latent_dim", "4",
        "--train_batch_size", "16", "--max_train_samples", "64", "--beta_neg", "8"]


def test_a_run_is_trained_evaluated_recorded_once_and_summarized(tmp_path):
    bench = load_script("heldout_benchmark")
    argv = ["--dataset_name", "digits", "--methods", "vae", "--seeds", "0", "--output_dir", str(tmp_path), "--", *TINY]
    assert bench.main(argv) == 0
    records = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert len(records) == 1
    record = records[0]
    assert (record["dataset"], record["name"], record["seed"]) == ("digits", "vae", 0)
    assert record["train_args"][-len(TINY):] == TINY and record["device"].startswith("cpu")
    assert record["code_version"] and record["evaluation_code_version"]
    metrics = record["metrics"]
    assert metrics["num_heldout"] == 360 and metrics["num_draws"] == 3 and metrics["sampler"] == "prior"
    info = json.loads((tmp_path / "runs" / "vae-seed0" / "run_info.json").read_text())
    assert info["seconds"] > 0
    # run again: the recorded run is skipped, nothing is trained or appended
    assert bench.main(argv) == 0
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 1
    table = (tmp_path / "results.md").read_text()
    assert "| vae | 0 | " in table and "(1 seed)" in table
