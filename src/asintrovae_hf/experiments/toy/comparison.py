"""Runs of the 2D toy benchmark, their records, tables and figures (the library behind `asintrovae-toy2d`).

A run is fully described by a [`ToyRun`]; its [`ToyRun.key`] names it in a `runs.jsonl` file of finished runs, so a
batch that was interrupted resumes with the runs it has not finished. The trained MLPs of a run are saved (as
safetensors) beside the records, so the figures can be redrawn from finished runs alone.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ...json_io import read_json_lines
from ...models.autoencoder_vector import AsIntroVAEVectorDecoder, AsIntroVAEVectorEncoder
from ..images.robustness_grid import grid_cells, grid_markdown
from ..images.robustness_grid import save_grid_heatmap as draw_grid_heatmap
from ...objectives.config import ObjectiveConfig
from ...objectives.registry import objective_names
from ...training.checkpointing import list_checkpoints
from ..provenance import code_version
from .data import sample_toy_data, toy_eval_range, toy_modes
from .hparams import BATCH_SIZE, HIDDEN_DIMS, LEARNING_RATE, LR_GAMMA, toy_lr_milestones
from .metrics import grid_normalized_elbo, histogram_kl_jsd, mode_coverage
from .vector_training import negative_elbo_at_posterior_mean, sample_points, train_vector_model

EVAL_POINTS = 5000
GNELBO_POINTS = 51200
# runs recorded before the networks could be chosen used three hidden layers of 256
LEGACY_HIDDEN_DIMS = (256, 256, 256)


@dataclasses.dataclass
class ToyRun:
    r"""
    One training run of the toy benchmark and how it is evaluated.

    Args:
        dataset (`str`): A toy dataset.
        name (`str`): The row label of the method in tables, e.g. `"as-introvae (reference)"`.
        config (`ObjectiveConfig`): The objective.
        seed (`int`): Seeds the weights, the data and the noise.
        num_iter (`int`): Iterations, the warm-up included.
        batch_size, learning_rate, lr_milestones, lr_gamma: The loop (see [`train_vector_model`]).
        hidden_dims (`Tuple[int]`): Widths of the hidden layers of both MLPs (default: the official networks).
        overrides (`Dict`): The grid values of this run (for robustness grids), `{}` otherwise.
        eval_seed (`int`), gnelbo_grid (`int`): The evaluation draws and the gnELBO grid size.
    """

    dataset: str
    name: str
    config: ObjectiveConfig
    seed: int
    num_iter: int
    batch_size: int = BATCH_SIZE
    learning_rate: float = LEARNING_RATE
    lr_milestones: Optional[Tuple[int, ...]] = None
    lr_gamma: float = LR_GAMMA
    hidden_dims: Tuple[int, ...] = HIDDEN_DIMS
    overrides: Dict = dataclasses.field(default_factory=dict)
    eval_seed: int = 1234
    gnelbo_grid: int = 1024

    def __post_init__(self):
        if self.lr_milestones is None:
            self.lr_milestones = toy_lr_milestones(self.num_iter)
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        self.hidden_dims = tuple(int(d) for d in self.hidden_dims)

    def settings(self) -> Dict:
        """Everything that determines the result (the `name` aside)."""
        return {"dataset": self.dataset, "seed": self.seed, "num_iter": self.num_iter,
                "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                "lr_milestones": list(self.lr_milestones), "lr_gamma": self.lr_gamma,
                "hidden_dims": list(self.hidden_dims), "eval_seed": self.eval_seed,
                "gnelbo_grid": self.gnelbo_grid, "config": self.config.to_dict()}

    def key(self) -> str:
        return json.dumps(self.settings(), sort_keys=True)

    def run_id(self) -> str:
        digest = hashlib.sha1(self.key().encode()).hexdigest()[:10]
        return f"{self.dataset}-{self.config.objective}-seed{self.seed}-{digest}"


def run_toy(
    run: ToyRun,
    model_dir: Optional[str] = None,
    callback: Optional[Callable[[int, Dict], None]] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> Dict:
    """
    Train and evaluate one run; return its record (a JSON-able dict). With `model_dir`, the encoder and decoder are
    saved to `model_dir/<run_id>/{encoder,decoder}` (safetensors), and the run keeps a checkpoint in
    `model_dir/<run_id>/checkpoint-N/` while it trains, so a killed run resumes from it (see
    [`train_vector_model`]); the checkpoint is removed once the run is recorded. `callback(iteration, terms)` is
    called every 5 % of the run (for progress bars). `device` is where the networks train (default: the CPU; the
    random draws are the same on every device, see [`train_vector_model`]); it is recorded, not part of the run's
    key, and the evaluation always runs on the CPU.
    """
    started = time.time()
    folder = os.path.join(model_dir, run.run_id()) if model_dir is not None else None
    encoder, decoder, history = train_vector_model(
        lambda n, g: sample_toy_data(run.dataset, n, generator=g),
        run.config,
        num_iter=run.num_iter,
        batch_size=run.batch_size,
        learning_rate=run.learning_rate,
        lr_milestones=run.lr_milestones,
        lr_gamma=run.lr_gamma,
        seed=run.seed,
        hidden_dims=run.hidden_dims,
        log_every=max(run.num_iter // 20, 1),
        checkpoint_dir=folder,
        checkpoint_every=max(min(1000, run.num_iter // 10), 1),
        callback=callback,
        device=device,
    )
    trained = time.time()
    scores = evaluate_toy_model(encoder, decoder, run.dataset, run.config.loss_type, run.eval_seed,
                                run.gnelbo_grid)
    if folder is not None:
        encoder.save_pretrained(os.path.join(folder, "encoder"))
        decoder.save_pretrained(os.path.join(folder, "decoder"))
        for checkpoint in list_checkpoints(folder):
            shutil.rmtree(checkpoint)
    last = dict(history[-1]) if history else {}
    train_seconds = last.pop("seconds", trained - started)  # summed over the sessions of a resumed run
    devices = last.pop("devices", [str(torch.device(device or "cpu"))])  # every device a resumed run trained on
    return {
        "dataset": run.dataset, "method": run.config.objective, "name": run.name, "seed": run.seed,
        "num_iter": run.num_iter, **scores, "hidden_dims": list(run.hidden_dims),
        "seconds": round(train_seconds + time.time() - trained, 1), "devices": devices,
        "overrides": run.overrides, "run_id": run.run_id(), "code_version": code_version(),
        "final_terms": {k: v for k, v in last.items() if isinstance(v, float)},
        "settings": run.settings(),
    }


def record_key(record: Dict) -> Optional[str]:
    """
    The [`ToyRun.key`] of a finished run's record (`None` for records written before settings were kept). Records
    written before `hidden_dims` was a setting ran [`LEGACY_HIDDEN_DIMS`].
    """
    if "settings" not in record:
        return None
    return json.dumps({"hidden_dims": list(LEGACY_HIDDEN_DIMS), **record["settings"]}, sort_keys=True)


def record_hidden_dims(record: Dict) -> Tuple[int, ...]:
    """The hidden widths a record's networks had."""
    return tuple(record.get("settings", {}).get("hidden_dims", LEGACY_HIDDEN_DIMS))


