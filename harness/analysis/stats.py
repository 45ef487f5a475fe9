"""Paired per-example statistics for head-set comparisons: tests, CIs, effect sizes, random-null position.

The tests, CIs and d_z take per-example differences `diff = a - b` (e.g. profile gain lost under PCS top-k ablation
minus the same under a baseline head set, on the same evaluation example). When `clusters` (user ids) repeat,
examples of one user are not independent, so the tests and the bootstrap work at the user level:
  - wilcoxon_p: signed-rank test on the per-user mean differences;
  - paired_permutation_p: flips the sign of a whole user's differences at once;
  - bootstrap_ci: resamples whole users and takes the mean over all their examples.
With one example per cluster each of these is exactly the ordinary example-level procedure.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests


MIN_USERS_FOR_CI = 5  # below this, an "interval" is the range of a handful of user means: reported as descriptive
CI_LABEL, RANGE_LABEL = "95% CI (users)", "range of user means (descriptive)"


def descriptive_if_few_users(c: "Comparison", diff: Any, users: Any) -> "Comparison":
    """``c`` unchanged with ``MIN_USERS_FOR_CI`` users or more; else its interval replaced by the range of the per-user
    mean differences, labelled descriptive (a bootstrap over 2-4 users is not a confidence interval)."""
    if c.n_users >= MIN_USERS_FOR_CI:
        return dataclasses.replace(c, seeds={**c.seeds, "interval": CI_LABEL})
    sums, counts = _cluster_sums(_as_diff(diff), users)
    means = sums / counts
    return dataclasses.replace(c, ci_low=float(means.min()), ci_high=float(means.max()),
                               seeds={**c.seeds, "interval": RANGE_LABEL})


def _as_diff(diff: Any, what: str = "diff") -> np.ndarray:
    """Validate a 1-D finite float vector with at least one value; name the bad index in the error."""
    x = np.asarray(diff, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{what} is empty")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(f"{what} has non-finite value {x[bad[0]]} at index {bad[0]} ({bad.size} in all)")
    return x


def _cluster_index(n: int, clusters: Any | None) -> tuple[np.ndarray, int]:
    """Map cluster labels to codes 0..G-1 in order of first appearance; None gives one cluster per example.

    First-appearance order makes one-example clusters resample exactly like the unclustered bootstrap.
    """
    if clusters is None:
        return np.arange(n), n
    labels = np.asarray(clusters)
    if labels.ndim != 1 or labels.size != n:
        raise ValueError(f"clusters has {labels.size} labels (shape {labels.shape}) but diff has {n} values")
    _, first, codes = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=int)
    rank[np.argsort(first)] = np.arange(first.size)
    return rank[codes.ravel()], first.size


def _cluster_sums(x: np.ndarray, clusters: Any | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums and example counts of x."""
    codes, g = _cluster_index(x.size, clusters)
    return np.bincount(codes, weights=x, minlength=g), np.bincount(codes, minlength=g).astype(float)


def wilcoxon_p(diff: Any, *, clusters: Any | None = None) -> float:
    """Two-sided Wilcoxon signed-rank p of diff (per-cluster means when clusters given); all-zero diff gives 1.0."""
    x = _as_diff(diff)
    if clusters is not None:
        sums, counts = _cluster_sums(x, clusters)
        x = sums / counts
    if not np.any(x != 0):
        return 1.0
    return float(stats.wilcoxon(x, alternative="two-sided").pvalue)


