"""Outcomes, pivots, comparisons and top-k stability on hand-built loss tables."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from harness.analysis import declared as analysis
from harness.analysis import outcomes
from harness.analysis import stats
from harness.analysis import tables
from harness.intervene.heads import HeadSet
from harness.scorers.ranking import (Ranking, chance_overlap, estimator_agreement, jaccard, overlaps, topk_overlap,
                                     topk_stability)


def row(example, user, name, family, k, *, own, none, clean_own=2.0, clean_none=2.5, other=None, clean_other=None,
        matched_to=""):
    r = {"example_id": example, "user_id": user, "set": name, "family": family, "k": k, "matched_to": matched_to,
         "loss_own": own, "clean_own": clean_own, "loss_none": none, "clean_none": clean_none}
    if other is not None:
        r.update(loss_other=other, clean_other=clean_other)
    return r


def test_each_outcome_by_hand_and_positive_when_the_ablation_hurts():
    # clean: own 2.0, other 2.3, none 2.5 -> gain 0.5, specific gain 0.3
    d = pd.DataFrame([row("e", "u", "s", "pcs", 1, own=2.4, none=2.6, other=2.5, clean_other=2.3)])
    out = outcomes.add_outcomes(d, ["own", "other", "none"]).iloc[0]
    assert out.nll_increase == pytest.approx(0.4)  # 2.4 - 2.0
    assert out.generic_damage == pytest.approx(0.1)  # 2.6 - 2.5
    assert out.gain_lost == pytest.approx(0.5 - 0.2)  # clean gain 0.5, ablated gain 2.6 - 2.4
    assert out.specific_gain_lost == pytest.approx(0.4 - 0.2)  # (2.4 - 2.0) - (2.5 - 2.3)
    # an ablation that removes the whole profile gain and nothing else: gain_lost equals the clean gain
    whole = outcomes.add_outcomes(pd.DataFrame([row("e", "u", "s", "pcs", 1, own=2.5, none=2.5)]), ["own", "none"])
    assert whole.gain_lost.iloc[0] == pytest.approx(0.5) and whole.generic_damage.iloc[0] == 0


def test_only_outcomes_whose_conditions_were_measured_are_added():
    d = outcomes.add_outcomes(pd.DataFrame([row("e", "u", "s", "pcs", 1, own=2.4, none=2.6)]), ["own", "none"])
    assert {"nll_increase", "gain_lost", "generic_damage"} <= set(d.columns) and "specific_gain_lost" not in d
    assert outcomes.measurable(["own"]) == ["nll_increase"]


def test_pivot_pairs_rows_by_example_id_whatever_their_order():
    d = pd.DataFrame([row("b", "u2", "x", "pcs", 1, own=3, none=3), row("a", "u1", "y", "pcs", 1, own=5, none=5),
                      row("a", "u1", "x", "pcs", 1, own=1, none=1), row("b", "u2", "y", "pcs", 1, own=7, none=7)])
    wide = outcomes.pivot(d, "loss_own", ["x", "y"])
    assert wide.loc["a"].tolist() == ["u1", 1, 5] and wide.loc["b"].tolist() == ["u2", 3, 7]


def test_pivot_refuses_unpaired_or_duplicated_rows():
    d = pd.DataFrame([row("a", "u", "x", "pcs", 1, own=1, none=1), row("b", "u", "x", "pcs", 1, own=1, none=1),
                      row("a", "u", "y", "pcs", 1, own=1, none=1)])
    with pytest.raises(ValueError, match="'y' has no loss_own for example 'b'"):
        outcomes.pivot(d, "loss_own", ["x", "y"])
    with pytest.raises(ValueError, match="two rows for example 'a'"):
        outcomes.pivot(pd.concat([d, d.iloc[:1]]), "loss_own", ["x"])
    with pytest.raises(ValueError, match="no rows for head sets"):
        outcomes.pivot(d, "loss_own", ["z"])


def _table(seed=0):
    """4 users x 2 examples; pcs raises loss by 1, retrieval by 0.25, three matched random sets by 0.1/0.2/0.3."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(4):
        for j in range(2):
            ex, noise = f"e{u}{j}", rng.normal(0, 0.01)
            rows.append(row(ex, f"u{u}", "pcs@2", "pcs", 2, own=3.0 + noise, none=2.5))
            rows.append(row(ex, f"u{u}", "retrieval@2", "retrieval", 2, own=2.25 + noise, none=2.5))
            for i, bump in enumerate([0.1, 0.2, 0.3]):
                rows.append(row(ex, f"u{u}", f"random_matched#{i}@2", "random_matched", 2, own=2.0 + bump,
                                none=2.5, matched_to="pcs"))
    return outcomes.add_outcomes(pd.DataFrame(rows), ["own", "none"])


