"""The committed v1 tables come out of the raw v1 outputs through today's library (outcomes, pivots, comparisons).

The v1 run folders (results/smollm2-135m/*/) keep their raw checkpoints: ablation losses per example and set name
(``losses.jsonl`` + ``head_sets.json``), per-example DPS scores, per-example PCS effects. Reading them into the
library's tidy frame and rendering again must give the committed numbers. When results v2 replaces these folders,
this test goes with them.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import outcomes
from harness.stats import CI_LABEL, MIN_USERS_FOR_CI, bootstrap_ci

V1 = Path(__file__).resolve().parents[1] / "results" / "smollm2-135m"
FOLDERS = sorted(p for p in V1.glob("*") if (p / "ablation_comparison" / "losses.jsonl").exists())
FAMILIES = ["pcs", "contrast_pcs", "retrieval", "induction"]


def v1_frame(folder: Path) -> pd.DataFrame:
    """The v1 losses checkpoint as the library's tidy frame (with/without profile = own/none conditions)."""
    sets = {s["name"]: s for s in json.loads((folder / "head_sets.json").read_text())}
    rows = []
    for line in (folder / "losses.jsonl").read_text().splitlines():
        r = json.loads(line)
        for name, lw, lwo in zip(r["names"], r["with"], r["without"]):
            s = sets[name]
            rows.append({"example_id": r["key"], "user_id": r["user_id"], "set": name, "family": s["family"],
                         "k": s["k"], "matched_to": "pcs" if s["family"] == "random_matched" else "",
                         "loss_own": lw, "loss_none": lwo, "clean_own": r["clean_with"],
                         "clean_none": r["clean_without"]})
    return outcomes.add_outcomes(pd.DataFrame(rows), ["own", "none"])


def ci(text: str) -> list[float]:
    return json.loads(text)


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_ablation_tables_regenerate_from_the_raw_losses(folder):
    abl = folder / "ablation_comparison"
    config = json.loads((abl / "config.json").read_text())
    frame, kmax = v1_frame(abl), max(config["ks"])
    for outcome in ["nll_increase", "gain_lost", "generic_damage"]:
        committed = pd.read_csv(abl / f"comparison_{outcome}.csv")
        comps = outcomes.compare_sets(frame, outcome, kmax, "pcs", FAMILIES[1:], null_of="pcs", n_boot=5000,
                                      n_perm=5000, seed=0)
        assert [c.baseline for c in comps] == committed.baseline.tolist()
        for c, (_, r) in zip(comps, committed.iterrows()):
            assert [c.mean_a, c.mean_b, c.mean_diff, c.d_z, c.p_wilcoxon, c.p_permutation, c.p_holm,
                    c.null_percentile] == pytest.approx([r.mean_a, r.mean_b, r.mean_diff, r.d_z, r.p_wilcoxon,
                                                         r.p_permutation, r.p_holm, r.null_percentile], rel=1e-9)
            if c.n_users >= MIN_USERS_FOR_CI:  # v1 printed a bootstrap "CI" over 2 users; now it is their range
                assert [c.ci_low, c.ci_high] == pytest.approx(ci(r.ci), rel=1e-9)
    summary = pd.read_csv(abl / "sweep.csv")
    for outcome in ["nll_increase", "gain_lost", "generic_damage"]:
        for k in config["ks"]:
            for r in outcomes.set_summary(frame, outcome, k, FAMILIES, null_of="pcs", n_boot=5000, seed=0):
                old = summary[(summary["set"] == r["set"]) & (summary.k == k) & (summary.outcome == outcome)].iloc[0]
                assert [r["mean"], r["d_z"], r["p_wilcoxon"], r["null_percentile"], r["p_null"]] == \
                    pytest.approx([old["mean"], old.d_z, old.p_wilcoxon, old.null_percentile, old.p_null], rel=1e-9,
                                  nan_ok=True)
                if r["interval"] == CI_LABEL:
                    assert list(r["ci"]) == pytest.approx([old.ci_low, old.ci_high], rel=1e-9)


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_dps_tables_regenerate_from_the_per_example_scores(folder):
    dps = folder / "dps_decoding"
    per = pd.read_csv(dps / "per_example.csv").rename(columns={"method": "generation"})
    committed = pd.read_csv(dps / "methods.csv")
    metrics = ["rouge1", "rougeL", "meteor", "style_similarity"]
    rows = outcomes.clustered_means(per, "generation", metrics, n_boot=5000, seed=0, order=committed.method.tolist())
    for r, (_, old) in zip(rows, committed.iterrows()):
        for m in metrics:
            assert r[m] == pytest.approx(old[m], rel=1e-9)
            if r["interval"] == CI_LABEL:
                assert list(r[f"{m}_ci"]) == pytest.approx(ci(old[f"{m}_ci"]), rel=1e-9)
    best = json.loads((dps / "manifest.json").read_text())["best_baseline"]
    old = pd.read_csv(dps / "dps_vs_best_baseline.csv")
    comps = outcomes.compare_to_one(per, "generation", list(dict.fromkeys(old.name)), best,
                                    ["rougeL", "meteor", "style_similarity"], n_boot=5000, n_perm=5000, seed=0)
    assert [(c.name, c.outcome) for c in comps] == list(zip(old.name, old.outcome))
    assert [c.p_holm for c in comps] == pytest.approx(old.p_holm.tolist(), rel=1e-9)
    if comps[0].n_users >= MIN_USERS_FOR_CI:
        assert [c.ci_low for c in comps] == pytest.approx([ci(x)[0] for x in old.ci], rel=1e-9)


@pytest.mark.parametrize("folder", FOLDERS, ids=[p.name for p in FOLDERS])
def test_head_score_cis_regenerate_from_the_raw_effects(folder):
    pcs = folder / "pcs_ranking"
    recs = [json.loads(line) for line in (pcs / "effects.jsonl").read_text().splitlines()]
    users = [r["user_id"] for r in recs]
    effects = np.array([r["with"] for r in recs])  # [n, L, H]
    table = pd.read_csv(pcs / "head_scores.csv")
    for _, row in table.sample(8, random_state=0).iterrows():
        values = effects[:, int(row.layer), int(row["head"])]
        assert values.mean() == pytest.approx(row.pcs, rel=1e-6)
        assert bootstrap_ci(values, clusters=users, n_boot=1000, seed=0) == pytest.approx(
            (row.pcs_ci_low, row.pcs_ci_high), rel=1e-6)


def test_the_v1_folders_exist():
    assert [p.name for p in FOLDERS] == ["conventions2012", "debates2016"]


def test_topk_stability_regenerates_where_users_appear_in_sorted_order():
    """v1 drew bootstrap users with ``rng.choice(sorted users)``; the library draws clusters in first-appearance
    order, as every other bootstrap does. On conventions2012 (examples in speaker order) both are the same draw."""
    import torch

    from harness.ranking import topk_stability

    pcs = V1 / "conventions2012" / "pcs_ranking"
    recs = [json.loads(line) for line in (pcs / "effects.jsonl").read_text().splitlines()]
    users = [r["user_id"] for r in recs]
    assert users == sorted(users)
    per = {"pcs": torch.tensor([r["with"] for r in recs])}
    per["contrast_pcs"] = per["pcs"] - torch.tensor([r["without"] for r in recs])
    for _, row in pd.read_csv(pcs / "stability.csv").iterrows():
        mean_j, _ = topk_stability(per[row["set"]], int(row.k), users, n_boot=200, seed=0)
        assert mean_j == pytest.approx(row.bootstrap_mean_jaccard, rel=1e-12)
