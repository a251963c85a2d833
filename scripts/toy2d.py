#!/usr/bin/env python
"""The 2D toy benchmark: VAE, IntroVAE, Soft-IntroVAE and AS-IntroVAE on 8 Gaussians, 2 spirals, checkerboard, rings.

    python scripts/toy2d.py --dataset 8gaussians --methods vae introvae soft-introvae as-introvae \
        --seeds 0 1 2 --num_iter 30000 --output_dir results/toy2d

Prints one JSON line per run (`dataset, method, seed, num_iter, kl, jsd, gnelbo, seconds`), and writes to
`--output_dir` a markdown table (mean and std over seeds), the JSON lines, and one PNG per dataset with, per method,
the generated points and the model density `exp(-negative ELBO)` over the evaluation square (as the paper's Fig. 1).
The estimators are documented in `asintrovae_hf.metrics`.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from asintrovae_hf.metrics import grid_normalized_elbo, histogram_kl_jsd
from asintrovae_hf.objectives import OBJECTIVES, ObjectiveConfig
from asintrovae_hf.toy_data import TOY_DATASETS, sample_toy_data, toy_eval_range
from asintrovae_hf.toy_hparams import toy_hyperparameters
from asintrovae_hf.vector_training import negative_elbo, sample_points, train_vector_model

EVAL_POINTS = 5000
GNELBO_POINTS = 51200
# flags that override the reference hyper-parameters (the first seven are floats)
OVERRIDES = ("beta_rec", "beta_kl", "beta_neg", "gamma_r", "margin", "dis_scale", "learning_rate", "schedule",
             "encoder_reduction", "decoder_reduction", "squash")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", nargs="+", default=["8gaussians"], choices=TOY_DATASETS)
    p.add_argument("--methods", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--num_iter", type=int, default=30000)
    p.add_argument("--num_vae_steps", type=int, default=None, help="Default: the reference's 2,000 (capped).")
    p.add_argument("--batch_size", type=int, default=512)
    p.add_argument("--output_dir", type=str, default="results/toy2d")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (1 is fastest on a shared machine).")
    p.add_argument("--gnelbo_grid", type=int, default=1024, help="Grid size of the grid-normalized ELBO.")
    p.add_argument("--eval_seed", type=int, default=1234)
    p.add_argument("--summarize", nargs="+", default=None, metavar="RUNS_JSONL",
                   help="Only rebuild the markdown table in --output_dir from runs.jsonl files of earlier runs.")
    # overrides of the reference hyper-parameters
    for name in OVERRIDES[:7]:
        p.add_argument(f"--{name}", type=float, default=None)
    p.add_argument("--schedule", choices=("linear", "tanh"), default=None)
    p.add_argument("--encoder_reduction", choices=("sum", "mean"), default=None)
    p.add_argument("--decoder_reduction", choices=("sum", "mean"), default=None)
    p.add_argument("--squash", action=argparse.BooleanOptionalAction, default=None)
    return p.parse_args(argv)


def run_one(dataset, method, seed, args):
    hp = toy_hyperparameters(dataset, method)
    for key in OVERRIDES:
        if getattr(args, key) is not None:
            hp[key] = getattr(args, key)
    learning_rate = hp.pop("learning_rate", 2e-4)
    config = ObjectiveConfig(objective=method, **hp)
    num_vae = args.num_vae_steps if args.num_vae_steps is not None else min(2000, args.num_iter // 15)
    started = time.time()
    encoder, decoder, history = train_vector_model(
        lambda n, g: sample_toy_data(dataset, n, generator=g),
        config,
        num_iter=args.num_iter,
        batch_size=args.batch_size,
        num_vae_steps=num_vae,
        learning_rate=learning_rate,
        seed=seed,
        log_every=max(args.num_iter // 20, 1),
    )
    eval_gen = torch.Generator().manual_seed(args.eval_seed)
    real = sample_toy_data(dataset, EVAL_POINTS, generator=eval_gen)
    fake = sample_points(decoder, EVAL_POINTS, generator=eval_gen)
    square = toy_eval_range(dataset)
    kl, jsd = histogram_kl_jsd(real.numpy(), fake.numpy(), bins=100, range_=square)
    gn_real = sample_toy_data(dataset, GNELBO_POINTS, generator=eval_gen)
    gnelbo = grid_normalized_elbo(lambda pts: negative_elbo(encoder, decoder, pts, config.loss_type), gn_real,
                                  grid_size=args.gnelbo_grid, range_=square)
    record = {"dataset": dataset, "method": method, "seed": seed, "num_iter": args.num_iter, "kl": float(kl),
              "jsd": float(jsd), "gnelbo": float(gnelbo), "seconds": round(time.time() - started, 1)}
    return record, (encoder, decoder, fake.numpy(), config, history)


def _colormap(values: np.ndarray) -> np.ndarray:
    """A perceptual dark-blue -> teal -> yellow ramp for `values` in [0, 1] (H x W -> H x W x 3 uint8)."""
    stops = np.array([[0.05, 0.03, 0.25], [0.13, 0.45, 0.56], [0.2, 0.72, 0.47], [0.99, 0.9, 0.14]])
    pos = np.clip(values, 0, 1) * (len(stops) - 1)
    low = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = (pos - low)[..., None]
    return ((stops[low] * (1 - frac) + stops[low + 1] * frac) * 255).astype(np.uint8)


def _points_panel(points: np.ndarray, square, size: int = 256) -> Image.Image:
    lo, hi = square
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    px = ((points - lo) / (hi - lo) * (size - 1))
    for x, y in px:
        if 0 <= x < size and 0 <= y < size:
            draw.point((x, size - 1 - y), fill=(30, 80, 200))
    return img


@torch.no_grad()
def _density_panel(encoder, decoder, loss_type, square, size: int = 256) -> Image.Image:
    lo, hi = square
    axis = torch.linspace(lo, hi, size)
    gx, gy = torch.meshgrid(axis, axis.flip(0), indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    density = torch.exp(-negative_elbo(encoder, decoder, grid, loss_type)).reshape(size, size).numpy()
    density = density / max(density.max(), 1e-30)
    return Image.fromarray(_colormap(density))


def save_figure(dataset, panels, path):
    """One column per method: generated points above the model density."""
    size, pad, label = 256, 8, 24
    cols = len(panels)
    fig = Image.new("RGB", (cols * (size + pad) + pad, 2 * (size + pad) + label + pad), "white")
    draw = ImageDraw.Draw(fig)
    for i, (method, (encoder, decoder, fake, config, _)) in enumerate(panels.items()):
        x = pad + i * (size + pad)
        draw.text((x, 6), f"{method} ({dataset})", fill="black")
        square = toy_eval_range(dataset)
        fig.paste(_points_panel(fake, square), (x, label))
        fig.paste(_density_panel(encoder, decoder, config.loss_type, square), (x, label + size + pad))
    fig.save(path)


def markdown_table(records):
    rows = ["| dataset | method | seeds | KL (mean ± std) | JSD (mean ± std) | gnELBO (mean ± std) | s/run |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    keys = sorted({(r["dataset"], r["method"]) for r in records}, key=lambda k: (k[0], OBJECTIVES.index(k[1])))
    for dataset, method in keys:
        rs = [r for r in records if r["dataset"] == dataset and r["method"] == method]
        def cell(k, fmt=".2f"):
            return f"{np.mean([r[k] for r in rs]):{fmt}} ± {np.std([r[k] for r in rs]):{fmt}}"

        rows.append(f"| {dataset} | {method} | {len(rs)} | {cell('kl')} | {cell('jsd')} | {cell('gnelbo', '.3e')} | "
                    f"{np.mean([r['seconds'] for r in rs]):.0f} |")
    return "\n".join(rows) + "\n"


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.summarize:
        records = [json.loads(line) for path in args.summarize for line in open(path) if line.strip()]
        write_table(records, args.output_dir)
        return 0
    runs = [(d, m, s) for d in args.dataset for m in args.methods for s in args.seeds]
    records = []
    bar = tqdm(total=len(runs), desc="runs", file=sys.stderr)
    with open(os.path.join(args.output_dir, "runs.jsonl"), "a") as log:
        for dataset in args.dataset:
            panels = {}
            for method in args.methods:
                for seed in args.seeds:
                    record, artefacts = run_one(dataset, method, seed, args)
                    print(json.dumps(record), flush=True)
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    records.append(record)
                    if seed == args.seeds[0]:
                        panels[method] = artefacts
                    bar.set_postfix_str(f"{dataset} {method} seed {seed}: KL {record['kl']:.2f} JSD {record['jsd']:.2f}")
                    bar.update(1)
            save_figure(dataset, panels, os.path.join(args.output_dir, f"{dataset}.png"))
    bar.close()
    write_table(records, args.output_dir)
    return 0


def write_table(records, output_dir):
    iters = sorted({r["num_iter"] for r in records})
    table = markdown_table(records)
    with open(os.path.join(output_dir, "results.md"), "w") as f:
        f.write(f"Toy 2D benchmark, {', '.join(map(str, iters))} iterations per run.\n\n" + table)
    print(table, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
