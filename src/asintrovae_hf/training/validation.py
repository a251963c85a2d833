"""Validation while training (`--validation_steps`): held-out metrics, `validation.jsonl` and the `best/` pipeline.

The held-out images are the built-in datasets' fixed `"test"` split, a seeded fraction carved from the training data
(`--validation_split`, [`split_off_validation`]) or a separate folder (`--validation_data_dir`), at most
`--num_validation_images` of them, read once with the training transform (centre crop, no flip). Each validation, on
the main process with the weights that get saved (the EMA decoder when EMA is on), in eval mode without gradients and
inside `torch.random.fork_rng` (so training draws exactly what it would without validation), measures:

- `reconstruction_mse`: the mean squared error of the posterior-mean reconstructions (clamped to `[0, 1]`, as
  `evaluate_heldout` measures it);
- `neg_elbo`: the single-sample negative ELBO in nats per image (the pipeline's `score`), the posterior noise drawn from
  a generator seeded with `--seed`, so every validation of a run uses the same noise;
- for the built-in datasets, the classifier metrics of as many samples as held-out images (`fd`, `precision`,
  `recall`, `class_entropy`; `evaluation/heldout.py`), decoded from one fixed seeded draw of latents.

[`BestPipeline`] keeps `OUTPUT_DIR/best/`: written to a temporary folder and swapped in by renames, so a kill at any
moment leaves the previous best (or the new one) complete; [`recover_best`] finishes an interrupted swap.
"""

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set

import numpy as np
import torch

from ..json_io import JsonFileError, read_json, read_json_lines

logger = logging.getLogger("asintrovae_hf.training")

VALIDATION_LOG = "validation.jsonl"
BEST_DIR = "best"
BEST_METRICS = "metrics.json"
_BEST_PARTIAL = ".best.partial"  # the new best/ while it is written
_BEST_REPLACED = ".best.replaced"  # the previous best/ while the new one is renamed into place
# The sample metrics of evaluation/heldout.py that a validation records.
SAMPLE_METRICS = ("fd", "precision", "recall", "class_entropy")
_SPLIT_SEED = 0  # --validation_split: the same held-out images whatever the run's --seed


def split_off_validation(dataset, fraction: float):
    """
    `(train, held_out)`: a seeded random `fraction` of the rows of `dataset` (at least one) held out, the rest kept in
    their order. Raises `ValueError` when either part would be empty.
    """
    count = len(dataset)
    held = int(round(count * fraction))
    held = min(max(held, 1), count - 1) if count > 1 else 0
    if held < 1:
        raise ValueError(f"--validation_split {fraction} cannot split {count} image(s) into a training and a "
                         f"validation part; expected at least 2 images.")
    order = np.random.default_rng(_SPLIT_SEED).permutation(count)
    held_rows = np.sort(order[:held])
    train_rows = np.sort(order[held:])
    return dataset.select(train_rows.tolist()), dataset.select(held_rows.tolist())


@dataclass
class ValidationSet:
    """The held-out images (`N x C x H x W` in `[0, 1]`, on the CPU), their labels and what the sample metrics need."""

    images: torch.Tensor
    labels: Optional[torch.Tensor]  # class-conditional runs: the images' classes
    source: str
    builtin: Optional[str] = None  # the built-in dataset: classifier metrics
    classifier: Any = None
    reference: Optional[Dict[str, np.ndarray]] = None  # the classifier's outputs on the held-out images
    latents: Optional[torch.Tensor] = None  # the fixed draw the samples are decoded from
    sample_labels: Optional[torch.Tensor] = None


