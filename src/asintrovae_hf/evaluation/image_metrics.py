"""Image metrics for a saved pipeline: FID of samples (Inception or digits features), reconstruction MSE and PSNR."""

import math
import os
from typing import Dict, Optional

import numpy as np
import torch

from .digits_classifier import digits_fid
from .frechet import frechet_distance_from_features

METRICS = ("fid", "torchmetrics_fid", "digits_fid", "reconstruction", "class_accuracy", "class_coverage")
INCEPTION_ENV = "ASINTROVAE_INCEPTION_WEIGHTS"
INCEPTION_HELP = (
    "The standard FID needs the Inception-v3 feature network as a TorchScript file: 'inception-2015-12-05.pt' "
    "from the StyleGAN2-ADA metrics release (the network behind the reference TensorFlow FID). Download it on a "
    "machine with a network and pass --inception_weights PATH (or set {env}). Offline, use --metrics digits_fid."
).format(env=INCEPTION_ENV)


class InceptionFeatures:
    """
    2048-d pool features of the standard FID Inception network, loaded from a local TorchScript file.

    Args:
        path (`str`, *optional*): The TorchScript file; defaults to `$ASINTROVAE_INCEPTION_WEIGHTS`.
        device (`str`, *optional*, defaults to `"cpu"`).
    """

    def __init__(self, path: Optional[str] = None, device: str = "cpu"):
        path = path or os.environ.get(INCEPTION_ENV)
        if not path or not os.path.isfile(path):
            given = f"got {path!r}" if path else "no path was given"
            raise FileNotFoundError(f"Inception weights not found ({given}). {INCEPTION_HELP}")
        try:
            self.model = torch.jit.load(path, map_location=device).eval()
        except Exception as err:
            raise ValueError(f"{path!r} is not a loadable TorchScript Inception network ({err}). {INCEPTION_HELP}")
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """`B x C x H x W` images in `[0, 1]` (1 or 3 channels) -> `B x 2048` features."""
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).to(self.device)
        return self.model(pixels, return_features=True).float().cpu()


