#!/usr/bin/env python
"""Save a grid of samples of one or several saved pipelines side by side, each under its name.

    python scripts/sample_grid.py --pipeline as-introvae-digits --output samples.png
    # a class-conditional pipeline: one row per class (column c of every row shares its latent)
    python scripts/sample_grid.py --pipeline as-introvae-digits-cond --output per_class.png
    python scripts/sample_grid.py --pipeline runs/vae runs/soft runs/as --name VAE Soft AS --output compare.png

Every pipeline gets the same latents (`--seed`), so the blocks differ only by their models.
"""

import argparse
import sys

import torch
from PIL import Image, ImageDraw

from asintrovae_hf import AsIntroVAEPipeline
from asintrovae_hf.training.image_grids import images_to_grid


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pipeline", nargs="+", required=True, help="Saved pipelines: folders or Hub ids.")
    p.add_argument("--name", nargs="+", default=None, help="A title per pipeline (default: the path).")
    p.add_argument("--rows", type=int, default=8, help="Rows of an unconditional grid (conditional: one per class).")
    p.add_argument("--cols", type=int, default=8, help="Samples per row.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True, help="The PNG file to write.")
    args = p.parse_args(argv)
    if args.name is not None and len(args.name) != len(args.pipeline):
        p.error(f"--name takes one title per pipeline: {len(args.pipeline)} pipelines, {len(args.name)} names.")
    if args.rows < 1 or args.cols < 1:
        p.error(f"--rows and --cols must be positive; got {args.rows} and {args.cols}.")
    return args


@torch.no_grad()
def sample_block(pipeline: AsIntroVAEPipeline, rows: int, cols: int, seed: int) -> Image.Image:
    """`rows x cols` samples; a class-conditional pipeline gets one row per class and the same latents in each row."""
    num_classes = pipeline.num_classes
    generator = torch.Generator().manual_seed(seed)
    if num_classes:
        latents = torch.randn(cols, pipeline.latent_dim, generator=generator).repeat(num_classes, 1)
        labels = torch.arange(num_classes).repeat_interleave(cols)
    else:
        latents, labels = torch.randn(rows * cols, pipeline.latent_dim, generator=generator), None
    images = pipeline.decode(latents, output_type="pt", class_labels=labels).images
    return images_to_grid(images, cols=cols)


def titled(block: Image.Image, title: str, height: int = 18) -> Image.Image:
    canvas = Image.new("L", (block.width, block.height + height), 255)
    canvas.paste(block.convert("L"), (0, height))
    ImageDraw.Draw(canvas).text((4, 3), title, fill=0)
    return canvas


def main(argv=None) -> int:
    args = parse_args(argv)
    names = args.name or args.pipeline
    try:
        blocks = [titled(sample_block(AsIntroVAEPipeline.from_pretrained(path), args.rows, args.cols, args.seed), name)
                  for path, name in zip(args.pipeline, names)]
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    gap = 8
    figure = Image.new("L", (sum(b.width for b in blocks) + gap * (len(blocks) - 1), max(b.height for b in blocks)),
                       255)
    x = 0
    for block in blocks:
        figure.paste(block, (x, 0))
        x += block.width + gap
    figure.save(args.output)
    print(f"wrote {args.output} ({figure.width} x {figure.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
