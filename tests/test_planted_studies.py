"""A planted corpus goes through every study by ``--data`` alone, and the known-answer tables come out."""

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from harness.errors import ConfigError
from harness.study import across_planted
from studies import ablation_comparison, dps_decoding, known_answer, pcs_ranking
from studies import signal as signal_study

pytestmark = pytest.mark.slow

RANK = ["--retrieval-prompts", "1", "--induction-sequences", "2"]
ABLATE = ["--n-random", "4", "--n-random-other", "2", "--max-new-tokens", "4", "--n-damage", "8"]
DPS = ["--max-new-tokens", "6", "--gammas", "1.0", "--style-alphas", "1.0", "--style-layers", "1"]


def args(model, results, family):
    return ["--preset", "quick", "--model", str(model), "--data", f"planted:conventions2012:{family}",
            "--profile-docs", "any", "--n", "10",
            "--results", str(results), "--max-prompt-tokens", "192", "--max-target-tokens", "16", "--k-heads", "1",
            "2", "--n-boot", "200", "--n-perm", "200", "--framing", "prefill"]


@pytest.fixture(scope="module")
def planted_runs(tiny_model_dir, tmp_path_factory):
    results = tmp_path_factory.mktemp("planted")
    runs = {}
    for family in ("case", "lexicon"):
        a = args(tiny_model_dir, results, family)
        runs[family] = {"signal": signal_study.main(a), "pcs": pcs_ranking.main(a + RANK),
                        "ablation": ablation_comparison.main(a + ABLATE)}
    runs["case"]["dps"] = dps_decoding.main(args(tiny_model_dir, results, "case") + DPS)
    return results, runs


def test_planted_corpus_reaches_signal_ranking_and_dps_with_marker_tables(planted_runs):
    _, runs = planted_runs
    sig = pd.read_csv(runs["case"]["signal"].path("signal.csv"))
    assert set(sig["group"]) == {"all", "planted", "control"}
    assert {"gain_specific", "marker_gain_own", "marker_gain_specific"} <= set(sig["gain"])
    dps = runs["case"]["dps"]
    per_example = pd.read_csv(dps.path("per_example.csv"))
    assert {"group", "marker_rate"} <= set(per_example.columns)
    rates = pd.read_csv(dps.path("marker_rate_by_method.csv"))
    assert set(rates["group"]) <= {"planted", "control"} and "planted" in set(rates["group"])
    assert rates["marker_rate"].between(0, 1).all()
    versus = pd.read_csv(dps.path("dps_marker_rate.csv"))
    assert set(versus["outcome"]) == {"marker_rate", "rougeL"} and set(versus["name"]) == {"dps-specific_pcs"}
    assert set(versus["baseline"]) <= set(dps_decoding.BASELINES) and len(set(versus["baseline"])) >= 3


