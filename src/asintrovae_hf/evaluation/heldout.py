"""The held-out protocol: a pipeline trained on a built-in dataset's train split, measured on its held-out split.

Sample quality is measured in the feature space of a classifier trained on the same train split only
(`digits_classifier.CLASSIFIER_WEIGHTS`): the Frechet distance between the 96-d penultimate features of generated
samples and of the held-out images (`fd`); precision and recall of the samples with `k = 3` nearest neighbours
(Kynkaanniemi et al., 2019) on its last convolutional map (in the penultimate features, which the classifier made
invariant to what does not change the class, 90 % of uniform-noise images fell inside the held-out digits' manifold;
on the convolutional map none do: [`calibrate`]); and the classifier's labels of the samples (the entropy of their
histogram and each class's share: mode collapse shows as one share near 0). Each is the mean over `num_draws`
independent draws of as many samples as there are held-out images; the spread of the draws is recorded as the
estimator's own noise. Fit is measured on the held-out images themselves: the posterior-mean reconstruction error and
the importance-weighted negative ELBO (Burda et al., 2016) in nats and bits per dimension, under the Gaussian decoder
of variance 1/2 the objectives imply.

[`calibrate`] gives the same sample metrics for reference pairs (train against held-out real images: the best a
model can do; uniform noise: the worst), so that a model's numbers can be read against them.
"""

import math
from typing import Dict, List, Sequence

import numpy as np
import torch

from ..data.builtin import get_builtin_dataset, load_builtin_arrays
from .digits_classifier import CLASSIFIER_WEIGHTS, digits_to_tensor, load_digits_classifier
from .frechet import frechet_distance_from_features
from .statistics import describe, detectable_difference, format_interval, holm_adjust, paired_difference

SAMPLE_METRICS = ("fd", "precision", "recall", "class_entropy", "smallest_class_share")
FIT_METRICS = ("reconstruction_mse", "nll_bits_per_dim")
# Lower is better for these, higher for the others.
LOWER_IS_BETTER = {"fd", "reconstruction_mse", "nll_bits_per_dim", "nll_nats", "largest_class_share"}


def load_classifier(dataset: str):
    """The feature classifier of a built-in dataset, trained on its train split only."""
    if dataset not in CLASSIFIER_WEIGHTS:
        raise ValueError(f"No held-out classifier for {dataset!r}; datasets with one: {', '.join(CLASSIFIER_WEIGHTS)}.")
    return load_digits_classifier(path=CLASSIFIER_WEIGHTS[dataset])


def split_images(dataset: str, split: str, resolution: int):
    r"""
    A split of a built-in dataset as the models see it: `N x 1 x R x R` values in `[0, 1]` (PIL bilinear resize, as
    the training transform does) and the `N` labels.
    """
    pixels, labels = load_builtin_arrays(dataset, split)
    return (digits_to_tensor(pixels, resolution) + 1) / 2, torch.from_numpy(np.array(labels))


@torch.no_grad()
def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> Dict[str, float]:
    r"""
    Improved precision and recall (Kynkaanniemi et al., 2019): each set's manifold is the union of balls around its
    points reaching their `k`-th nearest neighbour in the set; precision is the share of `fake` inside the real
    manifold, recall the share of `real` inside the fake one.

    Args:
        real, fake (`np.ndarray`): `N x D` and `M x D` features (`N, M > k`).
        k (`int`, defaults to 3): The neighbour that sets each radius.
    """
    real_t, fake_t = torch.as_tensor(real, dtype=torch.float64), torch.as_tensor(fake, dtype=torch.float64)
    if len(real_t) <= k or len(fake_t) <= k:
        raise ValueError(f"precision_recall needs more than k = {k} points per set, got {len(real_t)} and "
                         f"{len(fake_t)}.")

    def radii(points):  # the k-th neighbour other than the point itself (distance 0 is the first)
        return torch.cdist(points, points).kthvalue(k + 1, dim=1).values

    distances = torch.cdist(fake_t, real_t)  # M x N
    precision = (distances <= radii(real_t)[None, :]).any(dim=1).double().mean().item()
    recall = (distances.T <= radii(fake_t)[None, :]).any(dim=1).double().mean().item()
    return {"precision": precision, "recall": recall}