@torch.no_grad()
def batched_features(feature_fn, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    return torch.cat([feature_fn(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]).numpy()


@torch.no_grad()
def sample_images(
    pipeline, num_samples: int, seed: int = 0, batch_size: int = 256, class_labels: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """
    `num_samples` prior samples in `[0, 1]`, `B x C x H x W`, drawn deterministically from `seed`. A class-conditional
    pipeline takes `class_labels` (one per sample).
    """
    latents = torch.randn(num_samples, pipeline.latent_dim, generator=torch.Generator().manual_seed(seed))
    chunks = [pipeline.decode(latents[i : i + batch_size], output_type="pt",
                              class_labels=None if class_labels is None else class_labels[i : i + batch_size]).images.cpu()
              for i in range(0, num_samples, batch_size)]
    return torch.cat(chunks)


@torch.no_grad()
def reconstruction_metrics(
    pipeline, images: torch.Tensor, batch_size: int = 256, class_labels: Optional[torch.Tensor] = None
) -> Dict[str, float]:
    """
    Mean squared error per pixel and PSNR (peak 1) of posterior-mean reconstructions of `images` in `[0, 1]` (with
    their `class_labels` for a class-conditional pipeline).
    """
    errors = []
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size]
        labels = None if class_labels is None else class_labels[i : i + batch_size]
        recs = pipeline.reconstruct(batch, output_type="pt", class_labels=labels).images.cpu()
        errors.append((recs - batch).pow(2).flatten(1).mean(1))
    per_image = torch.cat(errors)
    psnr = (10 * torch.log10(1.0 / per_image.clamp_min(1e-12))).mean().item()
    return {"reconstruction_mse": per_image.mean().item(), "psnr": psnr}


def fid(feature_fn, real: torch.Tensor, fake: torch.Tensor) -> float:
    """Frechet distance between the features of two image sets."""
    return frechet_distance_from_features(batched_features(feature_fn, real), batched_features(feature_fn, fake))


@torch.no_grad()
def class_accuracy(pipeline, num_per_class: int = 200, seed: int = 0, batch_size: int = 256) -> Dict[str, float]:
    r"""
    For a class-conditional digits pipeline: `num_per_class` samples of each class, classified by the shipped digit
    classifier; the share classified as the class they were drawn for, per class and overall.
    """
    from .digits_classifier import load_digits_classifier

    if not pipeline.num_classes:
        raise ValueError("class_accuracy needs a class-conditional pipeline (num_class_embeds is None).")
    classifier = load_digits_classifier()
    generator = torch.Generator().manual_seed(seed)
    results = {}
    for label in range(pipeline.num_classes):
        latents = torch.randn(num_per_class, pipeline.latent_dim, generator=generator)
        correct = 0
        for i in range(0, num_per_class, batch_size):
            images = pipeline.decode(latents[i : i + batch_size], output_type="pt", class_labels=label).images.cpu()
            correct += int((classifier(images.float() * 2 - 1).argmax(1) == label).sum())
        results[f"class_{label}"] = correct / num_per_class
    results["mean"] = float(np.mean(list(results.values())))
    return results


@torch.no_grad()
def class_coverage(images: torch.Tensor, min_share: float = 0.01, batch_size: int = 256) -> Dict[str, float]:
    r"""
    Mode coverage of generated digits: the shipped digit classifier labels each image, and a class counts as covered
    when at least `min_share` of the images fall in it (the digits' analogue of the modes covered on 8 Gaussians).

    Args:
        images (`torch.Tensor`): `N x C x H x W` generated digits, values in `[0, 1]`, any size.
        min_share (`float`, defaults to 0.01): The share of the images a class needs.
        batch_size (`int`, defaults to 256): Images per forward pass.

    Returns:
        `Dict[str, float]`: `classes_covered` (of 10), `class_entropy` (of the predicted-class histogram, in nats;
        `log 10 = 2.30` when the classes are equally frequent) and `largest_class_share`.
    """
    from .digits_classifier import load_digits_classifier

    classifier = load_digits_classifier()
    predicted = torch.cat([classifier(images[i : i + batch_size].float() * 2 - 1).argmax(1)
                           for i in range(0, len(images), batch_size)])
    shares = torch.bincount(predicted, minlength=10).double() / max(len(predicted), 1)
    nonzero = shares[shares > 0]
    return {"classes_covered": int((shares >= min_share).sum()),
            "class_entropy": float(-(nonzero * nonzero.log()).sum()),
            "largest_class_share": float(shares.max())}


def torchmetrics_fid(real: torch.Tensor, fake: torch.Tensor, feature=2048, batch_size: int = 256) -> float:
    r"""
    The standard FID computed by torchmetrics' `FrechetInceptionDistance` (the maintained implementation this
    package chose: it reproduces the reference TensorFlow FID with torch-fidelity's port of its Inception weights,
    streams the images in batches, keeps the statistics in float64, and takes any feature network, so its code path
    is testable offline).

    Args:
        real, fake (`torch.Tensor`): `N x C x H x W` images in `[0, 1]`, 1 or 3 channels (grayscale is repeated).
        feature (`int` or `torch.nn.Module`, defaults to 2048): The Inception layer (64, 192, 768 or 2048; the
            weights are downloaded by torch-fidelity on first use), or a feature network of your own.
        batch_size (`int`, defaults to 256): Images per update.
    """
    from ..errors import require

    require("torchmetrics", purpose="The torchmetrics FID", extra="fid")
    from torchmetrics.image.fid import FrechetInceptionDistance

    if isinstance(feature, int):
        require("torch_fidelity", purpose="The Inception network of the standard FID", extra="fid")
    metric = FrechetInceptionDistance(feature=feature, normalize=True)
    for images, is_real in ((real, True), (fake, False)):
        for i in range(0, len(images), batch_size):
            batch = images[i : i + batch_size].float().clamp(0, 1)
            metric.update(batch.repeat(1, 3, 1, 1) if batch.shape[1] == 1 else batch, real=is_real)
    return float(metric.compute())


def evaluate_pipeline(
    pipeline,
    real_images: torch.Tensor,
    num_samples: int,
    metrics=("digits_fid", "reconstruction"),
    inception_weights: Optional[str] = None,
    seed: int = 0,
    fid_feature=2048,
    real_labels: Optional[torch.Tensor] = None,
) -> Dict[str, float]:
    """
    Evaluate a pipeline against real images.

    Args:
        pipeline (`AsIntroVAEPipeline`): The model.
        real_images (`torch.Tensor`): `N x C x H x W` real images in `[0, 1]` at the model's size.
        num_samples (`int`): Generated images for the FIDs.
        metrics (`Sequence[str]`): Any of `"fid"` (Inception, local TorchScript weights), `"torchmetrics_fid"`
            (Inception through torchmetrics, the `[fid]` extra), `"digits_fid"`, `"reconstruction"`,
            `"class_accuracy"` (class-conditional digits pipelines: [`class_accuracy`]), `"class_coverage"` (digits
            pipelines: [`class_coverage`] of the samples).
        inception_weights (`str`, *optional*): TorchScript Inception file for `"fid"`.
        seed (`int`, defaults to 0): Seed of the samples.
        fid_feature (`int` or `torch.nn.Module`, defaults to 2048): The feature network of `"torchmetrics_fid"`.
        real_labels (`torch.Tensor`, *optional*): The class labels of `real_images`; a class-conditional pipeline
            needs them: its samples for the FIDs draw their labels from them (the data's class distribution), and
            each reconstruction is conditioned on its image's label.
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"Unknown metrics {sorted(unknown)}; choose from {', '.join(METRICS)}.")
    sample_labels = None
    if pipeline.num_classes and {"fid", "torchmetrics_fid", "digits_fid", "reconstruction"} & set(metrics):
        if real_labels is None or len(real_labels) != len(real_images):
            raise ValueError(f"This pipeline is class-conditional ({pipeline.num_classes} classes): its FID and "
                             f"reconstruction need the real images' labels, one per image ({len(real_images)}); got "
                             f"{'none' if real_labels is None else len(real_labels)} (scripts/evaluate.py: --class_column).")
        real_labels = torch.as_tensor(real_labels).long()
        pick = torch.randint(len(real_labels), (num_samples,), generator=torch.Generator().manual_seed(seed + 1))
        sample_labels = real_labels[pick]
    inception = InceptionFeatures(inception_weights) if "fid" in metrics else None  # fail before sampling
    results: Dict[str, float] = {"num_samples": num_samples, "num_real": len(real_images)}
    fake = (sample_images(pipeline, num_samples, seed=seed, class_labels=sample_labels)
            if {"fid", "torchmetrics_fid", "digits_fid", "class_coverage"} & set(metrics) else None)
    if inception is not None:
        results["fid"] = fid(inception, real_images, fake)
    if "torchmetrics_fid" in metrics:
        results["torchmetrics_fid"] = torchmetrics_fid(real_images, fake, feature=fid_feature)
    if "digits_fid" in metrics:
        results["digits_fid"] = digits_fid(real_images, fake, value_range=(0.0, 1.0))
    if "reconstruction" in metrics:
        results.update(reconstruction_metrics(pipeline, real_images,
                                              class_labels=real_labels if pipeline.num_classes else None))
    if "class_accuracy" in metrics:
        results.update({f"accuracy_{k}": v for k, v in class_accuracy(pipeline, seed=seed).items()})
    if "class_coverage" in metrics:
        results.update(class_coverage(fake))
    return {k: (float(v) if isinstance(v, (float, np.floating)) and math.isfinite(v) else v) for k, v in results.items()}
