"""
The charts of `docs/figures`, drawn with matplotlib from the committed records in `results/` (`runs.jsonl`).

`python scripts/make_figures.py` (or `python -m asintrovae_hf.experiments.figures`) redraws every chart:

- `heldout_mnist.png`: the held-out metrics of the MNIST runs per method and seed (`results/mnist`);
- `mnist_samples.png`: each MNIST method's samples at its median seed by FD (`results/mnist/samples`);
- `heldout_digits.png`, `digits_heldout_samples.png`: the same two for the digits' held-out runs
  (`results/digits-heldout`);
- `digits_seeds.png`: the digits FID of the four methods over three seeds (`results/digits`);
- `toy_8gaussians_seeds.png`: KL and JSD of the 2D toy runs per method and seed (`results/toy2d-depth4`);
- `toy_8gaussians_10seeds.png`: KL, JSD and high-quality share of the 10-seed toy comparison, each model's mean over
  its evaluation draws (`results/toy10/evaluations.jsonl`);
- `mechanism_gradient_norms.png`: the encoder's gradient norms over training (`results/mechanism`);
- `digits_grid.png`, `toy_grid_8gaussians.png`: the robustness grids as heat maps (`results/robustness`,
  `results/toy2d-grid`);
- `zoo_samples.png`: samples of the pipelines that ship with the package ([`asintrovae_hf.zoo`]).

The other image grids in `docs/figures` need trained models that are not committed; they come from other commands:
`toy_8gaussians.png`, `toy_8gaussians_depth4.png` and `toy_8gaussians_median.png` (`results/toy10`) from
`asintrovae-toy2d --summarize ... --model_dir DIR` (the toy runs' kept networks), `digits_samples.png` and `digits_per_class.png` from `scripts/sample_grid.py` (its command is
under each figure in `docs/results.md`), and the `demo_*.png` screenshots from `tests/demo/test_demo_browser.py` with
`ASINTROVAE_SCREENSHOTS=docs/figures`.

Every chart is a `matplotlib.figure.Figure` written without pyplot, so drawing changes no process-wide state.
"""

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import require
from ..json_io import read_json_lines
from .images.robustness_grid import grid_cells, save_grid_heatmap
from ..evaluation.statistics import describe
from ..objectives.registry import get_objective, objective_names

SEED_MARKERS = "osD^v<>phX"  # ten seeds, ten markers


def new_figure(width: float, height: float):
    """A matplotlib `Figure` of `width` x `height` inches, not registered with pyplot."""
    require("matplotlib", purpose="Drawing figures", extra="eval")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def method_label(name: str) -> str:
    """`"as-introvae:reference"` -> `"AS-IntroVAE (reference)"`: a record's method name as the figures print it."""
    base, _, preset = name.partition(":")
    for key in sorted(objective_names(), key=len, reverse=True):  # the registered objective the name starts with
        if base.startswith(key):
            base = get_objective(key).display_name + base[len(key):]
            break
    return base + (f" ({preset})" if preset else "")


def _method_key(name: str):
    """The tables' order: the simplest method first (the registry lists the default, AS-IntroVAE, first)."""
    order = objective_names()[::-1]
    base = name.partition(":")[0].split(" ")[0]
    return (order.index(base) if base in order else len(order), name)


def _seeds_text(records: Sequence[Dict]) -> str:
    seeds = sorted({r["seed"] for r in records})
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of seeds {', '.join(map(str, seeds))}"


def read_records(path: str) -> List[Dict]:
    """The records of one `runs.jsonl` file."""
    return [value for _, value in read_json_lines(path)]