@torch.no_grad()
def evaluate_toy_model(encoder, decoder, dataset: str, loss_type: str = "mse", eval_seed: int = 1234,
                       gnelbo_grid: int = 1024) -> Dict[str, float]:
    """
    `kl`, `jsd` (5,000 real vs 5,000 generated points), `gnelbo` (51,200 real points) and, for data with discrete
    modes, `modes_covered` and `high_quality` of the same 5,000 generated points (see
    `asintrovae_hf.experiments.toy.metrics`).
    """
    encoder.eval(), decoder.eval()
    eval_gen = torch.Generator().manual_seed(eval_seed)
    real = sample_toy_data(dataset, EVAL_POINTS, generator=eval_gen)
    fake = sample_points(decoder, EVAL_POINTS, generator=eval_gen)
    square = toy_eval_range(dataset)
    kl, jsd = histogram_kl_jsd(real.numpy(), fake.numpy(), bins=100, range_=square)
    gn_real = sample_toy_data(dataset, GNELBO_POINTS, generator=eval_gen)
    gnelbo = grid_normalized_elbo(lambda pts: negative_elbo_at_posterior_mean(encoder, decoder, pts, loss_type),
                                  gn_real, grid_size=gnelbo_grid, range_=square)
    scores = {"kl": float(kl), "jsd": float(jsd), "gnelbo": float(gnelbo)}
    modes = toy_modes(dataset)
    if modes is not None:
        scores["modes_covered"], scores["high_quality"] = mode_coverage(fake, *modes)
    return scores