@torch.no_grad()
def classifier_outputs(classifier, images: torch.Tensor, batch_size: int = 500) -> Dict[str, np.ndarray]:
    r"""
    One pass of the classifier over images in `[0, 1]`: `features` (the 96-d penultimate layer, for the Frechet
    distance), `spatial` (the last convolutional map, flattened, for precision and recall) and `predicted` classes.
    """
    classifier.eval()
    features, spatial, predicted = [], [], []
    for i in range(0, len(images), batch_size):
        conv = classifier.conv(classifier.prepare(images[i: i + batch_size].float() * 2 - 1))
        hidden = classifier.fc(conv)
        features.append(hidden.double())
        spatial.append(conv.flatten(1).double())
        predicted.append(classifier.head(hidden).argmax(1))
    return {"features": torch.cat(features).numpy(), "spatial": torch.cat(spatial).numpy(),
            "predicted": torch.cat(predicted).numpy()}


@torch.no_grad()
def sample_quality(classifier, heldout: Dict[str, np.ndarray], samples: torch.Tensor) -> Dict:
    r"""
    The sample metrics of one draw of samples in `[0, 1]`, against the held-out images' [`classifier_outputs`]:
    `fd`, `precision`, `recall`, `class_entropy` (nats; `log 10 = 2.303` for equal classes), `class_shares`,
    `largest_class_share` and `smallest_class_share`.
    """
    outputs = classifier_outputs(classifier, samples)
    shares = np.bincount(outputs["predicted"], minlength=10) / len(samples)
    nonzero = shares[shares > 0]
    return {"fd": frechet_distance_from_features(heldout["features"], outputs["features"]),
            **precision_recall(heldout["spatial"], outputs["spatial"]),
            "class_entropy": float(-(nonzero * np.log(nonzero)).sum()), "class_shares": shares.tolist(),
            "largest_class_share": float(shares.max()), "smallest_class_share": float(shares.min())}


