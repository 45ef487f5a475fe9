"""harness.study.across_planted (studies.known_answer's arithmetic) on hand-made run folders: which runs each planted
family has, the rows read off them, the clean gains the shares are of, and the top-k overlap across families."""

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.scorers.ranking import Ranking
from harness.study import across_planted
from harness.study.config import StudyConfig


def write(folder: Path, stem: str, frame: pd.DataFrame, *, finished: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / f"{stem}.csv", index=False)
    if finished:
        (folder / "manifest.json").write_text(json.dumps({"data_sha256": "d"}))
    return folder


def ranking(order: str, n_layers: int = 2, n_heads: int = 2) -> Ranking:
    """A one-family ranking whose top heads are ``order`` ("L1H0,L0H1": L1H0 first)."""
    scores = torch.zeros(n_layers, n_heads)
    for i, name in enumerate(order.split(",")):
        layer, head = name[1:].split("H")
        scores[int(layer), int(head)] = 10 - i
    return Ranking.from_maps({"pcs": scores}, [1, 2], ["e"], {})


def test_each_planted_family_reads_its_own_runs_and_a_missing_one_is_named(tmp_path, caplog):
    cfg = StudyConfig.build({"data": "conventions2012", "model": "m", "results": str(tmp_path)})
    assert across_planted.planted_data("conventions2012", "case") == "planted:conventions2012:case"
    with caplog.at_level(logging.WARNING, logger="harness"):
        runs = across_planted.family_runs(cfg, ["case"])
    assert runs["case"]["pcs_ranking"] == tmp_path / "m" / "planted-conventions2012-case" / "seed0" / "pcs_ranking"
    assert list(runs["case"]) == list(across_planted.STUDIES)
    assert "planted case: no finished pcs_ranking, ablation_comparison, dps_decoding run" in caplog.text


def test_signal_rows_come_from_the_signal_run_else_the_ablation_run(tmp_path):
    sig = pd.DataFrame({"split": ["evaluation", "evaluation", "discovery", "evaluation"],
                        "group": ["planted", "control", "planted", "all"],
                        "gain": ["gain_own", "marker_gain_specific", "gain_own", "gain_own"], "mean": [1.0, 2, 3, 4],
                        "ci": ["[0.5, 1.5]", "[1, 3]", "[2, 4]", "[3, 5]"], "n_examples": 4, "n_users": 2})
    runs = {"case": {"signal": write(tmp_path / "case-signal", "signal", sig),
                     "ablation_comparison": tmp_path / "none"},
            "lexicon": {"signal": tmp_path / "absent", "ablation_comparison": write(tmp_path / "lex-abl", "signal", sig)},
            "spelling": {"signal": tmp_path / "absent", "ablation_comparison": tmp_path / "absent"}}
    rows = across_planted.signal_rows(runs)
    assert [(r["family"], r["group"], r["gain"]) for r in rows] == [
        ("case", "planted", "gain_own"), ("case", "control", "marker_gain_specific"),
        ("lexicon", "planted", "gain_own"), ("lexicon", "control", "marker_gain_specific")]
    assert rows[0]["ci"] == (0.5, 1.5)  # intervals read back as pairs


def test_the_clean_gains_are_other_and_none_minus_own_on_evaluation_examples():
    losses = pd.DataFrame({"example_id": ["a", "b", "c"], "split": ["evaluation", "evaluation", "discovery"],
                           "loss_own": [1.0, 2.0, 0.0], "loss_other": [2.0, 2.5, 9.0], "loss_none": [3.0, 3.0, 9.0]})
    assert across_planted.clean_gains(losses, {"a", "b", "c"}, "loss", "") == {
        "specific_gain_lost": pytest.approx(0.75), "gain_lost": pytest.approx(1.5)}
    assert across_planted.clean_gains(losses, {"a"}, "loss", "marker_") == {
        "marker_specific_gain_lost": 1.0, "marker_gain_lost": 2.0}


def test_a_family_without_an_ablation_run_gives_no_removal_rows_but_its_ranking_is_read(tmp_path):
    folder = tmp_path / "rank"
    ranking("L1H0,L0H1").save(folder / "ranking.json")
    removal = across_planted.removal_rows({"case": {"pcs_ranking": folder, "ablation_comparison": tmp_path / "none"}},
                                          n_boot=10, seed=0)
    assert (removal.removed, removal.controls, removal.markers) == ([], [], [])
    assert str(removal.rankings["case"].top("pcs", 2)) == "L0H1,L1H0"


def test_dps_rows_keep_the_marker_rate_comparisons(tmp_path):
    rate = pd.DataFrame({"outcome": ["marker_rate", "rougeL"], "name": ["dps", "dps"], "baseline": ["profile"] * 2,
                         "mean_diff": [0.2, 0.1]})
    rows = across_planted.dps_rows({"case": {"dps_decoding": write(tmp_path / "dps", "dps_marker_rate", rate)},
                                    "lexicon": {"dps_decoding": tmp_path / "absent"}})
    assert [(r["family"], r["outcome"], r["mean_diff"]) for r in rows] == [("case", "marker_rate", 0.2)]


def test_overlap_across_families_pairs_every_family_and_names_the_heads_all_abstract_ones_share():
    rankings = {"signoff": ranking("L0H0,L0H1"), "lexicon": ranking("L1H1,L0H1"), "case": ranking("L0H1,L1H1"),
                "spelling": ranking("L0H1,L1H0")}
    rows = across_planted.overlap_rows(rankings)
    pairs = {(r["planted_a"], r["planted_b"]): r for r in rows}
    assert len(rows) == 6 + 1 and {r["k"] for r in rows} == {2}
    assert pairs["case", "lexicon"]["jaccard"] == 1.0 and pairs["case", "lexicon"]["shared"] == "L0H1,L1H1"
    assert pairs["lexicon", "signoff"]["jaccard"] == pytest.approx(1 / 3)
    abstract = pairs["lexicon+spelling+case", "(all abstract)"]
    assert abstract["shared"] == "L0H1" and abstract["jaccard"] != abstract["jaccard"]  # NaN: not a pair
    assert across_planted.overlap_rows({}) == []