def read_records(paths: Iterable[str]) -> List[Dict]:
    """The records of finished runs in `runs.jsonl` files (missing files are skipped; a torn last line too)."""
    records = []
    for path in paths:
        if not os.path.isfile(path):
            continue
        # a line torn by a run killed while writing it is skipped: that run is redone
        records.extend(value for _, value in read_json_lines(path, skip_invalid=True))
    return records


def append_record(path: str, record: Dict) -> None:
    """Append one JSON line and flush it to disk, so a killed batch keeps every finished run."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_run_models(model_dir: str, run_id: str):
    folder = os.path.join(model_dir, run_id)
    if not os.path.isdir(folder):
        return None
    encoder = AsIntroVAEVectorEncoder.from_pretrained(os.path.join(folder, "encoder")).eval()
    decoder = AsIntroVAEVectorDecoder.from_pretrained(os.path.join(folder, "decoder")).eval()
    return encoder, decoder


# ---- tables ----------------------------------------------------------------------------------------------------


def _mean_std(values: Sequence[float], fmt: str = ".2f") -> str:
    """`"mean ± sample std"` (`ddof = 1`; the mean alone for one value)."""
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{np.mean(values):{fmt}} ± {np.std(values, ddof=1):{fmt}}"


def _group(records: List[Dict], with_overrides: bool) -> Dict[Tuple, List[Dict]]:
    groups: Dict[Tuple, List[Dict]] = {}
    for r in records:
        extra = json.dumps(r.get("overrides", {}), sort_keys=True) if with_overrides else ""
        key = (r["dataset"], r.get("name", r["method"]), r["num_iter"], record_hidden_dims(r), extra)
        groups.setdefault(key, []).append(r)
    return groups


def method_order(name: str) -> Tuple[int, str]:
    """Tables list the objectives in reverse registration order (VAE, IntroVAE, Soft-IntroVAE, AS-IntroVAE, after
    any registered later), then unregistered names."""
    method, methods = name.split(" ")[0], objective_names()[::-1]
    return (methods.index(method) if method in methods else len(methods), name)


def _hidden_text(dims: Tuple[int, ...]) -> str:
    return f"{len(dims)} x {dims[0]}" if len(set(dims)) == 1 else " x ".join(map(str, dims))


def markdown_table(records: List[Dict]) -> str:
    """
    Mean ± sample std (`ddof = 1`) over seeds of KL, JSD, gnELBO and (where recorded) modes covered and the share of high-quality
    samples, one row per dataset, method, budget and network size.
    """
    rows = ["| dataset | method | hidden layers | iterations | seeds | KL (mean ± sample std) | JSD (mean ± sample std) "
            "| modes covered (mean ± sample std) | high-quality share (mean ± sample std) | gnELBO (mean ± sample std) | s/run |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    groups = _group([r for r in records if not r.get("overrides")], with_overrides=False)
    for (dataset, name, num_iter, dims, _), rs in sorted(
            groups.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][3], method_order(kv[0][1]))):
        seeds = ", ".join(str(s) for s in sorted(r["seed"] for r in rs))
        modes = [r["modes_covered"] for r in rs if "modes_covered" in r]
        quality = [r["high_quality"] for r in rs if "high_quality" in r]
        rows.append(f"| {dataset} | {name} | {_hidden_text(dims)} | {num_iter} | {seeds} | "
                    f"{_mean_std([r['kl'] for r in rs])} | {_mean_std([r['jsd'] for r in rs])} | "
                    f"{_mean_std(modes, '.1f') if len(modes) == len(rs) else 'n/a'} | "
                    f"{_mean_std(quality, '.3f') if len(quality) == len(rs) else 'n/a'} | "
                    f"{_mean_std([r['gnelbo'] for r in rs], '.3e')} | {np.mean([r['seconds'] for r in rs]):.0f} |")
    return "\n".join(rows) + "\n"


def grid_table(records: List[Dict], factor: float = 2.0) -> str:
    r"""
    The robustness grid per dataset: KL per cell and method, and per method the cells within `factor` x of the best
    cell (the best of all methods on that dataset, and the method's own best).
    """
    out = []
    for dataset in sorted({r["dataset"] for r in records if r.get("overrides")}):
        cells = grid_cells([r for r in records if r["dataset"] == dataset], "kl")
        out.append(grid_markdown(cells, "KL", dataset, near=factor, collapse=None, order=method_order))
    return "".join(out)


# ---- figures ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def _density(encoder, decoder, loss_type, square, size: int = 200) -> np.ndarray:
    """`exp(-negative ELBO)` on a `size` x `size` grid over `square`, rows from the bottom (y = lo) up."""
    lo, hi = square
    axis = torch.linspace(lo, hi, size)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    return torch.exp(-negative_elbo_at_posterior_mean(encoder, decoder, grid, loss_type)).reshape(size, size).numpy()


def save_figure(dataset: str, panels: Dict[str, Tuple], path: str, eval_seed: int = 1234) -> None:
    """
    One column per method (`panels[name] = (encoder, decoder)`): generated points above the model density
    `exp(-negative ELBO)`, relative to its maximum on a log colour scale with its colour bar.
    """
    from matplotlib.colors import LogNorm

    from ..figures import method_label, new_figure

    lo, hi = toy_eval_range(dataset)
    fig = new_figure(1.0 + 2.6 * len(panels), 5.6)
    axes = fig.subplots(2, len(panels), sharex=True, sharey=True, squeeze=False)
    norm = LogNorm(vmin=1e-4, vmax=1.0)
    for column, (name, (encoder, decoder)) in enumerate(panels.items()):
        fake = sample_points(decoder, EVAL_POINTS, generator=torch.Generator().manual_seed(eval_seed)).numpy()
        top, bottom = axes[0, column], axes[1, column]
        top.scatter(fake[:, 0], fake[:, 1], s=1, color="C0", alpha=0.5)
        method, _, detail = name.partition("\n")  # "method\nseed s, ..." puts the seed on a second line
        top.set_title(method_label(method) + (f"\n{detail}" if detail else ""), fontsize=9)
        density = _density(encoder, decoder, "mse", (lo, hi))
        image = bottom.imshow(np.maximum(density / max(density.max(), 1e-30), norm.vmin), norm=norm,
                              cmap="viridis", origin="lower", extent=(lo, hi, lo, hi))
        for ax in (top, bottom):
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_aspect("equal")
        bottom.set_xlabel("x")
        if column == 0:
            top.set_ylabel(f"y ({EVAL_POINTS} generated points)")
            bottom.set_ylabel("y (model density)")
    fig.colorbar(image, ax=list(axes[1]), label="exp(-negative ELBO) / its maximum", shrink=0.9)
    fig.savefig(path, dpi=120)


def save_grid_heatmap(records: List[Dict], dataset: str, path: str) -> bool:
    """A heat map of KL per grid cell for `dataset` ([`robustness_grid.save_grid_heatmap`])."""
    cells = grid_cells([r for r in records if r["dataset"] == dataset], "kl")
    return draw_grid_heatmap(cells, path, "KL", dataset, order=method_order)