def test_null_means_are_the_matched_random_sets_means():
    assert outcomes.null_means(_table(), "nll_increase", 2, "pcs") == pytest.approx([0.1, 0.2, 0.3])
    assert outcomes.null_means(_table(), "nll_increase", 2, "retrieval").size == 0


def test_compare_sets_pairs_primary_with_each_baseline_and_the_random_mean():
    frame = _table()
    comps = outcomes.compare_sets(frame, "nll_increase", 2, "pcs", ["retrieval"], null_of="pcs", n_boot=500,
                                  n_perm=500, seed=0)
    assert [c.baseline for c in comps] == ["retrieval@2", "random_matched_mean@2"]
    wide = outcomes.pivot(frame, "nll_increase", ["pcs@2", "retrieval@2"])
    ref = stats.compare_paired(wide["pcs@2"], wide["retrieval@2"], name="pcs@2", baseline="retrieval@2",
                               outcome="nll_increase", users=wide.user_id, n_boot=500, n_perm=500, seed=0)
    assert comps[0].mean_diff == pytest.approx(0.75, abs=1e-9) and comps[0].ci_low == ref.ci_low
    assert comps[1].mean_diff == pytest.approx(1.0 - 0.2, abs=0.03)
    assert comps[0].null_percentile == 100.0 and comps[0].n_users == 4
    assert comps[0].p_null == pytest.approx(1 / 4)  # (1 + none of 3 random sets >= it) / (1 + 3)
    assert "p (null)" in tables.render(outcomes.comparison_records(comps), outcomes.COMPARISON_COLUMNS, "md")
    assert [c.p_holm for c in comps] == pytest.approx(list(stats.holm([c.p_wilcoxon for c in comps])))


def test_set_summary_places_each_family_in_the_null_it_names():
    rows = outcomes.set_summary(_table(), "nll_increase", 2, ["pcs", "retrieval"], null_of="pcs", n_boot=500, seed=0)
    pcs, retrieval = rows
    assert pcs["mean"] == pytest.approx(1.0, abs=0.02) and pcs["null_percentile"] == 100.0
    assert retrieval["null_percentile"] == pytest.approx(200 / 3) and retrieval["null_matched_to"] == "pcs@2"
    assert retrieval["p_null"] == pytest.approx((1 + 1) / (1 + 3))  # 0.25 is above two sets (0.1, 0.2), below one
    assert pcs["p_null"] == pytest.approx(1 / 4)
    assert pcs["ci"][0] < 1.0 < pcs["ci"][1]


def test_clustered_means_and_compare_to_one():
    df = pd.DataFrame({"generation": ["a"] * 4 + ["b"] * 4, "example_id": list("wxyz") * 2,
                       "user_id": ["u1", "u1", "u2", "u3"] * 2, "score": [1, 2, 3, 4, 0, 1, 2, 3.5]})
    means = outcomes.clustered_means(df, "generation", ["score"], n_boot=200, seed=0, order=["b", "a"])
    assert [m["generation"] for m in means] == ["b", "a"] and means[1]["score"] == 2.5
    comp = outcomes.compare_to_one(df, "generation", ["a"], "b", ["score"], n_boot=200, n_perm=200, seed=0)[0]
    assert comp.mean_diff == pytest.approx(np.mean([1, 1, 1, 0.5])) and comp.n_users == 3


