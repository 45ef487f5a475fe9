"""harness.study.across_seeds (studies.seeds' arithmetic) on hand-made run folders: which runs each seed contributes,
the refusal of a seed whose runs drew other data, the overlap across seeds and the pooling of per-example rows."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.scorers.ranking import Ranking
from harness.study import across_seeds
from harness.study.config import StudyConfig


def config(results: Path) -> StudyConfig:
    return StudyConfig.build({"data": "conventions2012", "model": "m", "results": str(results)})


def finish(folder: Path, data_sha256: str = "d") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"data_sha256": data_sha256}))
    return folder


def test_each_seed_contributes_its_ranking_and_ablation_run_and_a_missing_one_is_named(tmp_path):
    cfg = config(tmp_path)
    for s in (0, 1):
        for study in across_seeds.STUDIES:
            finish(tmp_path / "m" / "conventions2012" / f"seed{s}" / study)
    folders = across_seeds.seed_runs(cfg, [0, 1])
    assert folders[1] == (tmp_path / "m/conventions2012/seed1/pcs_ranking",
                          tmp_path / "m/conventions2012/seed1/ablation_comparison")
    with pytest.raises(SystemExit, match=r"no finished run in .*seed7/pcs_ranking, .*seed7/ablation_comparison: run "
                                         r"`python -m studies.pipeline --seeds 0 7`"):
        across_seeds.seed_runs(cfg, [0, 7])


def test_a_seed_whose_runs_drew_other_data_is_refused(tmp_path):
    same = (finish(tmp_path / "a0", "x"), finish(tmp_path / "b0", "x"))
    other = (finish(tmp_path / "a1", "y"), finish(tmp_path / "b1", "z"))
    assert across_seeds.seed_data({0: same}) == {"0": "x"}
    with pytest.raises(SystemExit, match="seed 1: its runs used different data"):
        across_seeds.seed_data({0: same, 1: other})


def test_the_overlap_across_seeds_is_the_mean_pairwise_jaccard_per_family_and_k():
    def ranking(pcs: list[float], other: list[float]) -> Ranking:
        return Ranking.from_maps({"pcs": torch.tensor([pcs]), "other": torch.tensor([other])}, [1, 2], ["e"], {})
    rankings = {0: ranking([3, 2, 1, 0], [0, 1, 2, 3]), 1: ranking([3, 1, 2, 0], [0, 1, 2, 3]),
                2: ranking([0, 1, 2, 3], [0, 1, 2, 3])}
    rows = {(r["family"], r["k"]): r for r in across_seeds.overlap_rows(rankings, [1, 2])}
    assert rows["pcs", 1]["mean_jaccard"] == pytest.approx(1 / 3)  # seeds 0 and 1 agree on L0H0, seed 2 on neither
    # top-2: {H0, H1}, {H0, H2}, {H2, H3}: Jaccard 1/3, 0, 1/3
    assert rows["pcs", 2]["mean_jaccard"] == pytest.approx((1 / 3 + 0 + 1 / 3) / 3)
    assert rows["other", 2]["mean_jaccard"] == 1.0 and rows["other", 2]["seeds"] == 3


def test_pooling_keeps_the_head_sets_every_seed_measured_and_prefixes_example_ids(tmp_path):
    def ablation(name: str, sets: list[str]) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        pd.DataFrame({"example_id": ["e1"] * len(sets), "user_id": ["u"] * len(sets), "set": sets,
                      "matched_to": [""] * len(sets), "loss": range(len(sets))}).to_csv(folder / "per_example.csv",
                                                                                     index=False)
        return folder
    pooled = across_seeds.pool({0: (tmp_path, ablation("s0", ["a@1", "random#0", "random#1"])),
                                1: (tmp_path, ablation("s1", ["a@1", "random#0"]))})
    assert pooled.common == {"a@1", "random#0"} and pooled.left_out == ["random#1"]
    assert sorted(pooled.frame.example_id.unique()) == ["seed0:e1", "seed1:e1"]
    assert (pooled.frame.matched_to == "").all()  # an empty cell stays "", not missing