def build_validation_set(dataset, image_column: str, transform, limit: int, source: str, seed: int, latent_dim: int,
                         class_column: Optional[str] = None, num_classes: Optional[int] = None,
                         builtin: Optional[str] = None, with_classifier: bool = True) -> ValidationSet:
    """The first `limit` images of `dataset` through `transform`; for a built-in dataset its classifier's outputs and
    a fixed draw of latents (seeded with `seed`), when `with_classifier` (the main process)."""
    dataset = dataset.select(range(min(limit, len(dataset))))
    images = torch.stack([transform(image) for image in dataset[image_column]]).float()
    labels = None
    if class_column is not None:
        labels = torch.tensor([int(v) for v in dataset[class_column]])
    out = ValidationSet(images=images, labels=labels, source=source, builtin=builtin)
    if builtin is not None and with_classifier:
        from ..evaluation.heldout import classifier_outputs, load_classifier

        out.classifier = load_classifier(builtin)
        out.reference = classifier_outputs(out.classifier, images)
        out.latents = torch.randn(len(images), latent_dim, generator=torch.Generator().manual_seed(seed))
        if num_classes is not None:
            out.sample_labels = torch.arange(len(images)) % num_classes
    return out


@torch.no_grad()
def compute_metrics(encoder, decoder, vset: ValidationSet, seed: int, batch_size: int = 256) -> Dict[str, float]:
    """The validation metrics of `encoder` and `decoder` on `vset` (the modules' modes are restored afterwards)."""
    from ..pipelines.pipeline_asintrovae import AsIntroVAEPipeline

    pipe = AsIntroVAEPipeline(encoder=encoder, decoder=decoder)
    pipe.set_progress_bar_config(disable=True)
    images, labels = vset.images, vset.labels

    def chunk(t, i):
        return None if t is None else t[i: i + batch_size]

    recs = torch.cat([pipe.reconstruct(images[i: i + batch_size], output_type="pt",
                                       class_labels=None if labels is None else chunk(labels, i).tolist()).images.cpu()
                      for i in range(0, len(images), batch_size)])
    metrics = {"reconstruction_mse": float((recs.float() - images).pow(2).mean())}
    score = pipe.score(images, num_samples=1, batch_size=batch_size, generator=torch.Generator().manual_seed(seed),
                       class_labels=None if labels is None else labels.tolist())
    metrics["neg_elbo"] = float(score.neg_elbo.mean())
    metrics["neg_elbo_bits_per_dim"] = float(score.bits_per_dim.mean())
    if vset.classifier is not None:
        from ..evaluation.heldout import sample_quality

        latents, sample_labels = vset.latents, vset.sample_labels
        samples = torch.cat([pipe.decode(latents[i: i + batch_size], output_type="pt",
                                         class_labels=None if sample_labels is None
                                         else chunk(sample_labels, i).tolist()).images.cpu()
                             for i in range(0, len(latents), batch_size)])
        quality = sample_quality(vset.classifier, vset.reference, samples.float())
        metrics.update({name: float(quality[name]) for name in SAMPLE_METRICS})
    return metrics


def validate(encoder, decoder, vset: ValidationSet, seed: int, device: torch.device) -> Dict[str, float]:
    """[`compute_metrics`] inside `torch.random.fork_rng`: the global random streams are as they were before."""
    devices = [device.index or 0] if device.type == "cuda" else []  # other devices: the CPU stream is saved
    with torch.random.fork_rng(devices=devices):
        return compute_metrics(encoder, decoder, vset, seed)


# ---- validation.jsonl --------------------------------------------------------------------------------------------

def _read_lines(path: str) -> List[Dict]:
    """The records of `validation.jsonl` (a line cut by a kill is skipped by the reader)."""
    if not os.path.isfile(path):
        return []
    return [record for _, record in read_json_lines(path)
            if isinstance(record, dict) and isinstance(record.get("step"), int)]


def read_validation_log(output_dir: str) -> List[Dict]:
    """The records of `OUTPUT_DIR/validation.jsonl`, oldest first (a line cut by a kill is skipped)."""
    return _read_lines(os.path.join(output_dir, VALIDATION_LOG))


