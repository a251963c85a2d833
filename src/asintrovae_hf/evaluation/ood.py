"""Out-of-distribution detection with ELBO scores: image sets made offline, and the AUROC.

Introspective VAEs give data unlike their training data a higher negative ELBO ([`AsIntroVAEPipeline.score`]); the
AUROC of that score, out-of-distribution images counted as positives, says how well it separates the two sets
(1.0: perfectly, 0.5: chance). The sets here need no download: the built-in digits, and shifted sets made from them
or drawn with PIL.
"""

import string
from typing import Dict, List, Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data import load_digits_dataset
from ..errors import require

OOD_SETS = ("noise", "inverted", "letters", "blank", "mirrored", "rotated")


def digits_images() -> List[Image.Image]:
    """The 1,797 built-in digits as 8x8 grayscale PIL images (the training data of the default run)."""
    return list(load_digits_dataset()["image"])


def make_ood_set(name: str, count: int, seed: int = 0) -> List[Image.Image]:
    r"""
    `count` 8x8 grayscale images of an out-of-distribution set, drawn reproducibly from `seed`:

    - `"noise"`: uniform noise, each pixel in 0..255.
    - `"inverted"`: digits with inverted intensities (255 - v): the same strokes, the background white.
    - `"letters"`: the 52 Latin letters drawn with PIL's default font on a black 16x16 canvas, slightly shifted and
      rotated at random, and reduced to 8x8 as the digits were scanned: strokes like the digits', other shapes.
    - `"blank"`: constant images of random grey levels.
    - `"mirrored"`: digits mirrored left to right; the near shifts: 0, 1 and 8 stay almost in distribution.
    - `"rotated"`: digits rotated by 90 degrees counter-clockwise.
    """
    rng = np.random.default_rng(seed)
    if name == "noise":
        return [Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L") for _ in range(count)]
    shifts = {"inverted": lambda a: 255 - a, "mirrored": np.fliplr, "rotated": np.rot90}
    if name in shifts:
        digits = digits_images()
        picks = rng.choice(len(digits), size=count, replace=count > len(digits))
        return [Image.fromarray(np.ascontiguousarray(shifts[name](np.asarray(digits[i]))), "L") for i in picks]
    if name == "letters":
        font = ImageFont.load_default(size=13)
        letters = string.ascii_letters
        images = []
        for i in range(count):
            canvas = Image.new("L", (16, 16), 0)
            ImageDraw.Draw(canvas).text((8 + rng.integers(-1, 2), 8 + rng.integers(-1, 2)), letters[i % len(letters)],
                                        fill=255, font=font, anchor="mm")
            canvas = canvas.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR)
            images.append(canvas.resize((8, 8), Image.BILINEAR))
        return images
    if name == "blank":
        return [Image.new("L", (8, 8), int(v)) for v in rng.integers(0, 256, count)]
    raise ValueError(f"Unknown out-of-distribution set {name!r}; choose one of {', '.join(OOD_SETS)}.")


def auroc(in_scores, out_scores) -> float:
    """
    The area under the ROC curve of telling `out_scores` (positives) from `in_scores` by thresholding the score:
    the probability that a random out-of-distribution image scores higher than a random in-distribution one (ties
    count half), the Mann-Whitney statistic.
    """
    require("scipy", purpose="The AUROC", extra="eval")
    from scipy.stats import rankdata

    in_scores, out_scores = np.asarray(in_scores, dtype=np.float64), np.asarray(out_scores, dtype=np.float64)
    if not len(in_scores) or not len(out_scores):
        raise ValueError("auroc needs at least one score of each set.")
    ranks = rankdata(np.concatenate([in_scores, out_scores]))  # average ranks over ties
    n_in, n_out = len(in_scores), len(out_scores)
    return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_out * n_in))


def evaluate_ood(pipeline, sets: Optional[List[str]] = None, count: int = 1000, num_samples: int = 4,
                 seed: int = 0, batch_size: int = 256) -> Dict[str, Dict[str, float]]:
    r"""
    Score the built-in digits (in distribution) and each out-of-distribution set with `pipeline.score`, the ELBO
    and the importance-weighted bound with `num_samples` samples; per set, the AUROC of each and the mean scores.
    A class-conditional pipeline scores each image under every class, combined with a uniform class prior.
    """
    import torch

    num_classes = pipeline.num_classes

    def score(images, weighted):
        def one(labels):
            generators = [torch.Generator().manual_seed(seed * 100003 + i) for i in range(len(images))]
            return pipeline.score(images, num_samples=num_samples, importance_weighted=weighted,
                                  batch_size=batch_size, generator=generators, class_labels=labels).neg_elbo
        if not num_classes:
            return one(None).numpy()
        # a class-conditional model: -log p(x) >= -log (1/C) sum_y exp(-(bound given y)), uniform p(y)
        per_class = torch.stack([one(y) for y in range(num_classes)])
        return (-(torch.logsumexp(-per_class, 0) - torch.log(torch.tensor(float(num_classes))))).numpy()

    digits = digits_images()
    in_elbo, in_iw = score(digits, False), score(digits, True)
    results = {"digits": {"count": len(digits), "mean_neg_elbo": float(in_elbo.mean()),
                          "mean_neg_iw": float(in_iw.mean())}}
    for name in sets or OOD_SETS:
        images = make_ood_set(name, count, seed)
        out_elbo, out_iw = score(images, False), score(images, True)
        results[name] = {"count": len(images), "mean_neg_elbo": float(out_elbo.mean()),
                         "mean_neg_iw": float(out_iw.mean()), "auroc_elbo": auroc(in_elbo, out_elbo),
                         "auroc_iw": auroc(in_iw, out_iw)}
    return results
