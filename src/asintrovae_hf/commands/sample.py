"""Sample N images from a saved pipeline (a folder or a Hub id) into a folder or a grid: `asintrovae-sample`.

    asintrovae-sample --pipeline as-introvae-digits --num_images 64 --output_dir samples          # 000000.png, ...
    asintrovae-sample --pipeline you/as-introvae-digits --num_images 64 --grid samples.png --cols 8
    asintrovae-sample --pipeline as-introvae-digits --num_images 10000 --output_type npy --output_dir arrays
    asintrovae-sample --pipeline as-introvae-digits-cond --num_images 20 --class_labels 7 --output_dir sevens

Image `i` is drawn from its own generator seeded `--seed + i`, so the images depend on the seed and their index only,
never on `--batch_size`: two runs with the same seed write the same images, and `--num_images 100` starts with the
images of `--num_images 10`. `--output_type`: `png`, `jpg` or `webp` write one file per image; `npy` writes
`samples.npy` (`N x H x W x C`, float32 in `[0, 1]`); `pt` writes `samples.pt` (`N x C x H x W`, a plain tensor that
`torch.load(weights_only=True)` reads). `--grid FILE` writes one grid image instead of (or, with `--output_dir`, as
well as) the folder.
"""

import argparse
import json
import os
import sys
from typing import List, Optional

IMAGE_TYPES = ("png", "jpg", "webp")
ARRAY_TYPES = ("npy", "pt")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="asintrovae-sample", description=__doc__.split("\n")[0])
    p.add_argument("--pipeline", required=True,
                   help="A folder written by save_pretrained, a Hub id, or a shipped "
                        "pipeline's name (asintrovae_hf.zoo, e.g. as-introvae-mnist-5k).")
    p.add_argument("--num_images", type=_positive, default=64, help="How many images (default: 64).")
    p.add_argument("--output_dir", default=None, help="The folder to write the images (or the array) into.")
    p.add_argument("--grid", default=None, metavar="FILE",
                   help="Write the images as one grid image, e.g. samples.png (the format follows the extension).")
    p.add_argument("--cols", type=_positive, default=8, help="Images per row of --grid (default: 8).")
    p.add_argument("--output_type", default="png", choices=IMAGE_TYPES + ARRAY_TYPES,
                   help="What --output_dir gets: one png / jpg / webp file per image (default: png), or all of "
                        "them in samples.npy or samples.pt.")
    p.add_argument("--seed", type=int, default=0, help="Image i is drawn with seed + i (default: 0).")
    p.add_argument("--batch_size", type=_positive, default=64,
                   help="Images decoded at a time (memory only: the images do not depend on it; default: 64).")
    p.add_argument("--class_labels", type=int, nargs="+", default=None,
                   help="Class-conditional pipelines: one class for every image, or one per image "
                        "(default: the classes in turn, 0, 1, 2, ...).")
    p.add_argument("--latent_sampler", default="prior", choices=("prior", "fitted"),
                   help="Draw the latents from the prior N(0, I) (default) or from the pipeline's fitted latent_prior "
                        "(asintrovae_hf.models.fit_latent_prior).")
    p.add_argument("--device", default=None, help="Where to run, e.g. cpu or cuda (default: cuda when available).")
    p.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"),
                   help="Load the networks in this dtype (default: as saved).")
    return p


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output_dir is None and args.grid is None:
        parser.error("give --output_dir (a folder of images or an array), --grid FILE (one grid image), or both")
    if args.class_labels is not None and len(args.class_labels) not in (1, args.num_images):
        parser.error(f"--class_labels takes one class or one per image ({args.num_images}); got "
                     f"{len(args.class_labels)}")
    return args


def _labels(pipe, args) -> Optional[List[int]]:
    num_classes = pipe.num_classes
    if not num_classes:
        if args.class_labels is not None:
            raise ValueError(f"--class_labels: the pipeline {args.pipeline!r} is not class-conditional.")
        return None
    labels = args.class_labels or list(range(num_classes))
    if len(labels) == 1:
        labels = labels * args.num_images
    elif len(labels) != args.num_images:  # the default: the classes in turn
        labels = [labels[i % len(labels)] for i in range(args.num_images)]
    bad = [y for y in labels if not 0 <= y < num_classes]
    if bad:
        raise ValueError(f"--class_labels must be in [0, {num_classes}); got {bad[0]}.")
    return labels


def sample(args: argparse.Namespace):
    """The `N x C x H x W` samples in `[0, 1]` (a CPU float32 tensor) and the pipeline."""
    import torch

    from .. import AsIntroVAEPipeline
    from ..zoo import resolve_pipeline

    kwargs = {"dtype": getattr(torch, args.dtype)} if args.dtype else {}
    pipe = AsIntroVAEPipeline.from_pretrained(resolve_pipeline(args.pipeline), **kwargs)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        pipe.to(torch.device(device))
    except (RuntimeError, AssertionError) as err:
        raise ValueError(f"--device {device!r} cannot be used: {' '.join(str(err).split())}") from None
    pipe.set_progress_bar_config(disable=True)
    labels = _labels(pipe, args)
    chunks = []
    for start in range(0, args.num_images, args.batch_size):
        count = min(args.batch_size, args.num_images - start)
        generators = [torch.Generator().manual_seed(args.seed + start + i) for i in range(count)]
        chunk_labels = None if labels is None else labels[start:start + count]
        out = pipe(batch_size=count, generator=generators, output_type="pt", class_labels=chunk_labels,
                   latent_sampler=args.latent_sampler).images
        chunks.append(out.float().cpu())
    return torch.cat(chunks), pipe


def write_outputs(images, args: argparse.Namespace) -> List[str]:
    """Write the folder and / or the grid; returns the paths written."""
    import numpy as np
    import torch
    from PIL import Image

    from ..training.image_grids import images_to_grid

    written = []
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        if args.output_type == "npy":
            path = os.path.join(args.output_dir, "samples.npy")
            np.save(path, images.permute(0, 2, 3, 1).numpy().astype(np.float32))
            written.append(path)
        elif args.output_type == "pt":
            path = os.path.join(args.output_dir, "samples.pt")
            torch.save(images.contiguous(), path)
            written.append(path)
        else:
            arrays = (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
            width = max(6, len(str(len(arrays) - 1)))
            for i, array in enumerate(arrays):
                path = os.path.join(args.output_dir, f"{i:0{width}d}.{args.output_type}")
                Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
                written.append(path)
    if args.grid:
        folder = os.path.dirname(os.path.abspath(args.grid))
        os.makedirs(folder, exist_ok=True)
        images_to_grid(images, cols=args.cols).save(args.grid)
        written.append(args.grid)
    return written


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from ..errors import one_line

    try:
        images, _ = sample(args)
        written = write_outputs(images, args)
    except (OSError, ValueError) as err:
        print(f"error: {one_line(err, 300)}", file=sys.stderr)
        return 1
    summary = {"pipeline": args.pipeline, "num_images": len(images), "seed": args.seed,
               "size": list(images.shape[1:]), "output_dir": args.output_dir, "grid": args.grid,
               "output_type": args.output_type if args.output_dir else None, "files": len(written)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
