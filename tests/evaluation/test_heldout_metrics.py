"""The held-out protocol's metrics and statistics: precision/recall, calibration pairs, a pipeline's held-out
metrics, intervals over seeds and paired comparisons."""

import math

import numpy as np
import pytest
from helpers import tiny_image_pipeline

from asintrovae_hf.evaluation.heldout import calibrate, evaluate_heldout, precision_recall, summarize_runs
from asintrovae_hf.evaluation.statistics import (
    describe,
    detectable_difference,
    format_interval,
    holm_adjust,
    paired_difference,
)


# ---- statistics -----------------------------------------------------------------------------------------------------


def test_describe_is_the_sample_std_and_student_t_interval():
    from scipy import stats

    values = [1.0, 2.0, 3.0, 4.0, 7.0]
    summary = describe(values)
    assert summary["std"] == pytest.approx(np.std(values, ddof=1))
    low, high = stats.t.interval(0.95, 4, loc=np.mean(values), scale=stats.sem(values))
    assert (summary["ci_low"], summary["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert format_interval(summary) == f"3.40 ± {np.std(values, ddof=1):.2f} [{low:.2f}, {high:.2f}]"
    one = describe([2.5])
    assert one["n"] == 1 and math.isnan(one["std"]) and format_interval(one) == "2.50 (1 seed)"
    with pytest.raises(ValueError, match="finite numbers"):
        describe([1.0, float("nan")])


def test_paired_difference_separates_a_consistent_gap_from_noise():
    rng = np.random.default_rng(0)
    base = rng.normal(10, 3, size=10)  # a large spread between seeds, shared by both methods
    better = base - 1 + rng.normal(0, 0.1, size=10)
    gap = paired_difference(better, base)
    assert gap["significant"] and gap["ci_high"] < 0 and gap["p_value"] < 1e-6
    assert gap["mean_difference"] == pytest.approx(float(np.mean(better - base)))
    noise = paired_difference(base + rng.normal(0, 1, size=10), base + rng.normal(0, 1, size=10))
    assert not noise["significant"] and noise["ci_low"] < 0 < noise["ci_high"]
    with pytest.raises(ValueError, match="same length"):
        paired_difference([1, 2, 3], [1, 2])


def test_detectable_difference_has_the_stated_power():
    from scipy import stats

    delta = detectable_difference(1.0, 10)
    assert 0.9 < delta < 1.1  # textbook: a paired t-test on 10 seeds has 80 % power at about one std
    assert detectable_difference(2.0, 10) == pytest.approx(2 * delta)  # in the metric's unit
    assert detectable_difference(1.0, 40) < delta / 1.9  # about 1 / sqrt(n)
    # by simulation: tests of 10 differences drawn around delta reject at 5 % in 80 % of the trials
    d = np.random.default_rng(0).normal(delta, 1.0, size=(20000, 10))
    rejected = stats.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.01)
    assert detectable_difference(0.0, 5) == 0.0
    assert 8 < detectable_difference(1.0, 2) < 20  # two seeds: one degree of freedom, finite but large
    with pytest.raises(ValueError, match="n >= 2"):
        detectable_difference(1.0, 1)


def test_holm_adjust_matches_its_definition():
    # by hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04, then made non-decreasing
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # no test (NaN) stays NaN and is not counted: a family of 2, not 3
    adjusted = holm_adjust([0.01, float("nan"), 0.02])
    assert math.isnan(adjusted[1]) and (adjusted[0], adjusted[2]) == (pytest.approx(0.02), pytest.approx(0.02))
    assert holm_adjust([0.6, 0.7]) == [1.0, 1.0] and holm_adjust([]) == []
    # against the definition: adjusted p_(i) = max over j <= i of min(1, (m - j + 1) p_(j))
    p = np.random.default_rng(0).uniform(0, 0.2, size=9)
    order = np.argsort(p)
    expected = np.empty(9)
    for i, index in enumerate(order):
        expected[index] = max(min(1.0, (9 - j) * p[order[j]]) for j in range(i + 1))
    assert holm_adjust(p.tolist()) == pytest.approx(expected.tolist())
    with pytest.raises(ValueError, match=r"p-values in \[0, 1\]"):
        holm_adjust([0.5, 1.5])


# ---- precision and recall -------------------------------------------------------------------------------------------


def test_precision_recall_sees_mode_collapse_and_disjoint_sets():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, size=(5, 8))
    real = np.concatenate([c + rng.normal(0, 0.5, size=(100, 8)) for c in centres])
    same = precision_recall(real, np.concatenate([c + rng.normal(0, 0.5, size=(100, 8)) for c in centres]))
    assert same["precision"] > 0.75 and same["recall"] > 0.75  # k = 3 in 8 dimensions: about 0.85
    collapsed = precision_recall(real, centres[0] + rng.normal(0, 0.5, size=(500, 8)))
    assert collapsed["precision"] > 0.75 and collapsed["recall"] < 0.3  # one mode of five: good samples, no recall
    far = precision_recall(real, real + 1000)
    assert far == {"precision": 0.0, "recall": 0.0}
    with pytest.raises(ValueError, match="more than k = 3"):
        precision_recall(real[:3], real)


