"""A planted corpus goes through every study by ``--data`` alone, and the known-answer tables come out."""

import pandas as pd
import pytest

from studies import dps_decoding, pcs_ranking
from studies import signal as signal_study

pytestmark = pytest.mark.slow


def test_planted_corpus_reaches_signal_ranking_and_dps_with_marker_tables(tiny_model_dir, tmp_path):
    args = ["--preset", "quick", "--model", str(tiny_model_dir), "--data", "planted:conventions2012:case",
            "--n", "10", "--results", str(tmp_path), "--max-prompt-tokens", "192", "--max-target-tokens", "16",
            "--k-heads", "1", "2", "--n-boot", "200", "--n-perm", "200", "--framing", "prefill"]
    run = signal_study.main(args)
    sig = pd.read_csv(run.path("signal.csv"))
    assert set(sig["group"]) == {"all", "planted", "control"}
    assert {"gain_specific", "marker_gain_own", "marker_gain_specific"} <= set(sig["gain"])
    pcs_ranking.main(args + ["--retrieval-prompts", "1", "--induction-sequences", "2"])
    dps = dps_decoding.main(args + ["--max-new-tokens", "6", "--gammas", "1.0", "--style-alphas", "1.0",
                                    "--style-layers", "1"])
    per_example = pd.read_csv(dps.path("per_example.csv"))
    assert {"group", "marker_rate"} <= set(per_example.columns)
    rates = pd.read_csv(dps.path("marker_rate_by_method.csv"))
    assert set(rates["group"]) <= {"planted", "control"} and "planted" in set(rates["group"])
    assert rates["marker_rate"].between(0, 1).all()
    versus = pd.read_csv(dps.path("dps_marker_rate.csv"))
    assert set(versus["outcome"]) == {"marker_rate", "rougeL"} and set(versus["name"]) == {"dps-specific_pcs"}
    assert set(versus["baseline"]) <= set(dps_decoding.BASELINES) and len(set(versus["baseline"])) >= 3