def test_undefined_outcomes_drop_only_their_pairs_and_several_baselines_share_one_holm():
    nan = float("nan")  # e.g. a marker rate where the text gave the rule no opportunity
    df = pd.DataFrame({"generation": ["a"] * 4 + ["b"] * 4 + ["c"] * 4, "example_id": list("wxyz") * 3,
                       "user_id": ["u1", "u2", "u3", "u4"] * 3,
                       "rate": [1, 1, 0.5, nan, 0, nan, 0, 0, 0.5, 0.5, 0.5, 0.5]})
    with pytest.raises(ValueError, match="has no rate for example"):
        outcomes.pivot(df, "rate", ["a", "b"], by="generation")
    assert list(outcomes.pivot(df, "rate", ["a", "b"], by="generation", missing="drop").index) == ["w", "y"]
    comps = outcomes.compare_to_one(df, "generation", ["a"], ["b", "c"], ["rate"], n_boot=100, n_perm=100, seed=0,
                                    missing="drop")
    by = {c.baseline: c for c in comps}
    assert by["b"].n == 2 and by["b"].mean_diff == pytest.approx(0.75)  # pairs w (1-0) and y (0.5-0)
    assert by["c"].n == 3 and by["c"].mean_diff == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert [c.p_holm for c in comps] == pytest.approx(stats.holm([c.p_wilcoxon for c in comps]))


def test_topk_stability_is_one_when_every_example_agrees_and_frequency_counts_selection():
    per = torch.zeros(6, 2, 3)
    per[:, 1, 2] = 5.0
    per[:, 0, 0] = 3.0
    mean_j, freq = topk_stability(per, 2, ["a", "a", "b", "c", "d", "d"], n_boot=50, seed=0)
    assert mean_j == 1.0 and freq[1, 2] == 1.0 and freq[0, 0] == 1.0 and freq.sum() == 2.0


def test_topk_stability_drops_when_users_disagree():
    per = torch.zeros(4, 1, 4)
    for i in range(4):
        per[i, 0, i] = 1.0  # each user's own head
    mean_j, freq = topk_stability(per, 1, ["a", "b", "c", "d"], n_boot=200, seed=0)
    assert mean_j < 0.6 and freq.sum() == pytest.approx(1.0)


def test_bootstrap_weights_are_the_bootstrap_means_draws():
    x = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    users = ["a", "a", "b", "c", "c"]
    w = stats.bootstrap_weights(users, n_boot=300, seed=3)
    assert np.allclose(w @ x / w.sum(1), stats.bootstrap_means(x, clusters=users, n_boot=300, seed=3))


def test_jaccard_overlaps_and_estimator_agreement():
    assert jaccard(HeadSet.parse("L0H0,L0H1"), HeadSet.parse("L0H1,L1H0")) == pytest.approx(1 / 3)
    maps = {"a": torch.tensor([[3.0, 2.0], [1.0, 0.0]]), "b": torch.tensor([[0.0, 2.0], [3.0, 1.0]])}
    rows = overlaps(Ranking.from_maps(maps, [1, 2], ["e"], {}))
    assert rows == [{"k": 1, "set_a": "a", "set_b": "b", "jaccard": 0.0, "shared": 0},
                    {"k": 2, "set_a": "a", "set_b": "b", "jaccard": pytest.approx(1 / 3), "shared": 1}]
    same = torch.arange(24.0).reshape(2, 3, 4)
    agree = estimator_agreement(same, same * 2)
    assert agree["spearman_mean_scores"] == pytest.approx(1.0) and agree["top10_overlap"] == 10


