"""The digits benchmark (`scripts/digits_benchmark.py`) and the class coverage of generated digits."""

import json
import math

import torch

from asintrovae_hf.evaluation.digits_classifier import digits_to_tensor, load_digits_uint8
from asintrovae_hf.evaluation.image_metrics import class_coverage
from helpers import TINY, load_script


def _digits(resolution=16):
    pixels, labels = load_digits_uint8()
    return (digits_to_tensor(pixels, resolution) + 1) / 2, torch.from_numpy(labels)  # values in [0, 1]


def test_class_coverage_counts_the_classes_the_classifier_finds():
    images, labels = _digits()
    every = class_coverage(images)
    assert every["classes_covered"] == 10 and every["class_entropy"] > 0.98 * math.log(10)
    sevens = class_coverage(images[labels == 7])
    assert sevens["classes_covered"] == 1 and sevens["largest_class_share"] > 0.95
    # at 64 x 64 (the digits upscaled) the classifier still finds them
    assert class_coverage(_digits(64)[0][:500])["classes_covered"] == 10


def test_digits_benchmark_records_coverage_and_gradient_norms(tmp_path):
    benchmark = load_script("digits_benchmark")
    out = tmp_path / "mechanism"
    tiny = [a for a in TINY if a != "--report_to" and a != "none"]
    assert benchmark.main(["--methods", "soft-introvae", "--seeds", "0", "--max_train_steps", "4",
                           "--num_samples", "64", "--output_dir", str(out), "--label", "r8", "--",
                           *tiny, "--num_vae_steps", "1", "--log_gradient_norms_steps", "1"]) == 0
    (record,) = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert 1 <= record["classes_covered"] <= 10 and record["class_entropy"] >= 0
    assert [step for step, _, _ in record["gradient_norms"]] == [1, 2, 3]  # step 0 is the plain-VAE warm-up
    assert all(adversarial > 0 and vae > 0 for _, adversarial, vae in record["gradient_norms"])
    assert "classes covered" in (out / "results.md").read_text()
    assert (out / "gradient_norms.png").stat().st_size > 0


def test_digits_grid_records_each_cell_and_a_diverged_run_as_nan(tmp_path):
    """`--grid`: one run per cell; a run stopped by a non-finite loss is recorded (FID NaN) and counted collapsed."""
    benchmark = load_script("digits_benchmark")
    out = tmp_path / "grid"
    tiny = [a for a in TINY if a != "--report_to" and a != "none"]
    argv = ["--methods", "soft-introvae", "--seeds", "0", "--max_train_steps", "3", "--num_samples", "64",
            "--output_dir", str(out), "--grid", "beta_rec=1,1e38", "--grid", "beta_kl=1", "--", *tiny,
            "--num_vae_steps", "1"]
    assert benchmark.main(argv) == 0
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    by_cell = {r["overrides"]["beta_rec"]: r for r in records}
    assert sorted(by_cell) == [1.0, 1e38] and all(r["overrides"]["beta_kl"] == 1.0 for r in records)
    assert math.isfinite(by_cell[1.0]["digits_fid"]) and by_cell[1.0]["train_args"][-4:] == [
        "--beta_kl", "1", "--beta_rec", "1"]
    assert math.isnan(by_cell[1e38]["digits_fid"]) and "non-finite loss" in by_cell[1e38]["stopped"]
    grid = (out / "grid.md").read_text()
    assert "| 1 | 1e+38 | nan |" in grid and "beta_kl=1, beta_rec=1e+38" in grid.split("collapsed")[-1]
    assert (out / "grid.png").stat().st_size > 0
    assert benchmark.main(argv) == 0  # resumes: both cells are recorded, nothing runs again
    assert len((out / "runs.jsonl").read_text().splitlines()) == 2
