"""The toy seed study: kept models scored at several evaluation seeds, the estimator noise separated from the
seed-to-seed spread, the paired comparison, and the figure's median seed."""

import json
import math

import numpy as np
import pytest

from asintrovae_hf.evaluation.statistics import describe, detectable_difference, holm_adjust, paired_difference
from asintrovae_hf.experiments.toy.comparison import read_records
from asintrovae_hf.experiments.figures import median_seed, worst_seed
from asintrovae_hf.experiments.toy.seed_study import seed_study, study_markdown

from helpers import load_script

SHORT = ["--num_iter", "6", "--num_vae_steps", "2", "--batch_size", "64", "--gnelbo_grid", "16",
         "--hidden_dims", "32", "32"]


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    toy2d = load_script("toy2d")
    assert toy2d.main(["--methods", "soft-introvae:reference", "as-introvae", "--seeds", "0", "1", "2",
                       "--output_dir", str(out), *SHORT]) == 0
    return toy2d, out


def test_compare_scores_every_kept_model_at_every_evaluation_seed(toy_runs, capsys):
    toy2d, out = toy_runs
    argv = ["--summarize", "--output_dir", str(out), "--compare", "as-introvae", "soft-introvae:reference",
            "--eval_seeds", "1234", "7", "8"]
    assert toy2d.main(argv) == 0
    records = read_records([str(out / "runs.jsonl")])
    evaluations = read_records([str(out / "evaluations.jsonl")])
    assert len(evaluations) == 6 * 3
    for r in records:  # at the record's own evaluation seed the estimator gives the recorded scores exactly
        again = next(e for e in evaluations if e["run_id"] == r["run_id"] and e["eval_seed"] == 1234)
        assert (again["kl"], again["jsd"], again["high_quality"]) == (r["kl"], r["jsd"], r["high_quality"])
    study = json.loads((out / "comparison.json").read_text())
    kl = study["metrics"]["kl"]
    for name in ("as-introvae", "soft-introvae (reference)"):
        per_model = {s: [e["kl"] for e in evaluations if e["name"] == name and e["seed"] == s] for s in (0, 1, 2)}
        means = [np.mean(v) for v in per_model.values()]
        assert kl["methods"][name]["averaged"]["mean"] == pytest.approx(np.mean(means))
        assert kl["methods"][name]["seed_std"] == pytest.approx(np.std(means, ddof=1))
        pooled = math.sqrt(np.mean([np.var(v, ddof=1) for v in per_model.values()]))
        assert kl["methods"][name]["estimator_std"] == pytest.approx(pooled) and pooled > 0
        assert study["recorded"][name]["kl"]["mean"] == pytest.approx(
            describe([r["kl"] for r in records if r["name"] == name])["mean"])
    a = [np.mean([e["jsd"] for e in evaluations if e["name"] == "as-introvae" and e["seed"] == s]) for s in (0, 1, 2)]
    b = [np.mean([e["jsd"] for e in evaluations if e["name"] == "soft-introvae (reference)" and e["seed"] == s])
         for s in (0, 1, 2)]
    assert study["metrics"]["jsd"]["paired"]["p_value"] == pytest.approx(paired_difference(a, b)["p_value"])
    # the paired p-values are adjusted together, over the metrics compared
    paired = [entry["paired"] for entry in study["metrics"].values() if "paired" in entry]
    assert [p["p_holm"] for p in paired] == pytest.approx(holm_adjust([p["p_value"] for p in paired]), nan_ok=True)
    assert all(p["significant_holm"] <= p["significant"] for p in paired)
    jsd = study["metrics"]["jsd"]["paired"]
    assert jsd["detectable"] == pytest.approx(detectable_difference(float(np.std(np.subtract(a, b), ddof=1)), 3))
    table = (out / "comparison.md").read_text()
    assert "as-introvae minus soft-introvae (reference)" in table and "| KL | as-introvae | 3 |" in table
    assert "| paired t p, Holm |" in table and "| detectable (80 % power) |" in table
    # a second call reuses the evaluations instead of scoring again
    before = (out / "evaluations.jsonl").read_text()
    assert toy2d.main(argv) == 0
    assert (out / "evaluations.jsonl").read_text() == before


