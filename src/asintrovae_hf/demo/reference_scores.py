"""The Score tab's reference: the negative ELBOs of the training images, saved next to the pipeline."""

import json
import os
from typing import Optional

import torch

from ..json_io import read_json
from .inputs import REFERENCE_SCORES_FILE, SCORE_SAMPLES, DemoError


def save_reference_scores(pipe, images, folder, class_labels=None, num_samples: int = SCORE_SAMPLES, seed: int = 0,
                          source: str = "the training data", batch_size: int = 64) -> str:
    """
    Score `images` (the training data, or a sample of it) with `pipe.score` and write `reference_scores.json` into
    `folder` (the saved pipeline's folder: pushed with it, it reaches the Space too). Each image gets its own
    generator, `torch.Generator().manual_seed(seed)`, so that its score equals the Score tab's for the same image.
    Returns the file's path.
    """
    if len(images) == 0:
        raise DemoError("save_reference_scores needs at least one image.")
    pixels = pipe.preprocess(list(images) if not torch.is_tensor(images) else images)
    generators = [torch.Generator().manual_seed(seed) for _ in range(len(pixels))]
    out = pipe.score(pixels, num_samples=num_samples, generator=generators, class_labels=class_labels,
                     batch_size=batch_size)
    data = {"source": source, "count": len(pixels), "num_samples": num_samples, "seed": seed,
            "neg_elbo": [round(float(v), 6) for v in out.neg_elbo],
            "bits_per_dim": [round(float(v), 6) for v in out.bits_per_dim]}
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, REFERENCE_SCORES_FILE)
    with open(path, "w") as f:
        json.dump(data, f)
        f.write("\n")
    return path


def load_reference_scores(pipe_or_source) -> Optional[dict]:
    """
    The reference scores saved with a pipeline: `reference_scores.json` in its folder, or in its Hub repo (the
    `_name_or_path` it was loaded from); `None` where there are none or they cannot be read.
    """
    source = pipe_or_source
    if not isinstance(source, (str, os.PathLike)):
        source = getattr(getattr(source, "config", None), "_name_or_path", None)
    if not source:
        return None
    source = str(source)
    path = os.path.join(source, REFERENCE_SCORES_FILE)
    if not os.path.isdir(source):
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(source, REFERENCE_SCORES_FILE)
        except Exception:  # no such file, no such repo, offline, not a repo id: the tab says so
            return None
    try:
        data = read_json(path, max_bytes=4 * 1024 * 1024)
    except (OSError, ValueError):  # JsonFileError is a ValueError: the tab says the scores are missing
        return None
    scores = data.get("neg_elbo") if isinstance(data, dict) else None
    if not isinstance(scores, list) or not scores or not all(isinstance(v, (int, float)) for v in scores):
        return None
    return data


