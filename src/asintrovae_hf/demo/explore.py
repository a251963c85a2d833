"""The Explore tab: principal directions of posterior means, computed once per pipeline."""

import math
import weakref
from dataclasses import dataclass
from typing import Optional, Sequence

import PIL.Image
import torch

from .inputs import MAX_SLIDERS, PRIOR_SAMPLES, DemoError, _class_label


@dataclass
class ExploreBasis:
    """Principal directions of posterior means: `mean` (Z), `components` (K x Z, unit rows), `scales` (K standard
    deviations along them), and `source`, what was encoded."""

    mean: torch.Tensor
    components: torch.Tensor
    scales: torch.Tensor
    source: str

    def latent(self, values: Sequence[float]) -> torch.Tensor:
        """`1 x Z`: the mean moved `values[k]` standard deviations along direction `k`."""
        weights = torch.zeros(len(self.components), dtype=self.mean.dtype)
        given = torch.as_tensor([float(v) for v in values][: len(self.components)], dtype=self.mean.dtype)
        weights[: len(given)] = given
        return (self.mean + (weights * self.scales) @ self.components)[None]


_BASES = weakref.WeakKeyDictionary()  # pipe -> ExploreBasis, so that each pipeline's basis is computed once


def _digits_fit(pipe) -> bool:
    if not pipe.is_image_model or pipe.encoder.config.in_channels != 1:
        return False
    return not pipe.num_classes or pipe.num_classes >= 10


def _builtin_digits():
    """The built-in digits (PIL images, labels), or `None` without the `[train]` extra."""
    try:
        from ..data import load_digits_dataset

        data = load_digits_dataset()
    except ImportError:
        return None
    return list(data["image"]), list(data["label"])


def explore_basis(pipe, images=None, class_labels=None, source: Optional[str] = None, count: int = PRIOR_SAMPLES,
                  seed: int = 0) -> ExploreBasis:
    """
    The principal directions of the posterior means of `images` (with `class_labels` for a class-conditional
    model); without images, of the built-in digits where they fit the model (one channel; a class-conditional
    model with at least 10 classes), else of `count` images decoded from prior samples (seed `seed`, classes in
    turn). Cached per pipeline when computed from the default data.
    """
    cache = images is None
    if cache and pipe in _BASES:
        return _BASES[pipe]
    if images is None and _digits_fit(pipe):
        digits = _builtin_digits()
        if digits is not None:
            images, labels = digits
            class_labels = labels if pipe.num_classes else None
            source = "the built-in digits (1,797 images)"
    if images is None:
        labels = [i % pipe.num_classes for i in range(count)] if pipe.num_classes else None
        latents = pipe(batch_size=count, generator=torch.Generator().manual_seed(seed), output_type="latent").images
        images = pipe.decode(latents, output_type="pt", class_labels=labels).images
        class_labels = labels
        source = f"{count} images decoded from prior samples (no training data at hand)"
    means = pipe.encode(images, class_labels=class_labels).latent_dist.mean.detach().double().cpu()
    center = means.mean(0)
    _, singular, vt = torch.linalg.svd(means - center, full_matrices=False)
    k = min(MAX_SLIDERS, vt.shape[0])
    components = vt[:k]
    signs = torch.sign(components.gather(1, components.abs().argmax(1, keepdim=True)))  # a fixed sign per direction
    components = components * torch.where(signs == 0, torch.ones_like(signs), signs)
    scales = singular[:k] / math.sqrt(max(len(means) - 1, 1))
    basis = ExploreBasis(center.float(), components.float(), scales.float(), source or "the given images")
    if cache:
        _BASES[pipe] = basis
    return basis


def explore(pipe, basis: ExploreBasis, values: Sequence[float], class_label: Optional[int] = None) -> PIL.Image.Image:
    """Decode the basis' mean moved `values` standard deviations along its principal directions."""
    label = _class_label(pipe, class_label)
    for v in values:
        if v is None or not math.isfinite(float(v)) or abs(float(v)) > 10:
            raise DemoError(f"Explore sliders take values from -10 to 10; got {v!r}.")
    latent = basis.latent(values).to(dtype=pipe.decoder.dtype)
    return pipe.decode(latent, class_labels=label).images[0]