def test_known_answer_puts_the_families_side_by_side_and_names_missing_runs(planted_runs, tiny_model_dir, caplog):
    results, runs = planted_runs
    run = known_answer.main(["--model", str(tiny_model_dir), "--data", "conventions2012", "--profile-docs", "any",
                             "--results", str(results), "--planted", "case", "lexicon", "signoff", "--k-heads", "1", "2", "--n-boot", "200"])
    sig = pd.read_csv(run.path("signal_by_family.csv"))
    assert set(sig.family) == {"case", "lexicon"} and set(sig.group) == {"planted", "control"}
    man = json.loads(run.path("manifest.json").read_text())  # its data: the runs it read, each with its own hash
    read, ablation = man["run_data_sha256"], runs["case"]["ablation"]
    assert read[str(ablation.root)] == json.loads(ablation.path("manifest.json").read_text())["data_sha256"]
    assert man["data_sha256"] not in (hashlib.sha256(b"").hexdigest(), *read.values())
    removed = pd.read_csv(run.path("gain_removed_by_family.csv"))
    assert set(removed.family) == {"case", "lexicon"} and set(removed["set"]) >= {"specific_pcs", "retrieval"}
    assert "random:specific_pcs" in set(removed["set"])  # what the heads' layer-matched random sets remove
    # the figure: a panel per family whose planted signal (case: the profile gain) is a gain, none without one
    signal = removed[removed.outcome == removed.family.map(
        lambda f: across_planted.SIGNAL.get(f, "specific_gain_lost"))]
    assert run.path("gain_removed_by_family.png").exists() == bool((signal.planted_gain > 0).any())
    # the share is the mean gain lost over the planted users' clean specific gain, from the same run's losses
    losses = pd.read_csv(runs["case"]["ablation"].path("signal_losses.csv"))
    planted = losses[(losses.group == "planted") & (losses.split == "evaluation")]
    case = removed[(removed.family == "case") & (removed["set"] == "specific_pcs")].set_index("outcome")
    assert case.planted_gain["specific_gain_lost"] == pytest.approx((planted.loss_other - planted.loss_own).mean())
    assert case.planted_gain["gain_lost"] == pytest.approx((planted.loss_none - planted.loss_own).mean())
    assert case.share["gain_lost"] == pytest.approx(case["mean"]["gain_lost"] / case.planted_gain["gain_lost"])
    # the same sets on the control users: their mean is the controls' per-example mean from the ablation run
    controls = pd.read_csv(run.path("gain_removed_control_users.csv"))
    frame = pd.read_csv(runs["case"]["ablation"].path("per_example.csv"))
    theirs = losses[(losses.group == "control") & (losses.split == "evaluation")]
    kmax = frame[frame.family == "specific_pcs"].k.max()  # the largest named k (damage-null sets are larger)
    want = frame[frame.example_id.isin(set(theirs.example_id)) & (frame["set"] == f"specific_pcs@{kmax}")]
    got = controls[(controls.family == "case") & (controls["set"] == "specific_pcs")].set_index("outcome")
    assert theirs.user_id.nunique() >= 2 and got.n_users["gain_lost"] == theirs.user_id.nunique()
    assert got["mean"]["specific_gain_lost"] == pytest.approx(want.specific_gain_lost.mean())
    assert got["mean"]["gain_lost"] == pytest.approx(want.gain_lost.mean())
    # the rule's tokens alone: the same sets' marker outcomes, each a share of the planted users' clean marker gain
    marker = pd.read_csv(run.path("marker_gain_removed_by_family.csv"))
    assert "case" in set(marker.family) and "planted" in set(marker.users)  # 16 gold tokens: few lexicon markers
    mine = frame[frame.example_id.isin(set(planted.example_id)) & (frame["set"] == f"specific_pcs@{kmax}")]
    mine = mine[mine.marker_specific_gain_lost.notna()]
    scored = planted[planted.example_id.isin(set(mine.example_id))]
    got = marker[(marker.family == "case") & (marker.users == "planted") & (marker["set"] == "specific_pcs")]
    got = got.set_index("outcome")
    assert got["mean"]["marker_specific_gain_lost"] == pytest.approx(mine.marker_specific_gain_lost.mean())
    assert got.marker_gain["marker_specific_gain_lost"] == pytest.approx((scored.marker_other - scored.marker_own).mean())
    assert got.marker_gain["marker_gain_lost"] == pytest.approx((scored.marker_none - scored.marker_own).mean())
    assert got.share["marker_gain_lost"] == pytest.approx(got["mean"]["marker_gain_lost"] / got.marker_gain["marker_gain_lost"])
    assert "random:specific_pcs" in set(marker[marker.users == "planted"]["set"])
    assert set(pd.read_csv(run.path("dps_marker_by_family.csv")).family) == {"case"}
    overlap = pd.read_csv(run.path("overlap_across_families.csv"))
    assert {("case", "lexicon")} <= set(zip(overlap.planted_a, overlap.planted_b))
    assert "planted signoff: no finished" in caplog.text
    with pytest.raises(ConfigError, match="base dataset"):
        known_answer.main(["--model", str(tiny_model_dir), "--data", "planted:conventions2012:case"])


