"""studies.cross_model (harness.study.across_models) on hand-built rankings (no model): two models of 4 and 8 layers, two seeds, a real and two
planted data folders; relative depths, Jaccards and shared heads computed by hand."""

import csv
import json
from pathlib import Path

import pytest
import torch

from harness.scorers.ranking import Ranking
from harness.study import across_models
from studies import cross_model

FAMILIES = ("specific_pcs", "contrast_pcs", "retrieval", "induction")


def ranked(n_layers: int, n_heads: int, order: str) -> torch.Tensor:
    """A score map whose ranking is ``order`` ("L3H0,L1H1": L3H0 first); every other head scores 0."""
    scores = torch.zeros(n_layers, n_heads)
    heads = order.split(",")
    for i, name in enumerate(heads):
        layer, head = name[1:].split("H")
        scores[int(layer), int(head)] = len(heads) - i
    return scores


def save(results: Path, model: str, data: str, seed: int | None, shape: tuple[int, int], orders: dict[str, str],
         ks: list[int], study: str = "pcs_ranking") -> Path:
    """A ranking folder as pcs_ranking writes it (``seed=None``: the v1 layout, without a seed level; ``study``:
    another design's folder, e.g. ``pcs_ranking-zero-all``)."""
    folder = results / model / data / (f"seed{seed}/{study}" if seed is not None else study)
    ranking = Ranking.from_maps({f: ranked(*shape, o) for f, o in orders.items()}, ks, ["d0", "d1"],
                                {"model": model, "data": data, "seed": seed})
    ranking.save(folder / "ranking.json")
    (folder / "manifest.json").write_text("{}")
    return folder


