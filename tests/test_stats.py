"""Paired statistics: known cases (enumeration, scipy references, hand-computed) and a null calibration check."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from harness.analysis.stats import (
    Comparison,
    binomial_ci,
    bootstrap_ci,
    cohens_dz,
    compare_paired,
    holm,
    null_position,
    paired_permutation_p,
    sign_test_p,
    wilcoxon_p,
    with_holm,
)


def _enumerated_sign_flip_p(sums: np.ndarray, n: int) -> float:
    """Exact two-sided p of the mean by enumerating every sign pattern of the cluster sums."""
    obs = abs(sums.sum() / n)
    null = [abs(np.dot(s, sums) / n) for s in itertools.product([-1, 1], repeat=len(sums))]
    return float(np.mean(np.asarray(null) >= obs - 1e-12))


# --- tests -------------------------------------------------------------------------------------------------

def test_permutation_p_equals_exact_sign_flip_enumeration():
    diff = np.array([1.0, 2.0, 3.0, -0.5, 0.7])
    assert paired_permutation_p(diff) == pytest.approx(_enumerated_sign_flip_p(diff, 5))
    # by hand: |sum| >= 5.5 only for magnitudes summed as 6.5 or 5.5 (0.5 negative), and their mirror images
    assert paired_permutation_p([1.0, 2.0, 3.0, -0.5]) == pytest.approx(4 / 16)


def test_permutation_p_flips_whole_clusters():
    diff = np.array([1.0, 1.5, 2.0, -0.3, 0.4, 0.6, -1.0, 2.5])
    users = ["u1", "u1", "u2", "u2", "u2", "u3", "u4", "u4"]
    sums = np.array([2.5, 2.1, 0.6, 1.5])
    expected = _enumerated_sign_flip_p(sums, len(diff))
    assert paired_permutation_p(diff, clusters=users) == pytest.approx(expected)
    assert expected != pytest.approx(_enumerated_sign_flip_p(diff, len(diff)))  # clustering changes the answer


def test_permutation_p_is_one_for_all_zero_diff():
    assert paired_permutation_p(np.zeros(6)) == 1.0


def test_permutation_p_is_reproducible_by_seed_when_sampled():
    diff = np.random.default_rng(3).normal(0.3, 1, 40)  # 2**40 patterns: sampled, not exact
    p1 = paired_permutation_p(diff, n_resamples=999, seed=7)
    assert p1 == paired_permutation_p(diff, n_resamples=999, seed=7)
    assert 1 / 1000 <= p1 <= 1


def test_wilcoxon_matches_scipy_docs_reference_value():
    # scipy.stats.wilcoxon docs: differences in height of cross- vs self-fertilised plants (Fisher), exact p.
    d = [6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75]
    assert wilcoxon_p(d) == pytest.approx(0.04125976562, rel=1e-8)


def test_wilcoxon_equals_exact_signed_rank_enumeration():
    d = np.array([0.5, -1.2, 2.3, 3.1, 4.7, -0.2, 5.5])  # no ties, no zeros: exact distribution
    ranks = stats.rankdata(np.abs(d))
    w_plus = ranks[d > 0].sum()
    null = np.array([np.dot(s, ranks) for s in itertools.product([0, 1], repeat=len(d))])
    p_exact = min(1.0, 2 * min(np.mean(null >= w_plus), np.mean(null <= w_plus)))
    assert wilcoxon_p(d) == pytest.approx(p_exact)


def test_wilcoxon_is_one_for_all_zero_diff():
    assert wilcoxon_p(np.zeros(10)) == 1.0


def test_wilcoxon_with_clusters_tests_per_user_means():
    diff = np.array([1.0, 3.0, -2.0, 0.5, 4.0, 2.0, -1.0, 6.0, 0.2, 1.1])
    users = np.array([0, 0, 1, 1, 2, 3, 3, 4, 5, 6])
    means = [2.0, -0.75, 4.0, 0.5, 6.0, 0.2, 1.1]
    assert wilcoxon_p(diff, clusters=users) == pytest.approx(stats.wilcoxon(means).pvalue)


def test_holm_hand_example_keeps_nan():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    adj = holm([0.01, 0.04, np.nan, 0.03, 0.005])
    np.testing.assert_allclose(adj, [0.03, 0.06, np.nan, 0.06, 0.02])


def test_holm_rejects_p_outside_unit_interval():
    with pytest.raises(ValueError, match="1.5"):
        holm([0.1, 1.5])


def test_cohens_dz_by_hand():
    assert cohens_dz([1.0, 2.0, 3.0]) == pytest.approx(2.0)  # mean 2, sd 1
    assert cohens_dz([-1.0, 1.0, 3.0]) == pytest.approx(0.5)  # mean 1, sd 2
    assert math.isnan(cohens_dz([0.0, 0.0, 0.0]))
    assert cohens_dz([0.5, 0.5]) == math.inf and cohens_dz([-0.5, -0.5]) == -math.inf


def test_null_position_with_ties():
    null = [1.0, 2.0, 2.0, 2.0, 3.0]
    pct, p = null_position(2.0, null)
    assert pct == pytest.approx(100 * (1 + 0.5 * 3) / 5)  # mid-rank: 50
    assert p == pytest.approx((1 + 4) / 6)  # ties count against the named set
    assert null_position(2.0, null, alternative="less")[1] == pytest.approx((1 + 4) / 6)
    assert null_position(3.5, null) == pytest.approx((100.0, 1 / 6))  # beats every random set: floor 1/(N+1)
    assert null_position(0.0, null, alternative="two-sided")[1] == pytest.approx(2 * (1 + 0) / 6)


def test_null_position_rejects_unknown_alternative():
    with pytest.raises(ValueError, match="alternative"):
        null_position(1.0, [0.0, 1.0], alternative="bigger")


def test_bootstrap_with_singleton_clusters_equals_ordinary_bootstrap():
    diff = np.random.default_rng(0).normal(0.2, 1, 30)
    users = [f"user{i}" for i in range(30)]
    assert bootstrap_ci(diff, clusters=users, seed=4) == bootstrap_ci(diff, seed=4)


def test_plain_percentile_bootstrap_agrees_with_scipy():
    diff = np.random.default_rng(1).normal(0.5, 1, 50)
    ref = stats.bootstrap((diff,), np.mean, method="percentile", n_resamples=20000, rng=0).confidence_interval
    lo, hi = bootstrap_ci(diff, n_boot=20000, seed=1, expanded=False)
    assert lo == pytest.approx(ref.low, abs=0.03) and hi == pytest.approx(ref.high, abs=0.03)


def test_expanded_percentile_is_wider_and_converges_to_plain():
    rng = np.random.default_rng(2)
    small, large = rng.normal(0, 1, 10), rng.normal(0, 1, 2000)
    lo_e, hi_e = bootstrap_ci(small, seed=0)
    lo_p, hi_p = bootstrap_ci(small, seed=0, expanded=False)
    assert lo_e < lo_p and hi_e > hi_p and (hi_e - lo_e) / (hi_p - lo_p) > 1.1
    lo_e, hi_e = bootstrap_ci(large, n_boot=2000, seed=0)
    lo_p, hi_p = bootstrap_ci(large, n_boot=2000, seed=0, expanded=False)
    assert (hi_e - lo_e) / (hi_p - lo_p) == pytest.approx(1.0, abs=0.01)


def test_cluster_bootstrap_is_wider_when_clusters_are_correlated():
    rng = np.random.default_rng(5)
    users = np.repeat(np.arange(15), 6)
    diff = rng.normal(0, 2, 15)[users] + rng.normal(0, 0.3, users.size)  # examples of a user move together
    lo_c, hi_c = bootstrap_ci(diff, clusters=users)
    lo_o, hi_o = bootstrap_ci(diff)
    assert (hi_c - lo_c) > 1.8 * (hi_o - lo_o)


def test_bootstrap_refuses_a_single_cluster():
    with pytest.raises(ValueError, match="at least 2 clusters"):
        bootstrap_ci([0.1, 0.2, 0.3], clusters=["u", "u", "u"])


def test_binomial_ci_matches_wilson_and_clopper_pearson_formulas():
    k, n, z = 7, 10, stats.norm.ppf(0.975)
    p = k / n
    centre, half = (p + z * z / (2 * n)), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    wilson = ((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n))
    assert binomial_ci(k, n) == pytest.approx(wilson)
    cp = (stats.beta.ppf(0.025, k, n - k + 1), stats.beta.ppf(0.975, k + 1, n - k))
    assert binomial_ci(k, n, method="exact") == pytest.approx(cp)
    with pytest.raises(ValueError, match="k=11, n=10"):
        binomial_ci(11, 10)


def test_sign_test_p_by_hand():
    assert sign_test_p(8, 2) == pytest.approx(2 * (45 + 10 + 1) / 1024)
    assert sign_test_p(5, 5) == pytest.approx(1.0)
    assert sign_test_p(0, 0) == 1.0


def test_compare_paired_fills_every_field():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(10), 3)
    a, b = rng.normal(1.0, 1, 30), rng.normal(0.0, 1, 30)
    null = rng.normal(0.0, 0.2, 200)
    c = compare_paired(a, b, name="pcs_top5", baseline="retrieval_top5", outcome="gain_lost",
                       users=users, n_boot=2000, n_perm=2000, seed=3, null=null)
    assert (c.n, c.n_users) == (30, 10)
    assert c.mean_diff == pytest.approx(np.mean(a - b)) and c.mean_a == pytest.approx(a.mean())
    assert c.ci_low < c.mean_diff < c.ci_high
    assert c.d_z == pytest.approx(cohens_dz(a - b))
    assert c.p_wilcoxon == pytest.approx(wilcoxon_p(a - b, clusters=users))
    assert (c.null_percentile, c.p_null) == null_position(a.mean(), null)
    assert math.isnan(c.p_holm)
    assert c.seeds == {"seed": 3, "n_boot": 2000, "n_perm": 2000}
    d = c.to_dict()
    assert d["name"] == "pcs_top5" and d["n_users"] == 10 and set(d) == set(Comparison.__dataclass_fields__)


def test_compare_paired_errors_name_the_comparison_and_problem():
    with pytest.raises(ValueError, match=r"name='pcs'.*a has 3 values but b has 2"):
        compare_paired([1, 2, 3], [1, 2], name="pcs", baseline="rand", outcome="nll")
    with pytest.raises(ValueError, match=r"b has non-finite value nan at index 1"):
        compare_paired([1, 2, 3], [1, np.nan, 3], name="pcs", baseline="rand", outcome="nll")
    with pytest.raises(ValueError, match=r"clusters has 2 labels"):
        compare_paired([1, 2, 3], [1, 2, 2], name="pcs", baseline="rand", outcome="nll", users=["u", "v"])


def test_with_holm_adjusts_across_one_table():
    rng = np.random.default_rng(1)
    comps = [compare_paired(rng.normal(m, 1, 25), rng.normal(0, 1, 25), name=f"set{m}", baseline="rand",
                            outcome="nll", n_boot=500, n_perm=500) for m in (0.0, 0.5, 1.0)]
    adjusted = with_holm(comps)
    np.testing.assert_allclose([c.p_holm for c in adjusted], holm([c.p_wilcoxon for c in comps]))
    assert [c.name for c in adjusted] == ["set0.0", "set0.5", "set1.0"]
    assert all(math.isnan(c.p_holm) for c in comps)  # originals untouched (frozen)
    perm = with_holm(comps, p_field="p_permutation")
    np.testing.assert_allclose([c.p_holm for c in perm], holm([c.p_permutation for c in comps]))
    with pytest.raises(ValueError, match="no field 'p_x'"):
        with_holm(comps, p_field="p_x")


# --- calibration: two head-set families drawn the same way must reject at about the nominal rate -----------

N_SIM, ALPHA, N_USERS, PER_USER = 400, 0.05, 20, 3
TOL = 3 * math.sqrt(ALPHA * (1 - ALPHA) / N_SIM)  # 3 binomial standard errors: about +-0.033


def _rejection_rates(effect: float, user_sd: float, seed0: int) -> dict[str, float]:
    """Rejection rates at ALPHA over N_SIM synthetic studies: user random effects in both families' values."""
    users = np.repeat(np.arange(N_USERS), PER_USER)
    hits = {"wilcoxon": 0, "permutation": 0, "cluster_ci": 0, "ordinary_ci": 0, "example_wilcoxon": 0}
    for i in range(N_SIM):
        rng = np.random.default_rng(seed0 + i)
        shared = rng.normal(0, 1, N_USERS)[users]  # how hard a user's outputs are, for both families

        def family() -> np.ndarray:
            return shared + rng.normal(0, user_sd, N_USERS)[users] + rng.normal(0, 1, users.size)

        a, b = family() + effect, family()
        c = compare_paired(a, b, name="a", baseline="b", outcome="sim", users=users,
                           n_boot=999, n_perm=999, seed=i)
        lo, hi = bootstrap_ci(a - b, n_boot=999, seed=i)
        hits["wilcoxon"] += c.p_wilcoxon < ALPHA
        hits["permutation"] += c.p_permutation < ALPHA
        hits["cluster_ci"] += not c.ci_low <= 0 <= c.ci_high
        hits["ordinary_ci"] += not lo <= 0 <= hi
        hits["example_wilcoxon"] += wilcoxon_p(a - b) < ALPHA
    return {k: v / N_SIM for k, v in hits.items()}