def test_compare_can_leave_out_seeds_into_its_own_tables(toy_runs):
    toy2d, out = toy_runs
    argv = ["--summarize", "--output_dir", str(out), "--compare", "as-introvae", "soft-introvae:reference",
            "--eval_seeds", "1234", "7", "--compare_seeds", "1", "2", "--comparison_name", "comparison_seeds_1_2"]
    assert toy2d.main(argv) == 0
    study = json.loads((out / "comparison_seeds_1_2.json").read_text())
    for name in ("as-introvae", "soft-introvae (reference)"):
        assert study["metrics"]["kl"]["methods"][name]["seeds"] == [1, 2]
        assert study["recorded"][name]["seeds"] == [1, 2]
    assert study["metrics"]["kl"]["paired"]["seeds"] == [1, 2]
    assert "| KL | as-introvae | 2 |" in (out / "comparison_seeds_1_2.md").read_text()
    with pytest.raises(SystemExit, match=r"no finished runs of .* at --compare_seeds \[7\]"):
        toy2d.main(argv[:-5] + ["--compare_seeds", "7"])
    for bad, message in ((["--comparison_name", "../x"], "plain file name"),
                         (["--compare_seeds", "1"], "go with --compare")):
        with pytest.raises(SystemExit) as error:
            toy2d.main(["--summarize", "--output_dir", str(out), *bad]
                       + (["--compare", "as-introvae", "vae"] if "plain" in message else []))
        assert error.value.code == 2


def test_compare_names_a_method_without_runs(toy_runs):
    toy2d, out = toy_runs
    with pytest.raises(SystemExit, match="no finished runs of \\['introvae'\\]"):
        toy2d.main(["--summarize", "--output_dir", str(out), "--compare", "as-introvae", "introvae"])


def test_the_figure_shows_the_median_seed():
    records = [{"name": "m", "method": "m", "seed": s, "kl": kl, "run_id": f"r{s}"}
               for s, kl in [(0, 5.0), (1, 1.0), (2, 3.0), (3, 2.0)]]
    kl = lambda r, metric: r[metric]  # noqa: E731
    assert median_seed(records, "kl", value=kl)["m"]["seed"] == 3  # KL 1, 2, 3, 5: the lower middle is 2 (seed 3)
    assert median_seed(records[:3], "kl", value=kl)["m"]["seed"] == 2
    assert "other" not in median_seed(records, "kl", value=kl)


def test_the_figure_also_shows_the_worst_seed_from_three_seeds_on():
    from asintrovae_hf.commands.toy2d import figure_runs

    records = [{"name": "m", "method": "m", "seed": s, "kl": kl, "run_id": f"r{s}"}
               for s, kl in [(0, 5.0), (1, 1.0), (2, 3.0), (3, 2.0), (4, 5.0)]]
    kl = lambda r, metric: r[metric]  # noqa: E731
    assert worst_seed(records, "kl", value=kl)["m"]["seed"] == 0  # a tie at KL 5 goes to the lower seed
    shown = [(name, role, run["seed"], count) for name, role, run, count in figure_runs(records)]
    assert shown == [("m", "median", 2, 5), ("m", "worst", 0, 5)]
    assert [role for _, role, _, _ in figure_runs(records[1:3])] == ["median"]  # two seeds: the median only
    # the worst KL tied with the median's: both rules pick the same run, shown once
    tied = [dict(r, kl=kl) for r, kl in zip(records, [1.0, 2.0, 2.0])]
    assert [(role, run["seed"]) for _, role, run, _ in figure_runs(tied)] == [("median", 1)]


