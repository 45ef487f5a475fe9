"""harness.analysis.results, the one reader of committed results: which folders it finds, in which order, and how it
reads their tables (on hand-made folders, no model)."""

import json
from pathlib import Path

import pytest

from harness.analysis import results as reader
from harness.intervene.heads import HeadSet


def finished(folder: Path, **files: str) -> Path:
    """A finished run folder (a manifest) holding ``files`` (stem -> CSV text)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"config": {"study": folder.name}}))
    for stem, text in files.items():
        (folder / f"{stem}.csv").write_text(text)
    return folder


def test_a_table_the_run_did_not_write_is_none_and_missing_cells_follow_the_chosen_reading(tmp_path):
    finished(tmp_path / "run", t="set,mean,ci\nNone,1.5,\"[0.5, 2.5]\"\n,2.0,\n")
    assert reader.table(tmp_path / "run", "absent") is None
    default = reader.table(tmp_path / "run", "t")
    assert default["set"].isna().all()  # pandas reads "None" as missing
    literal = reader.table(tmp_path / "run", "t", na=("",))
    assert literal["set"].iloc[0] == "None" and literal["set"].isna().iloc[1]
    assert reader.table(tmp_path / "run", "t", na=())["set"].tolist() == ["None", ""]
    pairs = reader.table(tmp_path / "run", "t", na=("",), pairs=True)
    assert pairs.ci.iloc[0] == (0.5, 2.5) and pairs.ci.isna().iloc[1]
    assert reader.manifest(tmp_path / "run") == {"config": {"study": "run"}} and reader.finished(tmp_path / "run")


def test_a_run_that_reads_other_runs_records_their_data_hashes_off_their_manifests(tmp_path):
    for name, digest in (("a", "x"), ("b", "y")):
        finished(tmp_path / name)
        (tmp_path / name / "manifest.json").write_text(json.dumps({"data_sha256": digest}))
    assert reader.source_data([tmp_path / "a", tmp_path / "b"]) == {str(tmp_path / "a"): "x", str(tmp_path / "b"): "y"}


def test_finished_runs_are_ordered_by_seed_then_study_and_skip_unfinished_and_foreign_folders(tmp_path):
    data = tmp_path / "m" / "d"
    for folder in ("seed10/signal", "seed2/dps_decoding", "seed2/ablation_comparison-zero-all",
                   "seed2/ablation_comparison", "seed2/signal", "all_seeds/seeds_summary", "notes/signal"):
        finished(data / folder)
    (data / "seed2" / "pcs_ranking").mkdir()  # unfinished: no manifest
    found = [str(p.relative_to(data)) for p in reader.finished_runs(data)]
    assert found == ["seed2/signal", "seed2/ablation_comparison", "seed2/ablation_comparison-zero-all",
                     "seed2/dps_decoding", "seed10/signal", "all_seeds/seeds_summary"]
    (data / "seed_old").mkdir()
    assert [p.name for p in reader.seed_folders(data)] == ["seed2", "seed10"]


def test_model_and_data_folders_leave_the_cross_model_folders_apart(tmp_path):
    for folder in ("m2/d1", "m1/d2", "m1/d1", "cross_model", "cross_model-zero-all"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "summary.md").write_text("")
    assert [p.name for p in reader.model_folders(tmp_path)] == ["m1", "m2"]
    assert [p.name for p in reader.model_folders(tmp_path, cross_model=True)] == ["cross_model", "cross_model-zero-all"]
    assert [str(p.relative_to(tmp_path)) for p in reader.data_folders(tmp_path)] == ["m1/d1", "m1/d2", "m2/d1"]
    assert reader.data_folders(tmp_path / "absent") == []
    assert reader.run_folder(tmp_path, "org/Model", "planted:c:case", "seed0/x") == \
        tmp_path / "org--Model" / "planted-c-case" / "seed0/x"


def test_the_signal_is_read_from_the_first_study_that_wrote_it(tmp_path):
    seed = tmp_path / "seed0"
    (seed / "ablation_comparison").mkdir(parents=True)
    (seed / "ablation_comparison" / "signal.csv").write_text("gain\n")
    finished(seed / "dps_decoding", signal="gain\n")
    assert reader.signal_source(seed) == seed / "ablation_comparison" / "signal.csv"
    assert reader.signal_source(seed, finished=True) == seed / "dps_decoding" / "signal.csv"  # the unfinished one: no
    assert reader.signal_source(tmp_path / "seed9") is None


def test_the_first_outcome_and_the_pooled_rows_are_the_ones_a_summary_leads_with(tmp_path):
    run = finished(tmp_path / "all_seeds" / "seeds_summary", comparison_pooled_gain_lost="x\n",
                   comparison_pooled_nll_increase="x\n",
                   set_summary_by_seed="seed,set,mean\n0,a,1\npooled,a,2\npooled,None,3\n")
    assert reader.first_outcome(run, "comparison_pooled_") == "gain_lost"
    assert reader.first_outcome(run, "comparison_") is None
    pooled = reader.pooled_set_summary(run)
    assert pooled["set"].tolist() == ["a", "None"] and pooled["mean"].tolist() == [2, 3]
    assert reader.pooled_set_summary(tmp_path) is None


def test_rankings_are_found_in_the_seeded_layout_only_and_read_as_head_sets(tmp_path):
    sets = {"sets": {"pcs": {"1": "L0H1", "2": "L0H1,L1H0"}}}
    for folder in ("m/b/seed1/pcs_ranking", "m/b/seed0/pcs_ranking", "m/a/seed0/pcs_ranking", "m/a/pcs_ranking",
                   "m/a/seed0/pcs_ranking-zero-all"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "ranking.json").write_text(json.dumps(sets))
    (tmp_path / "m/a/seed2/pcs_ranking").mkdir(parents=True)  # no ranking.json: not a ranking
    v2, v1 = reader.ranking_folders(tmp_path)
    assert [str(p.relative_to(tmp_path)) for p in v2] == ["m/a/seed0/pcs_ranking", "m/b/seed0/pcs_ranking",
                                                          "m/b/seed1/pcs_ranking"]
    assert v1 == [tmp_path / "m/a/pcs_ranking"]
    assert reader.ranking_folders(tmp_path, "pcs_ranking-zero-all")[0] == [tmp_path / "m/a/seed0/pcs_ranking-zero-all"]
    assert reader.ranking_sets(v2[0]) == {"pcs": {1: HeadSet.parse("L0H1"), 2: HeadSet.parse("L0H1,L1H0")}}


@pytest.mark.parametrize("name, cross", [("cross_model", True), ("cross_model-zero-all", True),
                                         ("cross_modelx", False), ("smollm2-135m", False)])
def test_a_cross_model_folder_is_named_by_its_study(name, cross):
    assert reader.is_cross_model(name) is cross