def paired_permutation_p(
    diff: Any, *, clusters: Any | None = None, n_resamples: int = 10000, seed: int = 0
) -> float:
    """Two-sided sign-flip test of mean(diff) = 0; flips whole clusters; exact when 2**clusters <= n_resamples."""
    x = _as_diff(diff)
    sums, _ = _cluster_sums(x, clusters)
    if not np.any(sums != 0):
        return 1.0
    # Flipping a cluster's signs flips its sum, so the overall mean is sum(sign * cluster_sum) / n.
    res = stats.permutation_test(
        (sums,),
        lambda s, axis=-1: np.sum(s, axis=axis) / x.size,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(min(1.0, res.pvalue))


def bootstrap_means(
    diff: Any, *, clusters: Any | None = None, n_boot: int = 10000, seed: int = 0
) -> np.ndarray:
    """Bootstrap distribution of mean(diff), resampling whole clusters (examples when clusters is None)."""
    x = _as_diff(diff)
    sums, counts = _cluster_sums(x, clusters)
    g = sums.size
    if g < 2:
        raise ValueError(f"bootstrap needs at least 2 clusters, got {g}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    out = np.empty(n_boot)
    start = 0
    for idx in _cluster_draws(g, n_boot, seed):
        out[start : start + idx.shape[0]] = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
        start += idx.shape[0]
    return out


def _cluster_draws(g: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap's cluster draws: index chunks ``[rows, g]`` (rows summing to n_boot), one seeded stream."""
    rng = np.random.default_rng(seed)
    step = max(1, 2_000_000 // g)  # bound memory of the (rows, g) index matrix
    for start in range(0, n_boot, step):
        yield rng.integers(0, g, size=(min(step, n_boot - start), g))


def bootstrap_weights(clusters: Any, *, n_boot: int, seed: int = 0) -> np.ndarray:
    """``[n_boot, n]``: how often each example enters each cluster-bootstrap resample (the draws of
    ``bootstrap_means``), for statistics other than a mean (e.g. which heads make a resample's top-k)."""
    codes, g = _cluster_index(len(clusters), clusters)
    if g < 2:
        raise ValueError(f"bootstrap needs at least 2 clusters, got {g}")
    counts = np.concatenate([np.apply_along_axis(np.bincount, 1, idx, minlength=g)
                             for idx in _cluster_draws(g, n_boot, seed)])  # [n_boot, g]
    return counts[:, codes].astype(float)


def bootstrap_ci(
    diff: Any,
    *,
    clusters: Any | None = None,
    n_boot: int = 10000,
    seed: int = 0,
    level: float = 0.95,
    expanded: bool = True,
) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(diff); resamples whole clusters (users) when given.

    The plain percentile interval is too narrow with few clusters G (it rejected ~8% at nominal 5% with
    G = 20 users in our calibration test), so by default the tail quantile is the expanded one of
    Hesterberg (2015, "What teachers should know about the bootstrap", sec. 6.2):
    alpha' = Phi(-sqrt(G / (G - 1)) * t_{G-1, 1-alpha}), which tends to the plain percentile as G grows.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    means = bootstrap_means(diff, clusters=clusters, n_boot=n_boot, seed=seed)
    alpha = (1 - level) / 2
    if expanded:
        g = _cluster_index(np.asarray(diff).size, clusters)[1]
        alpha = float(stats.norm.cdf(-math.sqrt(g / (g - 1)) * stats.t.ppf(1 - alpha, g - 1)))
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_ratio_ci(num: Any, den: Any, *, clusters: Any | None = None, n_boot: int = 10000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of mean(num) / mean(den) (e.g. the share of a gain a head set removes), resampling whole clusters
    (users) with the same draws as ``bootstrap_ci`` and the same expanded tail for few clusters; a resample whose
    mean(den) is not above 0 has no share and counts as NaN (the interval is then NaN where over half of it does)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x, y = _as_diff(num, "num"), _as_diff(den, "den")
    if x.size != y.size:
        raise ValueError(f"num has {x.size} values but den has {y.size}")
    sx, counts = _cluster_sums(x, clusters)
    sy, _ = _cluster_sums(y, clusters)
    g = sx.size
    if g < 2:
        raise ValueError(f"bootstrap needs at least 2 clusters, got {g}")
    ratios = np.concatenate([np.where((d := sy[idx].sum(axis=1)) > 0, sx[idx].sum(axis=1) / np.where(d > 0, d, 1),
                                      np.nan) for idx in _cluster_draws(g, n_boot, seed)])
    if np.isnan(ratios).mean() > 0.5:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    alpha = float(stats.norm.cdf(-math.sqrt(g / (g - 1)) * stats.t.ppf(1 - alpha, g - 1)))
    lo, hi = np.nanquantile(ratios, [alpha, 1 - alpha])
    return float(lo), float(hi)


def cohens_dz(diff: Any) -> float:
    """Paired effect size mean(diff) / sd(diff, ddof=1); sd 0 gives nan (mean 0) or +-inf (mean != 0)."""
    x = _as_diff(diff)
    if x.size < 2:
        raise ValueError(f"cohens_dz needs at least 2 values, got {x.size}")
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    if sd == 0:
        return math.nan if mean == 0 else math.copysign(math.inf, mean)
    return mean / sd


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm step-down adjusted p-values (statsmodels); nan entries stay nan and do not count as tests."""
    p = np.asarray(pvalues, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p[ok][(p[ok] < 0) | (p[ok] > 1)][0]}")
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def null_position(
    value: float, null_values: Any, *, alternative: str = "greater"
) -> tuple[float, float]:
    """Percentile (mid-rank for ties, 0-100) of value in the random-head null and its empirical p-value.

    p = (1 + #{null >= value}) / (1 + N) for "greater", with <= for "less"; "two-sided" doubles the smaller.
    """
    null = _as_diff(null_values, "null_values")
    if not math.isfinite(value):
        raise ValueError(f"value must be finite, got {value}")
    below, ties = np.sum(null < value), np.sum(null == value)
    percentile = 100.0 * (below + 0.5 * ties) / null.size
    p_greater = (1 + np.sum(null >= value)) / (1 + null.size)
    p_less = (1 + np.sum(null <= value)) / (1 + null.size)
    if alternative == "greater":
        p = p_greater
    elif alternative == "less":
        p = p_less
    elif alternative == "two-sided":
        p = min(1.0, 2 * min(p_greater, p_less))
    else:
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")
    return float(percentile), float(p)


def binomial_ci(k: int, n: int, level: float = 0.95, method: str = "wilson") -> tuple[float, float]:
    """CI of a win rate k/n (scipy binomtest: 'wilson' or 'exact' = Clopper-Pearson)."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"binomial_ci needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method=method)
    return float(ci.low), float(ci.high)


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided sign test of wins vs losses (ties dropped beforehand); no decided pairs gives 1.0."""
    if wins < 0 or losses < 0:
        raise ValueError(f"wins and losses must be >= 0, got wins={wins}, losses={losses}")
    if wins + losses == 0:
        return 1.0
    return float(stats.binomtest(int(wins), int(wins + losses), 0.5).pvalue)


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of head set `name` against `baseline` on one outcome (diff = name - baseline)."""

    name: str
    baseline: str
    outcome: str
    n: int
    n_users: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float
    ci_high: float
    d_z: float
    p_wilcoxon: float
    p_permutation: float
    p_holm: float = math.nan
    null_percentile: float = math.nan
    p_null: float = math.nan
    seeds: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (one table row), seeds copied."""
        return dataclasses.asdict(self)


def compare_paired(
    a: Any,
    b: Any,
    *,
    name: str,
    baseline: str,
    outcome: str,
    users: Any | None = None,
    n_boot: int = 10000,
    n_perm: int = 10000,
    seed: int = 0,
    null: Any | None = None,
    null_alternative: str = "greater",
) -> Comparison:
    """Compare per-example values a (head set) and b (baseline) aligned by example; user-level when users repeat.

    `null`: means of a over the random head sets; fills null_percentile and p_null for mean(a).
    """
    where = f"compare_paired(name={name!r}, baseline={baseline!r}, outcome={outcome!r})"
    try:
        xa, xb = _as_diff(a, "a"), _as_diff(b, "b")
        if xa.size != xb.size:
            raise ValueError(f"a has {xa.size} values but b has {xb.size}")
        diff = xa - xb
        codes, n_users = _cluster_index(diff.size, users)
        if users is None:
            codes = None
        ci_low, ci_high = bootstrap_ci(diff, clusters=codes, n_boot=n_boot, seed=seed)
        p_wil = wilcoxon_p(diff, clusters=codes)
        p_perm = paired_permutation_p(diff, clusters=codes, n_resamples=n_perm, seed=seed)
        null_pct, p_null = (
            null_position(float(xa.mean()), null, alternative=null_alternative) if null is not None
            else (math.nan, math.nan)
        )
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return Comparison(
        name=name, baseline=baseline, outcome=outcome, n=int(diff.size), n_users=n_users,
        mean_a=float(xa.mean()), mean_b=float(xb.mean()), mean_diff=float(diff.mean()),
        ci_low=ci_low, ci_high=ci_high, d_z=cohens_dz(diff),
        p_wilcoxon=p_wil, p_permutation=p_perm, null_percentile=null_pct, p_null=p_null,
        seeds={"seed": seed, "n_boot": n_boot, "n_perm": n_perm},
    )


def with_holm(comparisons: Sequence[Comparison], *, p_field: str = "p_wilcoxon") -> list[Comparison]:
    """Copies of one table's comparisons with p_holm = Holm-adjusted p_field across all of them."""
    if comparisons and p_field not in {f.name for f in dataclasses.fields(Comparison)}:
        raise ValueError(f"with_holm: Comparison has no field {p_field!r}")
    adjusted = holm([getattr(c, p_field) for c in comparisons])
    return [dataclasses.replace(c, p_holm=float(p)) for c, p in zip(comparisons, adjusted)]


def mde(sd_user: float, n_users: int, *, alpha: float = 0.05, power: float = 0.8, n_tests: int = 1) -> float:
    """Minimal detectable mean effect of a two-sided paired test on ``n_users`` user means with SD ``sd_user``, at
    ``power`` and level ``alpha`` after Holm over ``n_tests`` comparisons (its strictest step, alpha / n_tests), by the
    noncentral-t power of a one-sample t test."""
    from scipy import optimize
    from scipy.stats import nct, t

    if n_users < 2 or not np.isfinite(sd_user):
        return float("nan")
    df, a = n_users - 1, alpha / n_tests
    crit = t.ppf(1 - a / 2, df)

    def shortfall(d: float) -> float:
        nc = d * np.sqrt(n_users)
        reach = nct.sf(crit, df, nc) + nct.cdf(-crit, df, nc)
        return (1.0 if not np.isfinite(reach) else min(1.0, reach)) - power
    hi = 1.0
    while shortfall(hi) < 0 and hi < 1e6:  # the smallest standardized effect with enough power lies below hi
        hi *= 2
    return float(optimize.brentq(shortfall, 1e-9, hi) * sd_user)


def mde_of_pairs(diff: Any, users: Any, *, n_tests: int = 1, alpha: float = 0.05, power: float = 0.8) -> float:
    """``mde`` for paired differences clustered by user: the SD of the per-user mean differences, at their count."""
    x = _as_diff(diff)
    sums, counts = _cluster_sums(x, users)
    means = sums / counts
    return mde(float(np.std(means, ddof=1)) if means.size > 1 else float("nan"), means.size, alpha=alpha,
               power=power, n_tests=n_tests)


@dataclass(frozen=True)
class Equivalence:
    """Whether a paired difference is shown, shown to lie within ±margin (TOST), or neither, on per-user means."""

    n_users: int
    mean_diff: float  # mean of the per-user mean differences
    margin: float  # NaN: no margin declared for this outcome, so no equivalence can be shown
    p_difference: float  # two-sided, of mean = 0 (or the table's own, e.g. Holm-adjusted, p where given)
    p_tost: float  # max of the two one-sided p of mean <= -margin and mean >= margin
    mde: float  # the smallest difference the difference test detects with 80% power
    alpha: float
    verdict: str  # "difference" (", within ±margin" when small), "equivalent within ±margin", "not resolved (MDE x)"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def tost(diff: Any, *, users: Any | None = None, margin: float, alpha: float = 0.05, n_tests: int = 1,
         p_difference: float | None = None) -> Equivalence:
    """Two one-sided t tests (TOST) of the per-user mean differences against ±``margin``, beside the difference test
    and its MDE (Holm over ``n_tests``): "as much as" or "not told apart" is stated only where the TOST rejects;
    where neither test does, the verdict is "not resolved (MDE x)", an absence of evidence rather than an equivalence.
    ``p_difference`` replaces the t test's two-sided p (e.g. the table's Holm-adjusted Wilcoxon p)."""
    x = _as_diff(diff)
    sums, counts = _cluster_sums(x, users)
    means = sums / counts
    g = means.size
    if g < 2:
        raise ValueError(f"tost needs at least 2 users, got {g}")
    m, se, df = float(means.mean()), float(means.std(ddof=1) / math.sqrt(g)), g - 1
    if se == 0:
        p_diff = 1.0 if m == 0 else 0.0
        p_tost = 0.0 if abs(m) < margin else 1.0
    else:
        p_diff = float(2 * stats.t.sf(abs(m) / se, df))
        p_tost = float(max(stats.t.sf((m + margin) / se, df), stats.t.cdf((m - margin) / se, df)))
    if not math.isfinite(margin):  # no declared margin: equivalence cannot be shown
        p_tost = math.nan
    p_diff = p_diff if p_difference is None else float(p_difference)
    detectable = mde(float(means.std(ddof=1)), g, alpha=alpha, n_tests=n_tests)
    within = f"within ±{margin:.3g}"
    verdict = (("difference, " + within if p_tost <= alpha else "difference") if p_diff <= alpha else
               "equivalent " + within if p_tost <= alpha else f"not resolved (MDE {detectable:.3g})")
    return Equivalence(n_users=g, mean_diff=m, margin=float(margin), p_difference=p_diff, p_tost=p_tost,
                       mde=detectable, alpha=alpha, verdict=verdict)