def start_validation_log(output_dir: str, step: int) -> Set[int]:
    """
    Before the loop, on the main process: keep the records of steps up to `step` (the resumed step; 0 for a new run)
    and drop the later ones, which a resumed run measures again, so that no step is recorded twice. Returns the steps
    kept.
    """
    path = os.path.join(output_dir, VALIDATION_LOG)
    if not os.path.isfile(path):
        return set()
    records = _read_lines(path)
    kept = [r for r in records if r["step"] <= step]
    seen, unique = set(), []
    for record in kept:
        if record["step"] not in seen:
            seen.add(record["step"])
            unique.append(record)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in unique)
    os.replace(tmp, path)
    return seen


def append_validation_record(output_dir: str, record: Dict) -> None:
    with open(os.path.join(output_dir, VALIDATION_LOG), "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


# ---- best/ -------------------------------------------------------------------------------------------------------

def recover_best(output_dir: str) -> None:
    """Finish or undo a `best/` swap that a kill interrupted: the previous best goes back if the new one is not in
    place; a half-written new one is deleted."""
    best = os.path.join(output_dir, BEST_DIR)
    replaced = os.path.join(output_dir, _BEST_REPLACED)
    if os.path.isdir(replaced):
        if os.path.isdir(best):
            shutil.rmtree(replaced, ignore_errors=True)
        else:
            os.replace(replaced, best)
    shutil.rmtree(os.path.join(output_dir, _BEST_PARTIAL), ignore_errors=True)


def read_best(output_dir: str) -> Optional[Dict]:
    """`best/metrics.json` (`step`, `metric`, `value`, `metrics`), or `None`."""
    path = os.path.join(output_dir, BEST_DIR, BEST_METRICS)
    try:
        data = read_json(path, max_bytes=1 << 20)
    except (OSError, JsonFileError):
        return None
    return data if isinstance(data, dict) and "value" in data else None


class BestPipeline:
    """
    `OUTPUT_DIR/best/` for `--keep_best_by METRIC` (lower is better): replaced only when a validation improves on the
    best so far, which a resumed run reads back from `best/metrics.json`.
    """

    def __init__(self, output_dir: str, metric: str, resumed_step: int):
        self.output_dir, self.metric = output_dir, metric
        self.value: Optional[float] = None
        self.step: Optional[int] = None
        saved = read_best(output_dir)
        if saved is None:
            return
        if resumed_step == 0:
            logger.warning("%s holds the best pipeline of an earlier run; this new run replaces it at its first "
                           "validation.", os.path.join(output_dir, BEST_DIR))
        elif saved.get("metric") != metric:
            logger.warning("%s was kept by %s; this run keeps it by %s and replaces it at its first validation.",
                           os.path.join(output_dir, BEST_DIR), saved.get("metric"), metric)
        else:
            self.value, self.step = float(saved["value"]), int(saved["step"])
            logger.info("Best %s so far: %.6g at step %d (%s).", metric, self.value, self.step,
                        os.path.join(output_dir, BEST_DIR))

    def improves(self, value: float) -> bool:
        return math.isfinite(value) and (self.value is None or value < self.value)

    def save(self, step: int, metrics: Dict[str, float], save_pipeline) -> None:
        """Write the new best: `save_pipeline(folder)` and `metrics.json` into a temporary folder, then swap."""
        partial = os.path.join(self.output_dir, _BEST_PARTIAL)
        best = os.path.join(self.output_dir, BEST_DIR)
        replaced = os.path.join(self.output_dir, _BEST_REPLACED)
        shutil.rmtree(partial, ignore_errors=True)
        save_pipeline(partial)
        value = metrics[self.metric]
        with open(os.path.join(partial, BEST_METRICS), "w", encoding="utf-8") as f:
            json.dump({"step": step, "metric": self.metric, "value": value, "metrics": metrics}, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        if os.path.isdir(best):
            shutil.rmtree(replaced, ignore_errors=True)
            os.replace(best, replaced)
        os.replace(partial, best)
        shutil.rmtree(replaced, ignore_errors=True)
        self.value, self.step = value, step