# ---- calibration and a pipeline's metrics ----------------------------------------------------------------------------


def test_calibration_orders_real_images_far_above_noise():
    result = calibrate("digits", num_draws=2)
    real, noise = result["train_vs_heldout"], result["uniform_noise"]
    assert result["classifier_heldout_accuracy"] > 0.97 and result["num_heldout"] == 360
    assert real["fd"] * 10 < noise["fd"]
    assert real["precision"] > 0.8 and real["recall"] > 0.8 and noise["precision"] < 0.05 and noise["recall"] < 0.05
    assert real["class_entropy"] > 2.25 and real["smallest_class_share"] > 0.05  # ten nearly equal classes
    assert real["fd_draw_std"] > 0  # two draws of train images differ


def test_evaluate_heldout_of_a_pipeline():
    pipe = tiny_image_pipeline(size=16, latent_dim=4)
    first = evaluate_heldout(pipe, "digits", seed=0, num_draws=2, iw_samples=4)
    assert first["num_heldout"] == 360 and first["num_samples"] == 360 and first["sampler"] == "prior"
    assert sum(first["class_shares"]) == pytest.approx(1.0)
    assert first["smallest_class_share"] <= 0.1 <= first["largest_class_share"]
    assert 0 < first["reconstruction_mse"] < 1 and first["nll_bits_per_dim"] > 0
    assert first["nll_nats"] == pytest.approx(first["nll_bits_per_dim"] * 256 * math.log(2), rel=1e-5)
    assert all(math.isfinite(first[k]) for k in ("fd", "precision", "recall", "class_entropy", "fd_draw_std"))
    again = evaluate_heldout(pipe, "digits", seed=0, num_draws=2, iw_samples=4)
    assert again == first  # seeded: the same numbers
    other = evaluate_heldout(pipe, "digits", seed=1, num_draws=2, iw_samples=4)
    assert other["fd"] != first["fd"] and other["reconstruction_mse"] == first["reconstruction_mse"]


def test_summary_table_has_intervals_and_paired_readings():
    rng = np.random.default_rng(1)
    records = []
    for seed in range(5):
        for index, (name, shift) in enumerate((("as-introvae", -1.0), ("soft-introvae", 0.0),
                                               ("soft-introvae:reference", 0.0))):
            wobble = 0.1 if (seed + (index > 0)) % 2 else -0.1  # differences of +-0.2 by seed: no consistent gap
            noise = rng.normal(0, 0.01)
            dip = (0.02, 0.05, 0.01, 0.04, 0.03)[seed] if name == "as-introvae" else 0.0  # paired t p = 0.013
            metrics = {"fd": 10 + seed + shift + noise, "precision": 0.5 - dip, "recall": 0.5 + 0.01 * seed,
                       "class_entropy": 2.3, "smallest_class_share": 0.09, "reconstruction_mse": 0.02,
                       "nll_bits_per_dim": 1.0 + wobble, "num_draws": 3, "num_samples": 1000}
            records.append({"dataset": "mnist-5k", "name": name, "seed": seed, "metrics": metrics})
    records.append({"dataset": "mnist-5k", "name": "vae", "seed": 0, "stopped": "non-finite loss"})
    table = summarize_runs(records)
    fd = describe([r["metrics"]["fd"] for r in records if r["name"] == "as-introvae"])
    assert f"| as-introvae | 0, 1, 2, 3, 4 | {fd['mean']:.2f} ± {fd['std']:.2f} [{fd['ci_low']:.2f}, " in table
    assert "| as-introvae vs soft-introvae | fd | 5 | -1" in table and "| as-introvae better |" in table
    assert "| vae | 0 (stopped: non-finite loss) |" in table
    comparisons = [line for line in table.splitlines() if line.startswith("| as-introvae vs")]
    fd_rows = [line for line in comparisons if "| fd |" in line]
    nll_rows = [line for line in comparisons if "| nll_bits_per_dim |" in line]
    assert len(fd_rows) == 2 and all("as-introvae better" in row for row in fd_rows)
    assert len(nll_rows) == 2 and all("not significant" in row for row in nll_rows)
    # precision: significant alone (p = 0.013), not once adjusted for the table's 6 tests (fd, precision and NLL in
    # two pairs; a difference that is the same on every seed is not a test): a lean, not a finding
    precision_rows = [line for line in comparisons if "| precision |" in line]
    assert len(precision_rows) == 2 and all("| 0.0132 |" in row for row in precision_rows)
    assert "| 0.0529 | lean to soft-introvae:reference (uncorrected only) |" in precision_rows[0]
    assert "| 0.0529 | lean to soft-introvae (uncorrected only) |" in precision_rows[1]
    power = detectable_difference(float(np.std([0.02, 0.05, 0.01, 0.04, 0.03], ddof=1)), 5)
    assert all(f"| ±{power:.3g} | 0.0132 |" in row for row in precision_rows)
    assert "adjusts each p-value for the 6 tests of this table" in table