def _mean_of_draws(draws: List[Dict]) -> Dict:
    out = {}
    for key in draws[0]:
        values = [d[key] for d in draws]
        if key == "class_shares":
            out[key] = np.mean(values, axis=0).tolist()
        else:
            out[key] = float(np.mean(values))
            out[f"{key}_draw_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    return out


@torch.no_grad()
def evaluate_heldout(
    pipeline, dataset: str, seed: int = 0, num_draws: int = 3, iw_samples: int = 8, sampler=None,
) -> Dict:
    r"""
    Every held-out metric of a pipeline trained on a built-in dataset.

    Args:
        pipeline (`AsIntroVAEPipeline` or `str`): The pipeline, or a folder / Hub id to load it from.
        dataset (`str`): `"digits"` or `"mnist-5k"`.
        seed (`int`, defaults to 0): Seeds the samples (draw `i` uses `seed * 1000 + i`) and the ELBO's noise.
        num_draws (`int`, defaults to 3): Independent draws of samples, each as many as the held-out images.
        iw_samples (`int`, defaults to 8): Posterior samples per image of the importance-weighted bound.
        sampler (*optional*): Where the latents come from: `None` for the prior, or an object with
            `sample(num_samples, generator) -> latents` (e.g. a fitted latent density).

    Returns:
        `Dict`: the sample metrics (means over draws, and each `*_draw_std`), `reconstruction_mse`, `psnr`,
        `nll_nats`, `nll_bits_per_dim`, and the sizes used.
    """
    if isinstance(pipeline, str):
        from ..pipelines.pipeline_asintrovae import AsIntroVAEPipeline

        pipeline = AsIntroVAEPipeline.from_pretrained(pipeline)
    resolution = pipeline.encoder.config.sample_size
    images, labels = split_images(dataset, "test", resolution)
    classifier = load_classifier(dataset)
    reference = classifier_outputs(classifier, images)
    draws = []
    for draw in range(num_draws):
        generator = torch.Generator().manual_seed(seed * 1000 + draw)
        if sampler is None:
            latents = torch.randn(len(images), pipeline.latent_dim, generator=generator)
        else:
            latents = sampler.sample(len(images), generator=generator)
        samples = torch.cat([pipeline.decode(latents[i: i + 256], output_type="pt").images.cpu()
                             for i in range(0, len(latents), 256)])
        draws.append(sample_quality(classifier, reference, samples))
    results = {"num_heldout": len(images), "num_samples": len(images), "num_draws": num_draws,
               "sampler": "prior" if sampler is None else type(sampler).__name__, **_mean_of_draws(draws)}
    recs = torch.cat([pipeline.reconstruct(images[i: i + 256], output_type="pt").images.cpu()
                      for i in range(0, len(images), 256)])
    per_image = (recs - images).pow(2).flatten(1).mean(1)
    results["reconstruction_mse"] = float(per_image.mean())
    results["psnr"] = float((10 * torch.log10(1.0 / per_image.clamp_min(1e-12))).mean())
    generators = [torch.Generator().manual_seed(seed * 100003 + i) for i in range(len(images))]
    score = pipeline.score(images, num_samples=iw_samples, importance_weighted=True, generator=generators)
    results.update({"nll_nats": float(score.neg_elbo.mean()), "nll_bits_per_dim": float(score.bits_per_dim.mean()),
                    "iw_samples": iw_samples})
    return results


def calibrate(dataset: str, num_draws: int = 3) -> Dict[str, Dict]:
    r"""
    The sample metrics of reference pairs, against the held-out split: `train_vs_heldout` (as many train images as
    held-out ones, drawn without replacement; what a model that reproduced the training data would score) and
    `uniform_noise` (images of uniform noise), each averaged over `num_draws` draws. Also the classifier's held-out
    accuracy.
    """
    spec = get_builtin_dataset(dataset)
    resolution = spec.default_resolution
    heldout, heldout_labels = split_images(dataset, "test", resolution)
    train, _ = split_images(dataset, "train", resolution)
    classifier = load_classifier(dataset)
    reference = classifier_outputs(classifier, heldout)
    accuracy = float((reference["predicted"] == heldout_labels.numpy()).mean())
    pairs = {}
    for name in ("train_vs_heldout", "uniform_noise"):
        draws = []
        for draw in range(num_draws):
            generator = torch.Generator().manual_seed(draw)
            if name == "train_vs_heldout":
                images = train[torch.randperm(len(train), generator=generator)[: len(heldout)]]
            else:
                images = torch.rand(heldout.shape, generator=generator)
            draws.append(sample_quality(classifier, reference, images))
        pairs[name] = _mean_of_draws(draws)
    return {"dataset": dataset, "resolution": resolution, "num_heldout": len(heldout), "num_draws": num_draws,
            "classifier_heldout_accuracy": accuracy, **pairs}


# ---- tables ------------------------------------------------------------------------------------------------------

def _group(records: Sequence[Dict]) -> Dict[tuple, List[Dict]]:
    groups: Dict[tuple, List[Dict]] = {}
    for record in records:
        if "metrics" in record:
            groups.setdefault((record["dataset"], record["name"]), []).append(record)
    return groups


def summarize_runs(records: Sequence[Dict], reference: str = "as-introvae",
                   compare_with: Sequence[str] = ("soft-introvae:reference", "soft-introvae"),
                   metrics: Sequence[str] = SAMPLE_METRICS + FIT_METRICS) -> str:
    r"""
    Markdown tables of held-out records: per method, each metric's mean ± sample std [95 % t interval] over seeds;
    then `reference` against each of `compare_with` on the seeds both have (mean difference, bootstrap interval,
    paired t-test p-value, the same adjusted by Holm's method for all the tests of the dataset's table, whether the
    difference is significant at 5 % after that adjustment, and the difference the test finds with 80 % power). Runs
    stopped by a non-finite loss are counted apart.
    """
    lines = []
    for dataset in sorted({r["dataset"] for r in records}):
        groups = {name: rs for (d, name), rs in _group(records).items() if d == dataset}
        stopped = [r for r in records if r["dataset"] == dataset and "metrics" not in r]
        lines += [f"### {dataset}", "",
                  "| method | seeds | " + " | ".join(metrics) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in metrics) + " |"]
        for name, rs in groups.items():
            rs = sorted(rs, key=lambda r: r["seed"])
            cells = []
            for metric in metrics:
                digits = 4 if metric in ("reconstruction_mse", "nll_bits_per_dim", "smallest_class_share") else 3 \
                    if metric in ("precision", "recall", "class_entropy") else 2
                cells.append(format_interval(describe([r["metrics"][metric] for r in rs]), digits))
            lines.append(f"| {name} | {', '.join(str(r['seed']) for r in rs)} | " + " | ".join(cells) + " |")
        for r in stopped:
            lines.append(f"| {r['name']} | {r['seed']} (stopped: non-finite loss) | " + " | ".join("" for _ in metrics)
                         + " |")
        lines += ["", "Mean ± sample std [95 % t interval] over seeds; each sample metric is itself the mean of "
                      f"{rs[0]['metrics'].get('num_draws', 1)} draws of {rs[0]['metrics']['num_samples']} samples "
                      "against the held-out split." if groups else "", ""]
        pairs = [(reference, other) for other in compare_with if reference in groups and other in groups]
        tests = []
        for a, b in pairs:
            by_seed_a = {r["seed"]: r for r in groups[a]}
            by_seed_b = {r["seed"]: r for r in groups[b]}
            seeds = sorted(set(by_seed_a) & set(by_seed_b))
            if len(seeds) < 2:
                continue
            for metric in metrics:
                xa = [by_seed_a[s]["metrics"][metric] for s in seeds]
                xb = [by_seed_b[s]["metrics"][metric] for s in seeds]
                diff = paired_difference(xa, xb)
                diff["detectable"] = detectable_difference(float(np.std(np.subtract(xa, xb), ddof=1)), len(seeds))
                tests.append((a, b, metric, len(seeds), diff))
        adjusted = holm_adjust([diff["p_value"] for *_, diff in tests])
        rows = []
        for (a, b, metric, n, diff), p_holm in zip(tests, adjusted):
            better = a if (diff["mean_difference"] < 0) == (metric in LOWER_IS_BETTER) else b
            if math.isnan(diff["p_value"]):
                reading = "no test: the same difference on every seed"
            elif diff["significant"] and p_holm < 0.05:
                reading = f"{better} better"
            elif diff["significant"]:
                reading = f"lean to {better} (uncorrected only)"
            else:
                reading = "not significant"
            detectable = "—" if math.isnan(diff["p_value"]) else f"±{diff['detectable']:.3g}"
            rows.append(f"| {a} vs {b} | {metric} | {n} | {diff['mean_difference']:+.4g} "
                        f"[{diff['ci_low']:+.4g}, {diff['ci_high']:+.4g}] | {detectable} | {diff['p_value']:.3g} | "
                        f"{p_holm:.3g} | {reading} |")
        if rows:
            lines += [f"Paired by seed: {reference} minus the other method (negative = lower for {reference}). The "
                      f"Holm p-value adjusts each p-value for the {sum(1 for p in adjusted if p == p)} tests of this "
                      "table; a reading of \"better\" needs the bootstrap interval to exclude 0 and the Holm p-value "
                      "to be below 0.05; a \"lean\" has the interval and an uncorrected p-value below 0.05 only. "
                      "\"Detectable\" is the smallest true difference the paired test would find with 80 % power at "
                      "these seeds.", "",
                      "| comparison | metric | seeds | mean difference [95 % bootstrap] | detectable (80 % power) | "
                      "p (paired t) | p (Holm) | reading |", "| --- | --- | --- | --- | --- | --- | --- | --- |", *rows,
                      ""]
    return "\n".join(lines) + "\n"