def test_topk_overlap_is_one_row_of_jaccard_shared_heads_and_the_chance_scale():
    a, b = HeadSet.parse("L0H0,L0H1,L1H0"), HeadSet.parse("L1H0,L0H1,L1H1")
    assert topk_overlap(a, b) == {"jaccard": pytest.approx(2 / 4), "n_shared": 2, "shared": "L0H1,L1H0"}
    # 16 heads, two random 3-sets: 9/16 shared on average; P(>= 2 shared) = (C(3,2)C(13,1) + C(3,3)) / C(16,3)
    row = topk_overlap(a, b, n_heads=16)
    assert row["chance_shared"] == pytest.approx(9 / 16) and row["p_chance"] == pytest.approx(40 / 560)
    none = topk_overlap(a, HeadSet.parse("L2H0,L2H1,L3H0"), n_heads=16)
    assert (none["jaccard"], none["n_shared"], none["shared"], none["p_chance"]) == (0.0, 0, "none", 1.0)
    assert chance_overlap(1, 3, 16) == (pytest.approx(9 / 16), pytest.approx(1 - 286 / 560))


def test_damage_matched_residual_and_percentile_among_sets_of_similar_damage():
    rows = []
    for i, damage in enumerate(np.linspace(0.1, 2.0, 20)):  # random sets: specific gain lost = 0.1 * damage
        for ex in ("e1", "e2"):
            rows.append({"example_id": ex, "user_id": ex, "set": f"random_damage#{i}", "family": "random_damage",
                         "k": 1, "generic_damage": damage, "specific_gain_lost": 0.1 * damage})
    for ex in ("e1", "e2"):  # a named set that removes 0.3 more than its damage (1.0) predicts
        rows.append({"example_id": ex, "user_id": ex, "set": "pcs@3", "family": "pcs", "k": 3,
                     "generic_damage": 1.0, "specific_gain_lost": 0.4})
    out, cloud = outcomes.damage_matched(pd.DataFrame(rows), ["pcs"], 3, min_near=5)
    r = out[0]
    assert r["slope"] == pytest.approx(0.1) and r["predicted"] == pytest.approx(0.1) and r["residual"] == \
        pytest.approx(0.3)
    assert r["percentile_near_damage"] == 100.0 and r["n_near_damage"] == 5  # damages within 0.75..1.25
    assert r["p_near_damage"] == pytest.approx(1 / 6) and r["near_damage"] == "placed"
    assert len(cloud) == 20


def test_a_residual_with_fewer_than_twenty_near_sets_is_not_placed_and_its_count_is_printed():
    rows = [{"example_id": "e", "user_id": "e", "set": f"random_damage#{i}", "family": "random_damage", "k": 1,
             "generic_damage": d, "specific_gain_lost": 0.1 * d} for i, d in enumerate(np.linspace(0.1, 2.0, 40))]
    rows.append({"example_id": "e", "user_id": "e", "set": "pcs@3", "family": "pcs", "k": 3, "generic_damage": 1.0,
                 "specific_gain_lost": 0.4})
    (r,), _ = outcomes.damage_matched(pd.DataFrame(rows), ["pcs"], 3)  # 10 of the 40 sets lie within ±25%
    assert r["n_near_damage"] == 10 and np.isnan(r["percentile_near_damage"]) and np.isnan(r["p_near_damage"])
    assert r["near_damage"] == "not placed (10 < 20 sets of similar damage)"
    (wide,), _ = outcomes.damage_matched(pd.DataFrame(rows), ["pcs"], 3, window=0.5)  # 20 sets: placed
    assert wide["n_near_damage"] == 20 and wide["percentile_near_damage"] == 100.0 and wide["near_damage"] == "placed"
    md = tables.render([r], outcomes.DAMAGE_COLUMNS, "md")
    assert "| 10 | — | — | not placed (10 < 20 sets of similar damage) |" in md
    assert outcomes.MIN_NEAR_SETS == analysis.load().min_near_sets