@pytest.mark.slow  # N_SIM simulated studies, each with bootstraps and permutations
def test_calibration_null_rejects_at_nominal_rate():
    rates = _rejection_rates(effect=0.0, user_sd=1.0, seed0=1000)
    for key in ("wilcoxon", "permutation", "cluster_ci"):
        assert abs(rates[key] - ALPHA) <= TOL, (key, rates)


@pytest.mark.slow  # N_SIM simulated studies, each with bootstraps and permutations
def test_calibration_real_effect_rejects_often():
    rates = _rejection_rates(effect=1.5, user_sd=1.0, seed0=2000)  # user-level d_z = 1.5 / sqrt(2 + 2/3), about 0.9
    for key in ("wilcoxon", "permutation", "cluster_ci"):
        assert rates[key] >= 0.9, (key, rates)


@pytest.mark.slow  # N_SIM simulated studies, each with bootstraps and permutations
def test_ignoring_strong_user_clustering_over_rejects_while_clustered_stats_do_not():
    rates = _rejection_rates(effect=0.0, user_sd=2.0, seed0=3000)
    assert rates["ordinary_ci"] > ALPHA + 2 * TOL, rates
    assert rates["example_wilcoxon"] > ALPHA + 2 * TOL, rates
    for key in ("wilcoxon", "permutation", "cluster_ci"):
        assert abs(rates[key] - ALPHA) <= TOL, (key, rates)


