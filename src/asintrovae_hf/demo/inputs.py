"""The demo's limits and its input checks: a bad value or an unreadable image is one `DemoError` line."""

import math
import os
from typing import List, Optional, Sequence

import numpy as np
import PIL.Image
import torch

from ..errors import one_line

REFERENCE_SCORES_FILE = "reference_scores.json"
MAX_IMAGES = 64  # the most samples the Sample tab draws at once
MAX_STEPS = 32  # the longest interpolation
MAX_SLIDERS = 8  # principal directions offered in the Explore tab
SLIDER_RANGE = 3.0  # sliders move up to this many standard deviations along a direction
SCORE_SAMPLES = 4  # posterior samples per image for a score (the reference scores record their own)
PRIOR_SAMPLES = 512  # decoded prior samples for the Explore basis when no data fits

TAB_DESCRIPTIONS = {
    "sample": "The decoder turns latents drawn from the prior z ~ N(0, t² I) into images (t: the temperature).",
    "reconstruct": "The encoder maps the image to its posterior q(z|x); the decoder decodes the posterior mean.",
    "interpolate": "Both images are encoded; the decoder decodes evenly spaced points on the line between their "
                   "posterior means.",
    "score": "The model scores the image by its negative ELBO (an upper bound on -log p(x), lower = more typical of "
             "its training data).",
    "explore": "The decoder decodes one latent moved along the main directions (principal components) of the "
               "posterior means of {source}.",
}


class DemoError(ValueError):
    """A bad input to the demo (no image, an unreadable file, a value out of range): shown as one line."""


def _check_int(name: str, value, low: int, high: int) -> int:
    if value is None or isinstance(value, bool):
        raise DemoError(f"{name} must be an integer from {low} to {high}; got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DemoError(f"{name} must be an integer from {low} to {high}; got {value!r}.") from None
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise DemoError(f"{name} must be an integer from {low} to {high}; got {value!r}.")
    return int(number)


def _class_label(pipe, class_label) -> Optional[int]:
    """The class of a class-conditional pipeline (an int in `[0, num_classes)`); `None` for an unconditional one."""
    if not pipe.num_classes:
        return None
    if class_label is None or class_label == "":
        raise DemoError(f"This model is class-conditional: pick a class from 0 to {pipe.num_classes - 1}.")
    return _check_int("class", class_label, 0, pipe.num_classes - 1)


def load_image(image, what: str = "image") -> PIL.Image.Image:
    """
    An input image as PIL: a PIL image, a file path, a NumPy array, or a Gradio sketchpad value (a dict whose
    `"composite"` is the drawing). Transparent parts (a drawing's background) are laid on black, since the built-in
    digits are light strokes on black. A missing image or an unreadable file raises a one-line `DemoError`.
    """
    if isinstance(image, dict):  # gr.Sketchpad / gr.ImageEditor: {"background", "layers", "composite"}
        image = image.get("composite")
    if image is None or (isinstance(image, str) and not image):
        raise DemoError(f"No {what}: upload an image or draw one.")
    if isinstance(image, (str, os.PathLike)):
        try:
            with PIL.Image.open(image) as opened:
                opened.load()
                image = opened.copy()
        except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as err:
            name = os.path.basename(str(image))
            reason = one_line(err).replace(str(image), name)  # no server path in the page
            raise DemoError(f"Cannot read the {what} ({name}) as an image: {reason[:160]}") from None
    elif isinstance(image, np.ndarray):
        array = image
        if array.dtype != np.uint8:
            if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
                raise DemoError(f"The {what} is not an image: expected uint8 or float values.")
            array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
        try:
            image = PIL.Image.fromarray(array)
        except (TypeError, ValueError) as err:
            raise DemoError(f"The {what} is not an image ({one_line(err, 120)}).") from None
    elif not isinstance(image, PIL.Image.Image):
        raise DemoError(f"The {what} is not an image (got {type(image).__name__}).")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = PIL.Image.alpha_composite(PIL.Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    if image.width < 1 or image.height < 1:
        raise DemoError(f"The {what} is empty.")
    return image


def to_pil(images: torch.Tensor) -> List[PIL.Image.Image]:
    """`B x C x H x W` values in `[0, 1]` -> PIL images (`"L"` for one channel), rounded as the pipeline rounds."""
    array = (images.detach().float().clamp(0, 1).cpu().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return [PIL.Image.fromarray(a[..., 0], "L") if a.shape[-1] == 1 else PIL.Image.fromarray(a) for a in array]


def strip(images: Sequence[PIL.Image.Image]) -> PIL.Image.Image:
    """Images side by side, at their own resolution (no borders: each tile's pixels are the model's)."""
    out = PIL.Image.new(images[0].mode, (sum(i.width for i in images), max(i.height for i in images)))
    x = 0
    for image in images:
        out.paste(image, (x, 0))
        x += image.width
    return out