def test_ablation_scores_the_rule_tokens_from_the_same_forwards(planted_runs):
    _, runs = planted_runs
    ablation = runs["case"]["ablation"]
    frame = pd.read_csv(ablation.path("per_example.csv"))
    signal = pd.read_csv(ablation.path("signal_losses.csv")).set_index("example_id")
    assert {f"marker_{kind}_{c}" for kind in ("loss", "clean") for c in ("own", "other", "none")} <= set(frame.columns)
    scored = frame[frame.marker_clean_own.notna()]
    assert scored.example_id.nunique() >= 4
    for c in ("own", "other", "none"):  # the clean rows are the signal's marker NLLs, NaN where it has none
        np.testing.assert_allclose(scored[f"marker_clean_{c}"], signal.loc[scored.example_id, f"marker_{c}"],
                                   atol=1e-4)
        assert frame[f"marker_loss_{c}"].isna().equals(frame.example_id.map(signal[f"marker_{c}"]).isna())
    want = (scored.marker_loss_own - scored.marker_clean_own) - (scored.marker_loss_other - scored.marker_clean_other)
    np.testing.assert_allclose(scored.marker_specific_gain_lost, want)
    np.testing.assert_allclose(scored.marker_gain_lost, (scored.marker_clean_none - scored.marker_clean_own)
                               - (scored.marker_loss_none - scored.marker_loss_own))
    named = scored[scored.family != "random_damage"]
    assert (named.marker_loss_own - named.marker_clean_own).abs().max() > 1e-4, "ablation moves the rule's tokens"
    assert not np.allclose(scored.marker_loss_own, scored.loss_own), "marker NLL is not the whole-text NLL"


def test_an_ablation_record_without_marker_nlls_is_measured_again(planted_runs, tiny_model_dir, tmp_path):
    results, runs = planted_runs
    copy = tmp_path / "results"
    shutil.copytree(results, copy)
    folder = copy / runs["case"]["ablation"].root.relative_to(results)
    (ck,) = (folder / "checkpoints").glob("losses.*.jsonl")
    lines = [json.loads(line) for line in ck.read_text().splitlines()]
    for rec in lines[::2]:  # half the records as an older run wrote them: the mean losses only
        rec.pop("markers"), rec.pop("marker_clean")
    ck.write_text("".join(json.dumps(rec) + "\n" for rec in lines))
    runs_before = json.loads((folder / "manifest.json").read_text())["provenance"]
    again = ablation_comparison.main(args(tiny_model_dir, copy, "case") + ABLATE)
    runs_after = json.loads((folder / "manifest.json").read_text())["provenance"]
    assert runs_after[:-1] == runs_before and runs_after[-1]["rows_computed"] == len(lines[::2])
    before = pd.read_csv(runs["case"]["ablation"].path("per_example.csv"))
    after = pd.read_csv(again.path("per_example.csv"))
    pd.testing.assert_frame_equal(after, before, atol=1e-5)
    records = [json.loads(line) for line in ck.read_text().splitlines()]
    assert len(records) == len(lines) + len(lines[::2]) and all("markers" in r for r in records[len(lines):])


def test_summary_shows_all_users_then_the_planted_ones_once_each(planted_runs, tiny_model_dir):
    from harness.analysis import summary

    results, _ = planted_runs
    text = summary.report(results, str(tiny_model_dir), "planted:conventions2012:case")
    lines = [line for line in text.splitlines() if line.startswith("- evaluation (")]
    assert len(lines) == 2 and "planted users" in lines[1] and "planted" not in lines[0]
    assert lines[0].count("gain_own") == 1 and "marker_gain_specific" in lines[1]