@pytest.fixture
def results(tmp_path: Path) -> Path:
    r = tmp_path / "results"
    copy = {"retrieval": "L3H0,L2H1,L0H0", "induction": "L2H0,L2H1,L0H0"}
    save(r, "m4", "conventions2012", 0, (4, 2), {"specific_pcs": "L3H0,L1H1", "contrast_pcs": "L2H0,L0H1", **copy},
         [1, 2])
    save(r, "m4", "conventions2012", 1, (4, 2), {"specific_pcs": "L3H0,L2H0,L1H0", "contrast_pcs": "L2H0,L0H1,L1H0",
                                                 **copy}, [1, 2, 3])  # k = 3 too: m4's common k stays 2
    save(r, "m4", "planted-conventions2012-signoff", 0, (4, 2),
         {"specific_pcs": "L1H1,L0H0", "contrast_pcs": "L0H1,L1H0", **copy}, [1, 2])
    save(r, "m4", "planted-conventions2012-case", 0, (4, 2),
         {"specific_pcs": "L0H0,L3H1", "contrast_pcs": "L0H1,L3H1", **copy}, [1, 2])
    save(r, "m8", "conventions2012", 0, (8, 2), {"specific_pcs": "L6H1,L4H0,L7H0", "contrast_pcs": "L1H0,L2H0,L3H0",
                                                 "retrieval": "L6H1,L5H0,L5H1", "induction": "L5H0,L5H1,L4H1"},
         [1, 2, 3])
    save(r, "m4", "conventions2012", None, (4, 2), {f: "L0H0,L0H1" for f in FAMILIES}, [1, 2])  # v1: never read
    return r


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_depth_overlap_and_contrast_tables_match_hand_computation(results, capsys):
    run = cross_model.main(["--results", str(results)])
    assert run.root == results / "cross_model"
    for stem in ("depth", "overlap", "contrast_vs_copy"):
        for ext in ("md", "tex", "csv"):
            assert (run.root / f"{stem}.{ext}").exists()
    assert (run.root / "depth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    depth = rows(run.root / "depth.csv")
    spec = {(r["model"], r["data"], r["seed"]): r for r in depth if r["family"] == "specific_pcs"}
    assert len(spec) == 4 + 1 + 2  # m4: 4 rankings + its summary; m8: 1 + summary (the v1 folder is not read)
    row = spec["m4", "conventions2012", "0"]
    assert (row["n_layers"], row["k"], row["heads"]) == ("4", "2", "L1H1,L3H0")
    assert row["depths"] == "0.250, 0.750" and float(row["mean"]) == pytest.approx(0.5)
    assert spec["m4", "conventions2012", "1"]["heads"] == "L2H0,L3H0"  # top-2 although it holds k = 3
    m4 = spec["m4", "all", "all"]  # pooled: .25 .75 | .5 .75 | 0 .25 | 0 .75
    assert float(m4["mean"]) == pytest.approx(3.25 / 8)
    assert (float(m4["min"]), float(m4["max"]), m4["rankings"]) == (0.0, 0.75, "4")
    assert m4["heads"] == "L0H0x2, L1H1x2, L3H0x2, L2H0, L3H1"  # recurring first, then by layer
    m8 = spec["m8", "conventions2012", "0"]  # its one ranking holds k = 3: top-3, depths 4/8, 6/8, 7/8
    assert (m8["n_layers"], m8["k"], m8["heads"]) == ("8", "3", "L4H0,L6H1,L7H0")
    assert float(m8["mean"]) == pytest.approx((0.5 + 0.75 + 0.875) / 3)
    assert [r["model"] for r in depth].index("m8") > max(i for i, r in enumerate(depth) if r["model"] == "m4")

    overlap = {(r["comparison"], r["model"], r["family"], r["data_a"], r["seed_a"], r["data_b"], r["seed_b"]): r
               for r in rows(run.root / "overlap.csv")}
    seeds = overlap["across seeds", "m4", "specific_pcs", "conventions2012", "0", "conventions2012", "1"]
    assert float(seeds["jaccard"]) == pytest.approx(1 / 3) and seeds["shared"] == "L3H0" and seeds["k"] == "2"
    real = overlap["real vs planted", "m4", "specific_pcs", "conventions2012", "0",
                   "planted-conventions2012-signoff", "0"]
    assert float(real["jaccard"]) == pytest.approx(1 / 3) and real["shared"] == "L1H1"
    none = overlap["real vs planted", "m4", "specific_pcs", "conventions2012", "0", "planted-conventions2012-case", "0"]
    assert float(none["jaccard"]) == 0 and none["shared"] == "none" and none["n_shared"] == "0"
    planted = overlap["planted vs planted", "m4", "specific_pcs", "planted-conventions2012-signoff", "0",
                      "planted-conventions2012-case", "0"]
    assert float(planted["jaccard"]) == pytest.approx(1 / 3) and planted["shared"] == "L0H0"
    assert float(overlap["across seeds", "m4", "contrast_pcs", "conventions2012", "0", "conventions2012", "1"]
                 ["jaccard"]) == 1.0
    assert not [key for key in overlap if key[1] == "m8"]  # one ranking: nothing to compare
    assert not [key for key in overlap if key[0] != "across seeds" and "1" in (key[4], key[6])]  # seed 1: one folder
    order = [r["comparison"] for r in rows(run.root / "overlap.csv") if r["family"] == "specific_pcs"]
    assert order == ["across seeds", "real vs planted", "real vs planted", "planted vs planted"]

    contrast = {(r["model"], r["data"], r["seed"], r["family"], r["vs"]): r
                for r in rows(run.root / "contrast_vs_copy.csv")}
    assert len(contrast) == 5 * 4
    hit = contrast["m4", "conventions2012", "0", "specific_pcs", "retrieval"]  # {L1H1,L3H0} vs {L2H1,L3H0}
    assert (float(hit["jaccard"]), hit["shared"], hit["n_shared"]) == (pytest.approx(1 / 3), "L3H0", "1")
    miss = contrast["m4", "conventions2012", "0", "specific_pcs", "induction"]  # vs {L2H0,L2H1}
    assert (float(miss["jaccard"]), miss["shared"]) == (0.0, "none")
    assert contrast["m4", "conventions2012", "0", "contrast_pcs", "induction"]["shared"] == "L2H0"
    m8c = contrast["m8", "conventions2012", "0", "specific_pcs", "retrieval"]  # {L4H0,L6H1,L7H0} vs {L5H0,L5H1,L6H1}
    assert (m8c["k"], m8c["shared"], float(m8c["jaccard"])) == ("3", "L6H1", pytest.approx(1 / 5))
    # 16 heads, two random 3-sets: 9/16 shared on average; P(>= 1 shared) = 1 - C(13,3)/C(16,3) = 1 - 286/560
    assert float(m8c["chance_shared"]) == pytest.approx(9 / 16)
    assert float(m8c["p_chance"]) == pytest.approx(1 - 286 / 560, abs=5e-4)  # the CSV keeps 3 significant digits
    # 8 heads, two random 2-sets: 0.5 on average; P(>= 1) = 1 - C(6,2)/C(8,2) = 1 - 15/28; P(>= 0) = 1
    assert float(hit["chance_shared"]) == pytest.approx(0.5)
    assert float(hit["p_chance"]) == pytest.approx(1 - 15 / 28, abs=5e-4)
    assert float(miss["p_chance"]) == 1.0
    assert float(seeds["chance_shared"]) == pytest.approx(0.5)

    manifest = json.loads((run.root / "manifest.json").read_text())
    assert manifest["provenance"][-1]["command"].startswith("python -m studies.cross_model --results")
    assert manifest["config"] == {"study": "cross_model", "k": None, "ranking_folder": "pcs_ranking"}
    assert [r["folder"] for r in manifest["rankings"]][0] == "m4/conventions2012/seed0/pcs_ranking"
    assert len(manifest["rankings"]) == 5
    out = capsys.readouterr().out
    assert "5 ranking(s) of 2 model(s)" in out and "m8 (8 layers)" in out


def test_an_explicit_k_is_used_everywhere_and_another_k_is_refused_without_fresh(results):
    run = cross_model.main(["--results", str(results), "--k", "1"])
    depth = rows(run.root / "depth.csv")
    assert {r["k"] for r in depth} == {"1"}
    assert {r["k"] for r in rows(run.root / "overlap.csv")} == {"1"}
    assert next(r for r in depth if r["model"] == "m8" and r["family"] == "specific_pcs")["heads"] == "L6H1"
    with pytest.raises(RuntimeError, match="k: 1 -> 3"):
        cross_model.main(["--results", str(results), "--k", "3"])
    cross_model.main(["--results", str(results), "--k", "3", "--fresh"])  # only m4's seed-1 ranking and m8 hold 3
    depth = rows(run.root / "depth.csv")
    assert {(r["model"], r["data"], r["seed"]) for r in depth if r["family"] == "specific_pcs"} == {
        ("m4", "conventions2012", "1"), ("m4", "all", "all"), ("m8", "conventions2012", "0"), ("m8", "all", "all")}


def test_plan_lists_the_rankings_and_writes_nothing(results, capsys):
    with pytest.raises(SystemExit) as stop:
        cross_model.main(["--results", str(results), "--plan"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert "reads 5 ranking(s)" in out and "m8/conventions2012/seed0/pcs_ranking  8 x 2 heads" in out
    assert "m4/conventions2012/pcs_ranking " not in out  # the v1 folder
    assert not (results / "cross_model").exists()


def test_no_rankings_is_an_error_naming_what_it_reads(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        cross_model.main(["--results", str(tmp_path / "absent")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"no head rankings in .*empty.*seed<k>/pcs_ranking/ranking.json"):
        cross_model.main(["--results", str(tmp_path / "empty")])
    v1_only = tmp_path / "v1"
    save(v1_only, "m4", "conventions2012", None, (4, 2), {f: "L0H0,L0H1" for f in FAMILIES}, [1, 2])
    with pytest.raises(SystemExit, match="1 v1 folder"):
        cross_model.main(["--results", str(v1_only)])
    assert not (v1_only / "cross_model").exists()


def test_data_folders_relate_as_real_planted_or_other():
    assert across_models.base_dataset("planted-conventions2012-signoff") == ("conventions2012", "signoff")
    assert across_models.base_dataset("debates2016") == ("debates2016", None)
    assert across_models.relation("conventions2012", "planted-conventions2012-case") == "real vs planted"
    assert across_models.relation("planted-conventions2012-lexicon", "planted-conventions2012-case") == \
        "planted vs planted"
    assert across_models.relation("conventions2012", "debates2016") == "across datasets"
    assert across_models.relation("debates2016", "planted-conventions2012-case") == "across datasets"
    assert across_models.common_k([{1: 0, 3: 0, 5: 0}, {1: 0, 3: 0}]) == 3
    assert across_models.common_k([{1: 0, 3: 0}, {1: 0, 3: 0}], 5) is None


def test_another_designs_rankings_go_to_their_own_folder():
    assert cross_model.CrossModelConfig.from_argv([]).out_folder == "cross_model"
    assert cross_model.CrossModelConfig.from_argv(["--ranking-folder", "pcs_ranking-zero-all"]).out_folder == \
        "cross_model-zero-all"


def test_the_paper_reads_another_designs_cross_model_folder_under_its_own_macros(results):
    """``cross_model-zero-all/`` is not a model: paper_tables names its numbers ``CrossZeroAll...``, beside (never
    over) the primary design's ``Cross...``, and the results summary skips it."""
    from harness.analysis import summary
    from harness.analysis import paper

    save(results, "m4", "conventions2012", 0, (4, 2),  # the zero design: only m4's seed-0 contrast set moves
         {"specific_pcs": "L3H0,L1H1", "contrast_pcs": "L3H0,L2H1", "retrieval": "L3H0,L2H1,L0H0",
          "induction": "L2H0,L2H1,L0H0"}, [1, 2], study="pcs_ranking-zero-all")
    cross_model.main(["--results", str(results)])
    run = cross_model.main(["--results", str(results), "--ranking-folder", "pcs_ranking-zero-all"])
    assert run.root == results / "cross_model-zero-all"
    numbers = paper.v2_numbers(results)
    primary = "CrossMFourConvContrastPcsVsRetrievalShared"  # seed 0 carries no seed tag
    zero = "CrossZeroAllMFourConvContrastPcsVsRetrievalShared"
    assert numbers[primary].value == 0  # L2H0, L0H1 against L3H0, L2H1
    assert numbers[zero].value == 2  # L3H0, L2H1 against the same
    assert not any(name.startswith("CrossZeroAllMEight") for name in numbers)  # m8 has no zero-design ranking
    text = summary.write(results).read_text()
    assert "cross_model" not in text
