"""Image grids of a training run: samples from fixed noise, real images above their reconstructions."""

import math
from typing import Dict

import numpy as np
import torch
from diffusers.utils import make_image_grid
from PIL import Image, ImageOps


def images_to_grid(images: torch.Tensor, cols: int = 8, min_tile: int = 48) -> Image.Image:
    """
    `B x C x H x W` images in `[0, 1]` -> one PIL grid, `cols` wide (diffusers' `make_image_grid`). Small images
    are enlarged (nearest neighbour) to at least `min_tile` pixels and framed, so a grid of 16x16 digits is legible.
    """
    arr = (images.detach().float().clamp(0, 1).cpu().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    mode = "L" if arr.shape[-1] == 1 else "RGB"
    scale = max(1, math.ceil(min_tile / max(arr.shape[1], arr.shape[2])))
    pil = [Image.fromarray(a[..., 0] if mode == "L" else a, mode) for a in arr]
    pil = [ImageOps.expand(p.resize((p.width * scale, p.height * scale), Image.NEAREST), border=2, fill=128)
           for p in pil]
    cols = min(cols, len(pil))
    rows = math.ceil(len(pil) / cols)
    pil += [Image.new(mode, pil[0].size)] * (rows * cols - len(pil))
    return make_image_grid(pil, rows=rows, cols=cols)


@torch.no_grad()
def render_grids(encoder, decoder, real: torch.Tensor, noise: torch.Tensor, cols: int = 8,
                 labels=None) -> Dict[str, Image.Image]:
    """
    Samples from fixed noise; rows of real images above rows of their reconstructions. Eval mode (restored).
    Class-conditional models take `labels = (labels of the samples, labels of the real images)`.
    """
    was_training = encoder.training, decoder.training
    encoder.eval(), decoder.eval()
    try:
        noise = noise.to(real.device)
        cols = min(cols, len(real))
        real = real[: (len(real) // cols) * cols]
        if labels is None:
            samples = decoder(noise)
            recs = decoder(encoder(real)[0])
        else:
            sample_labels, real_labels = labels[0].to(real.device), labels[1][: len(real)].to(real.device)
            samples = decoder(noise, sample_labels)
            recs = decoder(encoder(real, real_labels)[0], real_labels)
    finally:
        encoder.train(was_training[0]), decoder.train(was_training[1])
    return {
        "samples": images_to_grid(samples, cols),
        "reconstructions": images_to_grid(torch.cat([real, recs]), cols),
    }


def log_images(accelerator, grids: Dict[str, Image.Image], step: int) -> None:
    """Send the grids to the trackers that take images (TensorBoard, Weights & Biases)."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            for name, grid in grids.items():
                arr = np.asarray(grid)
                tracker.writer.add_image(name, arr if arr.ndim == 3 else arr[..., None], step, dataformats="HWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({name: wandb.Image(grid) for name, grid in grids.items()}, step=step)
