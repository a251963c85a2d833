"""Two toy methods compared over many training seeds, with the estimators' own noise measured.

A toy score is a random variable twice over: the training seed decides the trained networks, and the evaluation seed
decides the 5,000 generated and real points the histograms are built from. [`evaluate_with_seeds`] scores every kept
pair of networks at several evaluation seeds (one JSON line each, so an interrupted evaluation resumes);
[`seed_study`] then separates the two sources of spread per metric:

- the **estimator noise**: the standard deviation of one trained model's score across evaluation seeds, pooled over
  the models (`sqrt(mean of the per-model variances)`);
- the **seed-to-seed spread**: the sample standard deviation across training seeds of each model's score averaged over
  the evaluation seeds;

and compares the two methods on the seeds both trained, with each model's score averaged over the evaluation seeds:
a paired comparison (bootstrap interval of the mean difference and the paired t-test, see
[`evaluation.statistics.paired_difference`]), with the paired p-values adjusted by Holm's method for the number of
metrics tested, and, not pairing the seeds, Welch's t-test. For each metric it also gives the smallest difference the
paired test would find with 80 % power, so that a "not significant" says how large a difference it could still hide.
A second question, whether one method's models differ more from seed to seed than the other's, is answered by the
Brown-Forsythe test (Levene's test about the medians, robust to a skewed spread), its p-values adjusted by Holm's
method over the metrics apart from the first family: it asks about the spread, not the mean.
"""

import math
from typing import Dict, Iterable, List, Sequence

import numpy as np

from ...evaluation.statistics import describe, detectable_difference, format_interval, holm_adjust, paired_difference
from ...errors import require
from ..provenance import code_version
from .comparison import append_record, evaluate_toy_model, load_run_models, read_records

STUDY_METRICS = ("kl", "jsd", "modes_covered", "high_quality", "gnelbo")
METRIC_LABELS = {"kl": "KL", "jsd": "JSD", "modes_covered": "modes covered", "high_quality": "high-quality share",
                 "gnelbo": "gnELBO"}


def evaluate_with_seeds(records: Sequence[Dict], model_dir: str, eval_seeds: Sequence[int], path: str,
                        gnelbo_grid: int = 1024) -> List[Dict]:
    r"""
    Score every run of `records` whose networks are kept in `model_dir` at each of `eval_seeds`.

    Args:
        records (`Sequence[Dict]`): Finished runs (lines of a `runs.jsonl`).
        model_dir (`str`): Where the runs' networks were saved (`<model_dir>/<run_id>/{encoder,decoder}`).
        eval_seeds (`Sequence[int]`): The evaluation seeds.
        path (`str`): A JSON-lines file of evaluations: those already in it are reused, new ones appended.
        gnelbo_grid (`int`, defaults to 1024): The gnELBO's grid size.

    Returns:
        `List[Dict]`: One evaluation per run and seed, `{"run_id", "name", "seed", "eval_seed", <metrics>}`, for the
        runs with kept networks (the others are left out).
    """
    done = {(e["run_id"], e["eval_seed"]): e for e in read_records([path])}
    version = code_version()
    out = []
    for record in records:
        models = None
        for eval_seed in eval_seeds:
            key = (record["run_id"], int(eval_seed))
            if key not in done:
                models = models or load_run_models(model_dir, record["run_id"])
                if models is None:
                    break
                scores = evaluate_toy_model(*models, record["dataset"], record["settings"]["config"]["loss_type"],
                                            int(eval_seed), gnelbo_grid)
                done[key] = {"run_id": record["run_id"], "name": record.get("name", record["method"]),
                             "seed": record["seed"], "eval_seed": int(eval_seed), **scores,
                             "code_version": version}
                append_record(path, done[key])
            out.append(done[key])
    return out


def _per_model(evaluations: Iterable[Dict], name: str, metric: str, eval_seeds: Sequence[int]) -> Dict[int, List]:
    """`{training seed: [score at each of eval_seeds]}` for the runs of `name` evaluated at all of `eval_seeds`."""
    by_seed: Dict[int, Dict[int, float]] = {}
    for e in evaluations:
        if e["name"] == name and metric in e:
            by_seed.setdefault(e["seed"], {})[e["eval_seed"]] = e[metric]
    return {s: [v[k] for k in eval_seeds] for s, v in sorted(by_seed.items()) if all(k in v for k in eval_seeds)}


