"""`scripts/make_figures.py` redraws every chart of docs/figures from the committed records."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib")

from asintrovae_hf.experiments.figures import (  # noqa: E402
    averaged_over_evaluations,
    gradient_norm_figure,
    median_samples_figure,
    seed_figure,
)

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ["heldout_mnist.png", "mnist_samples.png", "heldout_digits.png", "digits_heldout_samples.png",
          "digits_seeds.png", "toy_8gaussians_seeds.png", "toy_8gaussians_10seeds.png", "mechanism_gradient_norms.png",
          "digits_grid.png", "toy_grid_8gaussians.png", "zoo_samples.png"]


def records(folder):
    return [json.loads(line) for line in (ROOT / "results" / folder / "runs.jsonl").read_text().splitlines()]


def test_the_command_draws_every_chart_from_the_committed_records(tmp_path):
    out = tmp_path / "figures"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_figures.py"), "--results_dir",
                           str(ROOT / "results"), "--output_dir", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(CHARTS)
    for name in CHARTS:
        image = Image.open(out / name)
        image.verify()  # a complete, valid PNG
        image = Image.open(out / name)
        assert image.format == "PNG", name
        assert 500 <= image.width <= 3000 and 300 <= image.height <= 2000, (name, image.size)
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
        assert len(np.unique(pixels, axis=0)) > 50, name  # drawn, not blank
    # the docs show the figures under these names
    pages = "".join(page.read_text() for page in (ROOT / "docs").glob("*.md"))
    for name in CHARTS:
        assert f"figures/{name}" in pages, name


def test_the_mnist_chart_draws_the_recorded_values(tmp_path):
    runs = records("mnist")
    drawn = seed_figure(runs, {"fd": "FD", "recall": "recall"}, str(tmp_path / "mnist.png"), "MNIST",
                        value=lambda r, metric: r["metrics"][metric])
    assert set(drawn["fd"]) == {r["name"] for r in runs}
    for r in runs:
        assert drawn["fd"][r["name"]][r["seed"]] == r["metrics"]["fd"]
        assert drawn["recall"][r["name"]][r["seed"]] == r["metrics"]["recall"]
    assert sum(len(seeds) for seeds in drawn["fd"].values()) == len(runs)


def test_the_toy_seed_chart_draws_each_models_mean_over_its_evaluation_draws(tmp_path):
    evaluations = [json.loads(line) for line in
                   (ROOT / "results" / "toy10" / "evaluations.jsonl").read_text().splitlines()]
    points = averaged_over_evaluations(evaluations, ("kl", "jsd"))
    drawn = seed_figure(points, {"kl": "KL", "jsd": "JSD"}, str(tmp_path / "toy10.png"), "toy")
    eval_seeds = {e["eval_seed"] for e in evaluations}
    assert len(eval_seeds) == 5
    models = {(e["name"], e["seed"]) for e in evaluations}
    assert sum(len(seeds) for seeds in drawn["kl"].values()) == len(models)
    for name, seed in models:
        scores = [e["kl"] for e in evaluations if (e["name"], e["seed"]) == (name, seed)]
        assert len(scores) == 5 and drawn["kl"][name][seed] == pytest.approx(np.mean(scores))
    # a model missing one of the draws is left out rather than averaged over fewer
    partial = evaluations + [{**evaluations[0], "seed": 99, "eval_seed": 1234}]
    assert len(averaged_over_evaluations(partial, ("kl",))) == len(models)


def test_the_gradient_norm_chart_draws_every_recorded_step(tmp_path):
    runs = records("mechanism")
    drawn = gradient_norm_figure(runs, str(tmp_path / "norms.png"))
    assert len(drawn) == len(runs)
    for r in runs:
        series = drawn[(r["label"], r["name"], r["seed"])]
        assert [[s, a, v] for s, a, v in zip(series["steps"], series["adversarial"], series["vae"])] == \
            r["gradient_norms"]
    assert gradient_norm_figure([{"name": "vae", "method": "vae"}], str(tmp_path / "none.png")) is None



def test_the_mnist_samples_show_each_methods_median_seed_by_fd(tmp_path):
    runs = records("mnist")
    shown = median_samples_figure(runs, str(ROOT / "results" / "mnist" / "samples"), str(tmp_path / "samples.png"))
    assert set(shown) == {r["name"] for r in runs}
    for name, seed in shown.items():
        fds = sorted(r["metrics"]["fd"] for r in runs if r["name"] == name)
        chosen = next(r["metrics"]["fd"] for r in runs if r["name"] == name and r["seed"] == seed)
        assert chosen == fds[(len(fds) - 1) // 2]  # the median, not the best (fds[0])