def seed_figure(records: Sequence[Dict], metrics: Dict[str, str], path: str, title: str, log_metrics=(),
                value=lambda record, metric: record[metric]) -> Dict[str, Dict[str, Dict[int, float]]]:
    r"""
    One panel per metric: every seed of every method as a point (a marker per seed) and the mean with its 95 %
    Student's t interval as an error bar ([`statistics.describe`]; no bar for one seed). On a log axis, where such
    an interval can reach below 0, the bar spans the seeds' range instead.

    Args:
        records (`Sequence[Dict]`): Runs with `name` and `seed`.
        metrics (`Dict[str, str]`): Metric key -> axis title (with its unit and direction).
        path (`str`): The PNG to write.
        title (`str`): The figure's title.
        log_metrics (`Iterable[str]`): Metrics drawn on a log axis (their values span decades).
        value (`Callable`): Reads `metric` from a record.

    Returns:
        `Dict`: `metric -> method -> {seed: value}`, the values drawn.
    """
    methods = sorted({r["name"] for r in records}, key=_method_key)
    seeds = sorted({r["seed"] for r in records})
    fig = new_figure(max(3.2 * len(metrics), 8.0), 3.8)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    drawn, labelled = {}, set()
    for ax, (metric, axis_title) in zip(axes, metrics.items()):
        drawn[metric] = {}
        for x, method in enumerate(methods):
            per_seed = {r["seed"]: float(value(r, metric)) for r in records if r["name"] == method}
            drawn[metric][method] = per_seed
            for seed, v in per_seed.items():
                offset = 0.25 * (seeds.index(seed) / max(len(seeds) - 1, 1) - 0.5)
                ax.plot(x + offset, v, SEED_MARKERS[seeds.index(seed) % len(SEED_MARKERS)], color="0.45",
                        markersize=4, label=None if seed in labelled else f"seed {seed}")
                labelled.add(seed)
            stats = describe(list(per_seed.values()))
            if stats["n"] > 1:
                if metric in log_metrics:
                    bar, low, high = "mean, range of seeds", min(per_seed.values()), max(per_seed.values())
                else:
                    bar, low, high = "mean, 95 % t interval", stats["ci_low"], stats["ci_high"]
                ax.errorbar(x, stats["mean"], yerr=[[stats["mean"] - low], [high - stats["mean"]]], fmt="_",
                            color="C3", markersize=14, capsize=4, elinewidth=1.5,
                            label=None if bar in labelled else bar)
                labelled.add(bar)
            else:
                ax.plot(x, stats["mean"], "_", color="C3", markersize=14)
        ax.set_xticks(range(len(methods)), [method_label(m) for m in methods], rotation=35, ha="right",
                      fontsize=8)
        ax.set_ylabel(axis_title)
        if metric in log_metrics:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:  # a panel's own bar kind (t interval or range) joins the legend
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    order = sorted(range(len(labels)), key=lambda i: (labels[i].startswith("mean"), labels[i]))
    fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="outside lower center",
               ncol=len(labels), fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120)
    return drawn