def test_seed_study_separates_estimator_noise_from_seed_spread():
    """Synthetic scores: method a = 1 + seed effect + small evaluation noise; b is a shifted by 0.5 on every seed."""
    rng = np.random.default_rng(0)
    seeds, eval_seeds = range(8), [0, 1, 2, 3]
    effect = rng.normal(0, 1.0, size=8)
    evaluations = []
    for name, shift in (("a", 0.0), ("b", -0.5)):
        for s in seeds:
            for k in eval_seeds:
                evaluations.append({"name": name, "seed": s, "eval_seed": k, "run_id": f"{name}{s}",
                                    "kl": 1 + shift + effect[s] + rng.normal(0, 0.01)})
    records = [{"name": e["name"], "method": e["name"], "seed": e["seed"], "kl": e["kl"]}
               for e in evaluations if e["eval_seed"] == 0]
    study = seed_study(records, evaluations, ("a", "b"), eval_seeds, metrics=("kl",))
    a = study["metrics"]["kl"]["methods"]["a"]
    assert a["estimator_std"] == pytest.approx(0.01, rel=0.3) and a["seed_std"] == pytest.approx(np.std(effect, ddof=1), rel=0.05)
    paired = study["metrics"]["kl"]["paired"]
    assert paired["mean_difference"] == pytest.approx(0.5, abs=0.02) and paired["significant"]
    assert study["metrics"]["kl"]["welch_p"] > 0.05  # unpaired, the seed effect hides the shift
    assert study["metrics"]["kl"]["spread_p"] > 0.5  # b is a shifted: the same spread


def _two_spreads(scale_b, seeds=range(10), metrics=("kl", "jsd")):
    """a: seed effects spread evenly over [-1, 1] on every metric; b: the same times `scale_b`; one evaluation seed."""
    effect = np.linspace(-1.0, 1.0, len(seeds))
    evaluations = [{"name": name, "seed": s, "eval_seed": 0, "run_id": f"{name}{s}",
                    **{m: 5 + scale * effect[i] for m in metrics}}
                   for name, scale in (("a", 1.0), ("b", scale_b)) for i, s in enumerate(seeds)]
    return seed_study([], evaluations, ("a", "b"), [0], metrics=metrics)


def test_seed_study_tests_whether_one_method_spreads_more_across_seeds():
    from scipy import stats

    study = _two_spreads(scale_b=8.0)
    kl = study["metrics"]["kl"]
    assert kl["methods"]["b"]["seed_std"] == pytest.approx(8 * kl["methods"]["a"]["seed_std"])
    assert kl["spread_p"] < 0.01
    assert kl["spread_p_holm"] == pytest.approx(min(1.0, 2 * max(kl["spread_p"], study["metrics"]["jsd"]["spread_p"])))
    effect = np.linspace(-1.0, 1.0, 10)
    assert kl["spread_p"] == pytest.approx(stats.levene(5 + effect, 5 + 8 * effect, center="median").pvalue)
    table = study_markdown(study)
    assert "equal seed-to-seed spread: Brown-Forsythe p / Holm" in table
    assert f"{kl['spread_p']:.3g} / {kl['spread_p_holm']:.3g} |" in table


def test_the_spread_test_is_left_out_when_nothing_deviates():
    study = _two_spreads(scale_b=0.0, metrics=("kl",))  # b constant; a still varies: a test
    assert not np.isnan(study["metrics"]["kl"]["spread_p"])
    flat = seed_study([], [{"name": n, "seed": s, "eval_seed": 0, "run_id": f"{n}{s}", "kl": 1.0}
                           for n in "ab" for s in range(4)], ("a", "b"), [0], metrics=("kl",))
    assert np.isnan(flat["metrics"]["kl"]["spread_p"]) and np.isnan(flat["metrics"]["kl"]["spread_p_holm"])


def test_records_name_their_code_version(toy_runs, tmp_path):
    from asintrovae_hf.experiments.provenance import code_version

    _, out = toy_runs
    versions = {r["code_version"] for r in read_records([str(out / "runs.jsonl")])}
    assert versions == {code_version()} and code_version() != ""
    # outside a checkout of this package (an installed wheel), the package version stands in for the commit
    assert code_version(str(tmp_path)).startswith("asintrovae-hf ")
