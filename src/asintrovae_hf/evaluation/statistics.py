"""Statistics over seeds: mean, sample standard deviation, a 95 % confidence interval, and paired comparisons.

Every table of `docs/results.md` from the held-out protocol on uses these: the standard deviation is the sample one
(`ddof = 1`), the interval of a mean is Student's t interval, and two methods trained on the same seeds are compared by
their per-seed differences (a percentile bootstrap interval of the mean difference, and the paired t-test's p-value).
A table that makes several such tests also gives each p-value adjusted for their number ([`holm_adjust`]).
"""

import math
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..errors import require


def describe(values: Sequence[float], confidence: float = 0.95) -> Dict[str, float]:
    r"""
    Mean, sample standard deviation and Student's t confidence interval of the mean.

    Args:
        values (`Sequence[float]`): One value per seed; non-finite values are refused.
        confidence (`float`, defaults to 0.95): The interval's level.

    Returns:
        `Dict[str, float]`: `n`, `mean`, `std` (`ddof = 1`; NaN for one value), `ci_low`, `ci_high` (NaN for one
        value).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"describe needs a non-empty list of finite numbers, got {list(values)!r}.")
    n, mean = len(x), float(x.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    require("scipy", purpose="Confidence intervals")
    from scipy import stats

    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def paired_difference(a: Sequence[float], b: Sequence[float], num_resamples: int = 10000, seed: int = 0,
                      confidence: float = 0.95) -> Dict[str, float]:
    r"""
    Compare two methods measured on the same seeds: `a[i] - b[i]` per seed.

    Args:
        a, b (`Sequence[float]`): One value per seed, in the same seed order.
        num_resamples (`int`, defaults to 10000): Bootstrap resamples of the seeds.
        seed (`int`, defaults to 0): The bootstrap's generator.
        confidence (`float`, defaults to 0.95): The interval's level.

    Returns:
        `Dict[str, float]`: `n`, `mean_difference`, `ci_low` and `ci_high` (percentile bootstrap of the mean
        difference), `p_value` (two-sided paired t-test; NaN when every difference is the same) and `significant`
        (whether the bootstrap interval excludes 0 and `p_value < 1 - confidence`).
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"paired_difference needs two lists of the same length (at least 2), got {len(x)} and "
                         f"{len(y)}.")
    require("scipy", purpose="Paired tests")
    from scipy import stats

    d = x - y
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(num_resamples, len(d)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
    p_value = float(stats.ttest_rel(x, y).pvalue) if np.ptp(d) > 0 else math.nan
    significant = bool((low > 0 or high < 0) and p_value < 1 - confidence)
    return {"n": len(d), "mean_difference": float(d.mean()), "ci_low": float(low), "ci_high": float(high),
            "p_value": p_value, "significant": significant}


def detectable_difference(std: float, n: int, confidence: float = 0.95, power: float = 0.8) -> float:
    r"""
    The smallest true mean difference that a two-sided paired t-test on `n` seeds finds at level `1 - confidence` with
    probability `power`, when the per-seed differences have standard deviation `std`: what a "not significant" could
    still hide.

    Solved exactly on the non-central t distribution (the test statistic under a true difference `delta` is
    non-central t with `n - 1` degrees of freedom and non-centrality `delta * sqrt(n) / std`).

    Args:
        std (`float`): The standard deviation of the per-seed differences (for example their sample std).
        n (`int`): Seeds (at least 2).
        confidence (`float`, defaults to 0.95), power (`float`, defaults to 0.8): The test's level and the wanted
            power.

    Returns:
        `float`: The difference, in the metric's unit (0 when `std` is 0).
    """
    if n < 2 or not std >= 0:
        raise ValueError(f"detectable_difference needs n >= 2 seeds and a std >= 0, got n={n!r}, std={std!r}.")
    if std == 0:
        return 0.0
    require("scipy", purpose="Power")
    from scipy import optimize, stats

    df, scale = n - 1, std / math.sqrt(n)
    critical = float(stats.t.ppf(0.5 + confidence / 2, df))

    def shortfall(delta: float) -> float:
        nc = delta / scale
        # the lower tail as the upper tail of -T (scipy's nct.cdf returns NaN far in the lower tail at df = 1)
        return float(stats.nct.sf(critical, df, nc) + stats.nct.sf(critical, df, -nc)) - power

    high = scale
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-12 * high))


def holm_adjust(p_values: Sequence[float]) -> List[float]:
    r"""
    Holm's step-down adjustment of a family of p-values, so that "adjusted p < 0.05" bounds the chance of any false
    "significant" in the family at 5 % (Holm 1979).

    Written here because neither numpy nor scipy has a family-wise correction (scipy's `false_discovery_control`
    controls the false discovery rate, a weaker promise). NaN p-values (a paired difference that is the same on every
    seed, so no test was made) stay NaN and do not count in the family's size.

    Args:
        p_values (`Sequence[float]`): The family's p-values, in any order.

    Returns:
        `List[float]`: The adjusted p-values, in the same order: the `k`-th smallest of `m` is multiplied by
        `m - k + 1`, made non-decreasing in that order, and capped at 1.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.any((p < 0) | (p > 1)):
        raise ValueError(f"holm_adjust needs a list of p-values in [0, 1] (or NaN), got {list(p_values)!r}.")
    adjusted = np.full(p.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    running = 0.0
    for k, index in enumerate(order):
        running = max(running, min(1.0, (m - k) * float(p[index])))
        adjusted[index] = running
    return adjusted.tolist()


def format_interval(summary: Dict[str, float], digits: int = 2, spec: Optional[str] = None) -> str:
    """
    `"mean ± std [low, high]"` of a [`describe`] result (`"mean"` alone for one value), each number written with the
    format `spec` (default: `digits` decimals, `".{digits}f"`).
    """
    spec = spec or f".{digits}f"
    if summary["n"] == 1:
        return f"{summary['mean']:{spec}} (1 seed)"
    return (f"{summary['mean']:{spec}} ± {summary['std']:{spec}} "
            f"[{summary['ci_low']:{spec}}, {summary['ci_high']:{spec}}]")