def gradient_norm_figure(records: Sequence[Dict], path: str, floor: float = 1e-8) -> Optional[Dict]:
    r"""
    The encoder's gradient norm from the adversarial terms (lines) and from the VAE terms (dots) over the training
    steps, log scale, one panel per run label (a resolution) and one colour per method. Norms at or below `floor`,
    exactly 0 among them, are drawn at `floor` (dashed line).

    Returns:
        `Dict` or `None`: `(label, name, seed) -> {"steps", "adversarial", "vae"}`, the series drawn; `None` when no
        run recorded gradient norms.
    """
    runs = [r for r in records if r.get("gradient_norms")]
    if not runs:
        return None
    labels = list(dict.fromkeys(r.get("label") or "" for r in runs))
    methods = sorted({r["method"] + (":" + r["preset"] if r.get("preset") else "") for r in runs}, key=_method_key)
    fig = new_figure(3.4 * len(labels), 3.8)
    axes = fig.subplots(1, len(labels), sharey=True, squeeze=False)[0]
    drawn = {}
    for ax, label in zip(axes, labels):
        for r in (r for r in runs if (r.get("label") or "") == label):
            method = r["method"] + (":" + r["preset"] if r.get("preset") else "")
            steps, adversarial, vae = (list(v) for v in zip(*r["gradient_norms"]))
            drawn[(label, r["name"], r["seed"])] = {"steps": steps, "adversarial": adversarial, "vae": vae}
            colour = f"C{methods.index(method)}"
            name = f"{method_label(method)}, seed {r['seed']}"
            ax.plot(steps, np.maximum(adversarial, floor), "-", color=colour, lw=1.5,
                    label=f"{name}: adversarial terms")
            ax.plot(steps, np.maximum(vae, floor), ".", color=colour, markersize=4, label=f"{name}: VAE terms")
        ax.axhline(floor, color="0.5", lw=0.8, ls="--", label=f"<= {floor:g}, exactly 0 included, drawn here")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_title(f"{label[1:]} x {label[1:]} pixels" if label.startswith("r") else label, fontsize=9)
        ax.grid(alpha=0.3, which="major")
    axes[0].set_ylabel("encoder gradient norm (L2)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=2, fontsize=8)
    fig.savefig(path, dpi=120)
    return drawn


def zoo_samples_figure(path: str, num_images: int = 16, seed: int = 0) -> Dict[str, np.ndarray]:
    """
    `num_images` samples of each shipped pipeline from the generator `torch.manual_seed(seed)`, one panel per
    pipeline. Returns `name -> the images drawn` (`N x H x W x C` in `[0, 1]`).
    """
    import torch

    from ..pipelines.pipeline_asintrovae import AsIntroVAEPipeline
    from ..training.image_grids import images_to_grid
    from ..zoo import zoo_names, zoo_path

    names = zoo_names()
    fig = new_figure(2.4 * len(names), 2.9)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    drawn = {}
    for ax, name in zip(axes, names):
        pipe = AsIntroVAEPipeline.from_pretrained(zoo_path(name))
        images = pipe(batch_size=num_images, generator=torch.manual_seed(seed), output_type="np").images
        drawn[name] = images
        size, channels = images.shape[1], images.shape[3]
        grid = images_to_grid(torch.from_numpy(images).permute(0, 3, 1, 2), cols=int(np.ceil(np.sqrt(num_images))))
        ax.imshow(grid, cmap="gray" if channels == 1 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(f"{name}\n{size} x {size}, seed {seed}", fontsize=8)
        ax.set_axis_off()
    fig.savefig(path, dpi=120)
    return drawn


def averaged_over_evaluations(evaluations: Sequence[Dict], metrics: Sequence[str]) -> List[Dict]:
    """
    One record per trained model (`name`, `seed`) with each of `metrics` averaged over the evaluation seeds it was
    scored at, as the toy seed study averages them; models missing one of the evaluation seeds that occur in
    `evaluations` are left out, so every point is a mean of the same draws.
    """
    eval_seeds = {e["eval_seed"] for e in evaluations}
    models: Dict[tuple, Dict[int, Dict]] = {}
    for e in evaluations:
        models.setdefault((e["name"], e["seed"]), {})[e["eval_seed"]] = e
    return [{"name": name, "seed": seed, **{m: float(np.mean([e[m] for e in by_seed.values()])) for m in metrics}}
            for (name, seed), by_seed in sorted(models.items()) if set(by_seed) == eval_seeds]


def _runs_by_method(records: Sequence[Dict]) -> Dict[str, List[Dict]]:
    """`{record["name"]: [its records, in order]}`."""
    by_method: Dict[str, List[Dict]] = {}
    for record in records:
        by_method.setdefault(record["name"], []).append(record)
    return by_method


def median_seed(records: Sequence[Dict], metric: str = "fd",
                value=lambda record, metric: record["metrics"][metric]) -> Dict[str, Dict]:
    """
    Per method (`record["name"]`), the run whose `metric` is the median over its seeds (the lower middle one for an
    even count; ties go to the lower seed). `value` reads the metric from a record (default: `record["metrics"]`).
    """
    return {name: sorted(runs, key=lambda r: (value(r, metric), r["seed"]))[(len(runs) - 1) // 2]
            for name, runs in _runs_by_method(records).items()}


def worst_seed(records: Sequence[Dict], metric: str = "fd",
               value=lambda record, metric: record["metrics"][metric]) -> Dict[str, Dict]:
    """
    Per method, the run with the highest (worst) `metric` over its seeds (ties go to the lower seed): shown beside
    the median one so that a method whose seeds split is not judged by its better half.
    """
    return {name: max(runs, key=lambda r: (value(r, metric), -r["seed"]))
            for name, runs in _runs_by_method(records).items()}


def median_samples_figure(records: Sequence[Dict], samples_dir: str, path: str, metric: str = "fd") -> Dict[str, int]:
    """
    One row per method: the 16 samples its median-seed run drew from its saved pipeline
    (`samples_dir/<method>-seed<k>.png`, the run's `samples_from_pretrained.png`), titled with the seed and its
    `metric`. The seed is chosen by the metric, never as the best: returns `method -> seed shown`.
    """
    from PIL import Image

    chosen = median_seed(records, metric)
    names = sorted(chosen, key=_method_key)
    fig = new_figure(6.4, 1.2 * len(names))
    axes = fig.subplots(len(names), 1, squeeze=False)[:, 0]
    for ax, name in zip(axes, names):
        run = chosen[name]
        count = sum(1 for r in records if r["name"] == name)
        folder = f"{name.replace(':', '-')}-seed{run['seed']}.png"
        ax.imshow(np.asarray(Image.open(os.path.join(samples_dir, folder)).convert("L")), cmap="gray", vmin=0,
                  vmax=255, interpolation="nearest")
        ax.set_title(f"{method_label(name)}: seed {run['seed']}, the median of {count} seeds by "
                     f"{metric.upper() if metric == 'fd' else metric} ({run['metrics'][metric]:.1f})", fontsize=8,
                     loc="left")
        ax.set_axis_off()
    fig.savefig(path, dpi=150)
    return {name: chosen[name]["seed"] for name in names}


def make_figures(results_dir: str, output_dir: str) -> Dict[str, str]:
    """
    Draw every chart of `docs/figures` from the records under `results_dir`, and the zoo's samples; returns
    `file name -> path`.
    """
    os.makedirs(output_dir, exist_ok=True)
    out = lambda name: os.path.join(output_dir, name)  # noqa: E731
    records = lambda folder: read_records(os.path.join(results_dir, folder, "runs.jsonl"))  # noqa: E731
    written = {}

    heldout = (("mnist", "heldout_mnist.png", "mnist_samples.png",
                "MNIST (mnist-5k, 28 x 28), 1,000 held-out images, per seed"),
               ("digits-heldout", "heldout_digits.png", "digits_heldout_samples.png",
                "Built-in digits (16 x 16), 360 held-out images, per seed"))
    for folder, chart, samples, title in heldout:
        runs = records(folder)
        seed_figure(runs, {"fd": "Frechet distance (classifier) ↓", "precision": "precision ↑",
                           "recall": "recall ↑", "nll_bits_per_dim": "held-out NLL (bits / dim) ↓"},
                    out(chart), title, value=lambda r, metric: r["metrics"][metric])
        median_samples_figure(runs, os.path.join(results_dir, folder, "samples"), out(samples))
        written[chart], written[samples] = out(chart), out(samples)

    digits = [r for r in records("digits") if r["steps"] == 1000]
    seed_figure(digits, {"digits_fid": "digits FID ↓", "reconstruction_mse": "reconstruction MSE ↓"},
                out("digits_seeds.png"),
                "Built-in digits, 1,000 steps, scored on the 1,797 training images (pixels in [0, 1]), per seed")
    written["digits_seeds.png"] = out("digits_seeds.png")

    toy = records("toy2d-depth4")
    seed_figure(toy, {"kl": "KL ↓", "jsd": "JSD ↓"}, out("toy_8gaussians_seeds.png"),
                "8 Gaussians, 30,000 iterations, 4 x 256 networks: histogram KL and JSD (Soft-IntroVAE's estimators)",
                log_metrics=("kl", "jsd"))
    written["toy_8gaussians_seeds.png"] = out("toy_8gaussians_seeds.png")

    toy10_dir = os.path.join(results_dir, "toy10")
    if os.path.isfile(os.path.join(toy10_dir, "evaluations.jsonl")):
        evaluations = read_records(os.path.join(toy10_dir, "evaluations.jsonl"))
        toy10 = averaged_over_evaluations(evaluations, ("kl", "jsd", "high_quality"))
        num_draws = len({e["eval_seed"] for e in evaluations})
        seed_figure(toy10, {"kl": "KL ↓", "jsd": "JSD ↓", "high_quality": "high-quality share ↑"},
                    out("toy_8gaussians_10seeds.png"),
                    "8 Gaussians, 30,000 iterations, 4 x 256 networks: one point per training seed, its model's mean "
                    f"over {num_draws} evaluation draws")
        written["toy_8gaussians_10seeds.png"] = out("toy_8gaussians_10seeds.png")

    gradient_norm_figure(records("mechanism"), out("mechanism_gradient_norms.png"))
    written["mechanism_gradient_norms.png"] = out("mechanism_gradient_norms.png")

    robustness = records("robustness")
    save_grid_heatmap(grid_cells(robustness, "digits_fid"), out("digits_grid.png"), "digits FID",
                      f"digits, 1,000 steps, {_seeds_text(robustness)}", order=_method_key)
    written["digits_grid.png"] = out("digits_grid.png")
    toy_grid = [r for r in records("toy2d-grid") if r["dataset"] == "8gaussians"]
    save_grid_heatmap(grid_cells(toy_grid, "kl"), out("toy_grid_8gaussians.png"), "KL",
                      f"8 Gaussians, 2,000 iterations, {_seeds_text(toy_grid)}", order=_method_key)
    written["toy_grid_8gaussians.png"] = out("toy_grid_8gaussians.png")

    zoo_samples_figure(out("zoo_samples.png"))
    written["zoo_samples.png"] = out("zoo_samples.png")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make_figures", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--results_dir", default="results", help="The folder of the committed records.")
    parser.add_argument("--output_dir", default=os.path.join("docs", "figures"), help="Where the PNGs go.")
    args = parser.parse_args(argv)
    for name, path in make_figures(args.results_dir, args.output_dir).items():
        print(f"{name}: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