def test_matched_null_summary_is_the_random_sets_own_effect_per_family_that_has_one():
    rows = outcomes.matched_null_summary(_table(), "nll_increase", 2, ["pcs", "retrieval"], n_boot=500, seed=0)
    assert [r["set"] for r in rows] == ["random:pcs"]  # retrieval drew no matched null in this table
    (r,) = rows
    assert r["mean"] == pytest.approx(0.2) and r["n_random_sets"] == 3 and r["null_matched_to"] == "pcs@2"
    assert r["interval"] == stats.RANGE_LABEL and r["ci"] == pytest.approx((0.2, 0.2))  # 4 users: the range


def _specific_table():
    """12 users x 2 examples; clean specific gain 0.4 (other 2.4 vs own 2.0); pcs removes half of it (0.2), retrieval
    a noisy 0.08 - 0.16, and two matched random sets none."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(12):
        for j in range(2):
            ex = f"e{u:02d}{j}"
            for name, fam, lost in (("pcs@2", "pcs", 0.2), ("retrieval@2", "retrieval", rng.uniform(0.08, 0.16)),
                                    ("random_matched#0@2", "random_matched", 0.0),
                                    ("random_matched#1@2", "random_matched", 0.0)):
                rows.append(row(ex, f"u{u}", name, fam, 2, own=2.1 + lost, none=2.6, other=2.5, clean_other=2.4,
                                matched_to="pcs" if fam == "random_matched" else ""))
    return outcomes.add_outcomes(pd.DataFrame(rows), ["own", "other", "none"])


def test_every_head_set_row_gives_its_share_of_the_gain_with_a_user_clustered_ratio_interval():
    frame = _specific_table()
    pcs, retrieval = outcomes.set_summary(frame, "specific_gain_lost", 2, ["pcs", "retrieval"], n_boot=500, seed=0)
    assert pcs["share"] == pytest.approx(0.5) and pcs["share_ci"] == pytest.approx((0.5, 0.5))  # 0.2 of 0.4
    lo, hi = retrieval["share_ci"]
    assert lo < retrieval["share"] < hi and retrieval["share"] == pytest.approx(retrieval["mean"] / 0.4)
    (null,) = outcomes.matched_null_summary(frame, "specific_gain_lost", 2, ["pcs"], n_boot=500, seed=0)
    assert null["share"] == pytest.approx(0.0) and null["share_ci"] == pytest.approx((0.0, 0.0))
    (damage,) = outcomes.set_summary(frame, "generic_damage", 2, ["pcs"], n_boot=500, seed=0)
    assert np.isnan(damage["share"])  # generic damage is no share of a gain
    assert "share interval" in tables.render([pcs], outcomes.SUMMARY_COLUMNS, "md")


def test_comparison_tables_say_not_resolved_where_neither_difference_nor_equivalence_is_shown():
    frame = _specific_table()
    comps = outcomes.compare_sets(frame, "specific_gain_lost", 2, "pcs", ["retrieval"], null_of="pcs", n_boot=200,
                                  n_perm=200, seed=0)
    margin = outcomes.equivalence_margin(frame, 0.25)
    assert margin == pytest.approx(0.1)  # a quarter of the clean specific gain, 0.4
    eqs = outcomes.comparison_equivalence(frame, comps, margin=margin)
    # 0.2 vs ~0.12: shown apart and shown within ±0.1 (a small difference); vs 0 (the random sets): shown apart
    assert [e.verdict for e in eqs] == ["difference, within ±0.1", "difference"]
    unresolved = outcomes.comparison_equivalence(frame, [dataclasses.replace(comps[0], p_holm=0.5)],
                                                 margin=float("nan"))
    md = tables.render(outcomes.comparison_records(comps[:1], [0.05], unresolved), outcomes.COMPARISON_COLUMNS, "md")
    assert f"not resolved (MDE {unresolved[0].mde:.3g})" in md
