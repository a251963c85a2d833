"""The Sample, Reconstruct, Interpolate and Score tabs as plain functions of PIL images, strings and numbers."""

from typing import List, Optional, Sequence

import numpy as np
import PIL.Image
import torch

from .inputs import MAX_IMAGES, MAX_STEPS, SCORE_SAMPLES, DemoError, _check_int, _class_label, load_image, strip, to_pil


def sample(pipe, seed: int = 0, num_images: int = 1, temperature: float = 1.0,
           class_label: Optional[int] = None) -> List[PIL.Image.Image]:
    """
    `num_images` samples from the prior `N(0, t² I)`, `t = temperature`, drawn from `torch.Generator().manual_seed
    (seed)`: at `t = 1` exactly `pipe(batch_size=num_images, generator=...)` (the latents are those the pipeline
    draws, scaled by `t`).
    """
    seed = _check_int("seed", seed, 0, 2**63 - 1)
    num_images = _check_int("number of images", num_images, 1, MAX_IMAGES)
    try:
        temperature = float(temperature)
    except (TypeError, ValueError):
        raise DemoError(f"temperature must be a number from 0 to 10; got {temperature!r}.") from None
    if not 0 <= temperature <= 10:
        raise DemoError(f"temperature must be a number from 0 to 10; got {temperature!r}.")
    label = _class_label(pipe, class_label)
    latents = pipe(batch_size=num_images, generator=torch.Generator().manual_seed(seed), output_type="latent").images
    return pipe(latents=latents * temperature, class_labels=label).images


def reconstruct(pipe, image, class_label: Optional[int] = None):
    """
    `(input, reconstruction, error, mse)`: the image as the model sees it, `pipe.reconstruct` of it (the posterior
    mean decoded), the absolute error per pixel as an image (white = 1), and the mean squared error in `[0, 1]` units.
    """
    label = _class_label(pipe, class_label)
    image = load_image(image)
    pixels = pipe.preprocess(image)
    rec = pipe.reconstruct(image, class_labels=label, output_type="pt").images
    error = (pixels.float() - rec.float()).abs()
    return to_pil(pixels)[0], to_pil(rec)[0], to_pil(error)[0], float(error.pow(2).mean())


def interpolate(pipe, image_a=None, image_b=None, seed_a: int = 0, seed_b: int = 1, num_steps: int = 8,
                class_label: Optional[int] = None):
    """
    `(strip, frames)`: `pipe.interpolate` between two images, each an upload or, where none is given, the sample of
    its seed (`sample(pipe, seed)`); `frames` are the `num_steps` decoded points, endpoints included.
    """
    num_steps = _check_int("number of steps", num_steps, 2, MAX_STEPS)
    label = _class_label(pipe, class_label)
    ends = []
    for image, seed, name in ((image_a, seed_a, "first image"), (image_b, seed_b, "second image")):
        if image is None or (isinstance(image, dict) and image.get("composite") is None):
            ends.append(sample(pipe, seed, 1, 1.0, label)[0])
        else:
            ends.append(load_image(image, name))
    frames = pipe.interpolate(ends[0], ends[1], num_steps=num_steps, class_labels=label).images
    return strip(frames), frames


def score_image(pipe, image, class_label: Optional[int] = None, reference: Optional[dict] = None,
                num_samples: Optional[int] = None, seed: Optional[int] = None) -> dict:
    """
    The image's negative ELBO (nats) and bits per dimension from `pipe.score`, with the settings of the reference
    scores when given (their `num_samples` and `seed`), and its percentile among them: the share of reference
    images with a score at most this one's (100: less typical than every training image scored).
    """
    label = _class_label(pipe, class_label)
    reference = reference or {}
    num_samples = int(num_samples or reference.get("num_samples") or SCORE_SAMPLES)
    seed = int(seed if seed is not None else reference.get("seed", 0))
    out = pipe.score(load_image(image), num_samples=num_samples, generator=torch.Generator().manual_seed(seed),
                     class_labels=label)
    result = {"neg_elbo": float(out.neg_elbo[0]), "bits_per_dim": float(out.bits_per_dim[0]),
              "num_samples": num_samples, "percentile": None}
    ref = reference.get("neg_elbo")
    if ref:
        result["percentile"] = percentile(result["neg_elbo"], ref)
        result["reference_count"] = len(ref)
        result["reference_source"] = reference.get("source", "the training data")
    return result


def percentile(score: float, reference: Sequence[float]) -> float:
    """The percentage of `reference` scores at most `score`."""
    ref = np.asarray(reference, dtype=np.float64)
    return float(100.0 * np.count_nonzero(ref <= score) / len(ref))


def describe_score(result: dict) -> str:
    """The Score tab's Markdown for a `score_image` result."""
    lines = [f"**negative ELBO:** {result['neg_elbo']:.3f} nats  ",
             f"**bits per dimension:** {result['bits_per_dim']:.4f}  "]
    if result.get("percentile") is None:
        lines.append(NO_REFERENCE_MESSAGE)
    else:
        p = result["percentile"]
        verdict = ("typical of the training data" if p <= 95 else
                   "less typical than 95% of the training data: possibly out of distribution" if p < 100 else
                   "less typical than every training image scored: likely out of distribution")
        lines.append(f"**percentile among {result['reference_count']} training images ({result['reference_source']}):"
                     f"** {p:.1f} ({verdict}).")
    return "\n".join(lines)


NO_REFERENCE_MESSAGE = (
    "No reference scores of the training data are saved with this pipeline, so there is no in-distribution "
    "percentile. Save them with `asintrovae_hf.demo.save_reference_scores(pipe, images, folder)` (or "
    "`asintrovae-demo --pipeline FOLDER --save_reference_scores` for the built-in digits).")