def test_tost_shows_equivalence_difference_or_neither_on_hand_made_user_means():
    from harness.analysis.stats import tost

    users = np.repeat(np.arange(10), 2)  # 10 users, two examples each; per-user means below
    near_zero = np.repeat([0.01, -0.01, 0.02, -0.02, 0.0, 0.01, -0.01, 0.015, -0.015, 0.0], 2)
    eq = tost(near_zero, users=users, margin=0.05)
    m, se = 0.0, np.std(near_zero[::2], ddof=1) / np.sqrt(10)
    assert eq.mean_diff == pytest.approx(m) and eq.n_users == 10
    assert eq.p_tost == pytest.approx(stats.t.sf((m + 0.05) / se, 9))  # both one-sided tests alike at mean 0
    assert eq.verdict == "equivalent within ±0.05" and eq.p_difference == pytest.approx(1.0)
    shifted = near_zero + 0.2
    assert tost(shifted, users=users, margin=0.05).verdict == "difference"
    noisy = np.repeat([0.3, -0.25, 0.2, -0.3, 0.1, 0.05, -0.1, 0.25, -0.2, 0.12], 2)
    unresolved = tost(noisy, users=users, margin=0.05)
    assert unresolved.p_difference > 0.05 and unresolved.p_tost > 0.05
    assert unresolved.mde > abs(unresolved.mean_diff)
    assert unresolved.verdict == f"not resolved (MDE {unresolved.mde:.3g})"
    no_margin = tost(near_zero, users=users, margin=float("nan"))  # no declared margin: never "equivalent"
    assert np.isnan(no_margin.p_tost) and no_margin.verdict.startswith("not resolved")
    assert tost(near_zero, users=users, margin=0.05, p_difference=0.01).verdict == "difference, within ±0.05"


def test_ratio_ci_resamples_users_and_takes_the_ratio_of_means():
    from harness.analysis.stats import bootstrap_ratio_ci

    rng = np.random.default_rng(3)
    users = np.repeat(np.arange(25), 2)
    gain = rng.normal(0.4, 0.1, 50)
    removed = 0.5 * gain  # every user loses exactly half: the ratio is 0.5 in every resample
    assert bootstrap_ratio_ci(removed, gain, clusters=users, n_boot=500) == pytest.approx((0.5, 0.5))
    removed = 0.5 * gain + rng.normal(0, 0.05, 50)
    lo, hi = bootstrap_ratio_ci(removed, gain, clusters=users, n_boot=2000, seed=1)
    assert lo < removed.mean() / gain.mean() < hi
    # the same draws as bootstrap_means: with a constant denominator the ratio interval is the mean's, scaled
    assert bootstrap_ratio_ci(removed, np.full(50, 2.0), clusters=users, n_boot=2000, seed=1) == pytest.approx(
        tuple(np.array(bootstrap_ci(removed, clusters=users, n_boot=2000, seed=1)) / 2))
    with pytest.raises(ValueError, match="den has 3"):
        bootstrap_ratio_ci(removed, [1, 2, 3], clusters=users)