def seed_study(records: Sequence[Dict], evaluations: Sequence[Dict], names: Sequence[str], eval_seeds: Sequence[int],
               metrics: Sequence[str] = STUDY_METRICS) -> Dict:
    r"""
    Statistics of methods `names = (a, b)` over their training seeds, and `a - b`.

    Args:
        records (`Sequence[Dict]`): The finished runs; their own scores (at the record's evaluation seed, gnELBO
            included) give the per-method summary `recorded`.
        evaluations (`Sequence[Dict]`): [`evaluate_with_seeds`]'s output.
        names (`Sequence[str]`): The two methods' row names (e.g. `"as-introvae"`, `"soft-introvae (reference)"`).
        eval_seeds (`Sequence[int]`): The evaluation seeds to use (a model counts when it was scored at all of them).
        metrics (`Sequence[str]`): The metrics studied over evaluation seeds.

    Returns:
        `Dict`: `{"names", "eval_seeds", "recorded": {name: {metric: describe(...)}}, "metrics": {metric: {"methods":
        {name: {"seeds", "averaged": describe(...), "estimator_std", "seed_std"}}, "paired": {**paired_difference(a,
        b), "seeds", "detectable", "p_holm", "significant_holm"}, "welch_p", "spread_p", "spread_p_holm"}}}`;
        `spread_p` is the Brown-Forsythe test of equal seed-to-seed spread (NaN when the absolute deviations from
        each method's median do not vary within a method), `spread_p_holm` its Holm adjustment over the metrics;
        `detectable` is the difference the
        paired test finds with 80 % power at these seeds and this spread of the differences
        ([`evaluation.statistics.detectable_difference`]); `p_holm` adjusts the paired p-value for the metrics tested
        ([`evaluation.statistics.holm_adjust`]).
    """
    require("scipy", purpose="The seed study")
    from scipy import stats

    a, b = names
    recorded = {}
    for name in names:
        rs = [r for r in records if r.get("name", r["method"]) == name]
        recorded[name] = {m: describe([r[m] for r in rs]) for m in metrics if rs and all(m in r for r in rs)}
        recorded[name]["seeds"] = sorted(r["seed"] for r in rs)
    study = {"names": list(names), "eval_seeds": [int(s) for s in eval_seeds], "recorded": recorded, "metrics": {}}
    for metric in metrics:
        per = {name: _per_model(evaluations, name, metric, eval_seeds) for name in names}
        methods = {}
        for name, models in per.items():
            if not models:
                continue
            means = [float(np.mean(v)) for v in models.values()]
            within = [float(np.var(v, ddof=1)) for v in models.values()] if len(eval_seeds) > 1 else []
            methods[name] = {"seeds": list(models), "averaged": describe(means),
                             "estimator_std": math.sqrt(np.mean(within)) if within else math.nan,
                             "seed_std": float(np.std(means, ddof=1)) if len(means) > 1 else math.nan}
        entry = {"methods": methods}
        common = sorted(set(per[a]) & set(per[b]))
        if len(common) >= 2:
            xa = [float(np.mean(per[a][s])) for s in common]
            xb = [float(np.mean(per[b][s])) for s in common]
            differences_std = float(np.std(np.subtract(xa, xb), ddof=1))
            entry["paired"] = {**paired_difference(xa, xb), "seeds": common,
                               "detectable": detectable_difference(differences_std, len(common))}
            ya = [float(np.mean(v)) for v in per[a].values()]
            yb = [float(np.mean(v)) for v in per[b].values()]
            entry["welch_p"] = float(stats.ttest_ind(ya, yb, equal_var=False).pvalue) if np.ptp(ya + yb) > 0 else math.nan
            # Brown-Forsythe is a one-way ANOVA of the absolute deviations from each method's median: without any
            # variation of those deviations within a method (two seeds each, or constant scores) it has no test
            varies = any(np.ptp(np.abs(np.subtract(y, np.median(y)))) > 0 for y in (ya, yb))
            entry["spread_p"] = (float(stats.levene(ya, yb, center="median").pvalue)
                                 if min(len(ya), len(yb)) >= 2 and varies else math.nan)
        study["metrics"][metric] = entry
    paired = [entry["paired"] for entry in study["metrics"].values() if "paired" in entry]
    for p, p_holm in zip(paired, holm_adjust([p["p_value"] for p in paired])):
        p["p_holm"] = p_holm
        p["significant_holm"] = bool(p["significant"] and p_holm < 0.05)
    spread = [entry for entry in study["metrics"].values() if "spread_p" in entry]
    for entry, p_holm in zip(spread, holm_adjust([entry["spread_p"] for entry in spread])):
        entry["spread_p_holm"] = p_holm
    return study


def _fmt(metric: str) -> str:
    return {"high_quality": ".3f", "gnelbo": ".3e"}.get(metric, ".2f")


def study_markdown(study: Dict) -> str:
    """Two tables of a [`seed_study`]: per method and metric, then the paired differences."""
    a, b = study["names"]
    k = len(study["eval_seeds"])
    rows = [f"| metric | method | training seeds | mean ± sample std [95 % CI], each model averaged over {k} evaluation "
            "seeds | seed-to-seed std | estimator std (one model, across evaluation seeds) |",
            "| --- | --- | --- | --- | --- | --- |"]
    for metric, entry in study["metrics"].items():
        for name, m in entry["methods"].items():
            d = _fmt(metric)
            rows.append(f"| {METRIC_LABELS.get(metric, metric)} | {name} | {len(m['seeds'])} | "
                        f"{format_interval(m['averaged'], spec=d)} | {m['seed_std']:{d}} | {m['estimator_std']:{d}} |")
    rows += ["", f"| metric | {a} minus {b}: mean difference [95 % bootstrap CI] | detectable (80 % power) | "
             "paired t p | paired t p, Holm | Welch p | seeds | significant at 5 %: uncorrected / Holm | "
             "equal seed-to-seed spread: Brown-Forsythe p / Holm |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for metric, entry in study["metrics"].items():
        if "paired" not in entry:
            continue
        p, d = entry["paired"], "+" + _fmt(metric)
        detectable = f"±{p['detectable']:{d[1:]}}"
        if math.isnan(p["p_value"]):  # the same difference on every seed: nothing to test
            detectable = "—"
            tests = f"— | — | — | {len(p['seeds'])} | no test: the same difference on every seed"
        else:
            tests = (f"{p['p_value']:.3g} | {p['p_holm']:.3g} | {entry['welch_p']:.3g} | {len(p['seeds'])} | "
                     f"{'yes' if p['significant'] else 'no'} / {'yes' if p['significant_holm'] else 'no'}")
        spread = ("—" if math.isnan(entry.get("spread_p", math.nan))
                  else f"{entry['spread_p']:.3g} / {entry['spread_p_holm']:.3g}")
        rows.append(f"| {METRIC_LABELS.get(metric, metric)} | {p['mean_difference']:{d}} "
                    f"[{p['ci_low']:{d}}, {p['ci_high']:{d}}] | {detectable} | {tests} | {spread} |")
    return "\n".join(rows) + "\n"
