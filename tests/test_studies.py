"""The studies end to end on a tiny random model: every output is written, reruns resume, stale results are refused."""

import hashlib
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.study import config as config_module
from harness.scorers import ranking as ranking_module
from harness.analysis import summary
from harness.analysis import tables
from harness.intervene.heads import HeadSet
from harness.scorers.ranking import HEAD_SCORERS, HeadScores, Ranking, register_head_scorer
from harness.analysis import paper
from studies import ablation_comparison, dps_decoding, paper_tables, pcs_ranking

pytestmark = pytest.mark.slow

RANK = ["--retrieval-prompts", "1", "--induction-sequences", "2"]
ABLATE = ["--n-random", "5", "--n-random-other", "2", "--max-new-tokens", "4", "--n-damage", "12"]
DPS = ["--max-new-tokens", "4", "--gammas", "1.0", "--style-alphas", "1.0", "--style-layers", "1"]


def common(model, results):
    return ["--preset", "quick", "--model", model, "--data", "conventions2012", "--profile-docs", "any", "--n", "6",
            "--results", str(results),
            "--max-prompt-tokens", "96", "--max-target-tokens", "8", "--k-heads", "1", "2", "--n-boot", "200",
            "--n-perm", "200"]


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    args = common(tiny_model_dir, results)
    pcs = pcs_ranking.main(args + RANK)
    abl = ablation_comparison.main(args + ABLATE)
    dps = dps_decoding.main(args + DPS)
    return results, pcs, abl, dps, args


def test_manifests_record_the_chat_and_framing_that_auto_resolved_to(finished):
    results, *_ = finished
    manifests = [json.loads(p.read_text()) for p in results.glob("*/*/seed*/*/manifest.json")]
    assert manifests
    for man in manifests:
        assert man["config"]["chat"] == "auto" and man["config"]["framing"] == "auto"
        assert man["prompting"]["chat"] is True  # the tiny models carry SmolLM2's tokenizer and its chat template
        assert man["prompting"]["framing"] in ("prefill", "instruction")


def test_pcs_ranking_writes_every_output(finished):
    _, pcs, _, _, _ = finished
    for name in ["head_scores.csv", "per_example.csv", "ranking.json", "pcs_heatmap.png", "overlap.md",
                 "overlap.tex", "overlap.csv", "stability.csv", "manifest.json", "signal.csv"]:
        assert (pcs.root / name).exists(), name
    scores = pd.read_csv(pcs.root / "head_scores.csv")
    assert len(scores) == 3 * 4 and scores.pcs.abs().sum() > 0
    man = json.loads((pcs.root / "manifest.json").read_text())
    assert man["provenance"][0]["commit"] and man["seed"] == 0 and man["data_sha256"] and "torch" in man["versions"]
    assert man["config_hash"] == pcs.config_hash and man["config"]["estimator"] == "attribution"
    ranking = Ranking.load(pcs.root)
    assert ranking.families == ["specific_pcs", "pcs", "contrast_pcs", "retrieval", "induction"]
    assert len(ranking.top("pcs", 2)) == 2 and ranking.config == man["config"]


def test_ablation_comparison_writes_tables_and_uses_only_evaluation_examples(finished):
    _, pcs, abl, _, _ = finished
    per = pd.read_csv(abl.root / "per_example.csv")
    assert not set(per.example_id) & set(Ranking.load(pcs.root).discovery_ids)
    assert {"specific_pcs@2", "pcs@2", "retrieval@2", "induction@2", "contrast_pcs@2"} <= set(per["set"])
    matched = per[per.family == "random_matched"]
    merged = json.loads((abl.root / "manifest.json").read_text())["copy_heads_merged"]  # retrieval ∪ induction
    named = {"specific_pcs", "pcs", "contrast_pcs", "retrieval", "induction"} | ({"copy_heads"} if merged else set())
    assert len(matched) == len(named) * (5 + 2) * per.example_id.nunique()  # each family's own null, at k = 2 and 1
    assert set(matched.matched_to) == named
    sets = {s["name"]: s for s in json.loads((abl.root / "head_sets.json").read_text())}
    for s in sets.values():  # --null-excludes-named (the default): no matched set holds its named set's heads
        if s["family"] == "random_matched":
            own = HeadSet.parse(sets[f"{s['matched_to']}@{s['k']}"]["heads"])
            assert not HeadSet.parse(s["heads"]) & own and len(HeadSet.parse(s["heads"])) == len(own)
    for outcome in ["nll_increase", "gain_lost", "generic_damage", "specific_gain_lost"]:
        table = pd.read_csv(abl.root / f"comparison_{outcome}.csv")
        assert table.p_holm.between(0, 1).all() and (table.p_holm >= table.p_wilcoxon - 1e-12).all()
    assert (abl.root / "effect_vs_k_gain_lost.png").exists() and (abl.root / "generation_rouge.md").exists()
    summary = pd.read_csv(abl.root / "set_summary.csv")
    assert (summary.null_matched_to == summary["set"] + "@2").all()  # each set placed in its own matched null
    assert (abl.root / "damage_matched.csv").exists() and (abl.root / "damage_matched.png").exists()
    assert len(pd.read_csv(abl.root / "damage_matched.csv")) == 5


def test_dps_study_writes_methods_table(finished):
    _, _, _, dps, _ = finished
    methods = pd.read_csv(dps.root / "methods.csv")
    assert {"no_profile", "profile", "rag", "cad", "stylevector", "dps-retrieval", "dps-random", "dps-specific_pcs",
            "dps-pcs", "dps-induction", "dps-contrast_pcs"} <= set(methods.generation)
    assert (dps.root / "delta_logits_example.png").exists()


def test_rerun_resumes_without_recomputing_and_keeps_provenance(finished, monkeypatch):
    results, pcs, abl, _, args = finished
    before = {p.name: p.read_text() for p in (pcs.root / "checkpoints").iterdir()}
    calls = []
    monkeypatch.setattr(ranking_module, "head_effects", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(ranking_module, "head_attributions", lambda *a, **k: calls.append(1))
    pcs_ranking.main(args + RANK)
    assert calls == [] and {p.name: p.read_text() for p in (pcs.root / "checkpoints").iterdir()} == before
    first = json.loads((abl.root / "manifest.json").read_text())["provenance"]
    tables = (abl.root / "comparison_gain_lost.csv").read_text()
    ablation_comparison.main(args + ABLATE)
    man = json.loads((abl.root / "manifest.json").read_text())
    assert man["provenance"] == first and first[0]["rows_computed"] > 0  # a resume that computed nothing adds none
    assert man["rendered_by"]["rows_computed"] == 0
    assert man["rendered_by"]["command"].startswith("python -m studies.ablation_comparison --preset quick")
    assert (abl.root / "comparison_gain_lost.csv").read_text() == tables


def test_changed_configuration_is_refused_naming_the_field(finished):
    _, _, _, _, args = finished
    with pytest.raises(RuntimeError, match=r"max_target_tokens: 8 -> 9"):
        pcs_ranking.main(args + RANK + ["--max-target-tokens", "9"])
    assert pcs_ranking.main(args + RANK + ["--seed", "1"]).root.parent.name == "seed1"  # a seed is its own run


def test_new_baseline_settings_are_refused_not_served_stale_scores(finished):
    """v1 reused baseline_scores.json whenever it existed, whatever --retrieval-prompts said."""
    _, _, _, _, args = finished
    with pytest.raises(RuntimeError, match=r"retrieval_prompts: 1 -> 2"):
        pcs_ranking.main(args + ["--retrieval-prompts", "2", "--induction-sequences", "2"])
    with pytest.raises(RuntimeError, match=r"induction_sequences: 2 -> 3"):
        pcs_ranking.main(args + ["--retrieval-prompts", "1", "--induction-sequences", "3"])


def test_dps_rerun_with_other_style_layers_is_refused(finished):
    """v1 left style_layers out of its config and resumed generations by method name."""
    _, _, _, _, args = finished
    with pytest.raises(RuntimeError, match=r"style_layers: \[1\] -> \[2\]"):
        dps_decoding.main(args + DPS[:-1] + ["2"])


def test_reranking_measures_the_new_heads_not_the_old_names(tiny_model_dir, tmp_path):
    """v1 keyed ablation checkpoints on set names: after a re-ranking, pcs@k reused the old heads' losses."""
    args = common(tiny_model_dir, tmp_path)
    pcs = pcs_ranking.main(args + RANK)
    ablation_comparison.main(args + ABLATE)
    ranking = Ranking.load(pcs.root)
    new = ranking.top("induction", 2) if ranking.top("induction", 2) != ranking.top("pcs", 2) \
        else ranking.top("retrieval", 2)
    assert new != ranking.top("pcs", 2)
    ranking.sets["pcs"][2] = new  # what a re-ranking (e.g. --fresh --estimator exact) leaves behind
    ranking.maps.pop("retrieval"), ranking.sets.pop("retrieval")  # and a family dropped: its sets are not measured
    ranking.save(pcs.root / "ranking.json")
    abl = ablation_comparison.main(args + ABLATE)
    per = pd.read_csv(abl.root / "per_example.csv").set_index(["example_id", "set"])
    assert set(per.xs("pcs@2", level="set").heads) == {str(new)}
    same = per[per.heads == str(new)].groupby("example_id").loss_own.agg(["min", "max"])
    assert (same["min"] == same["max"]).all()  # equal heads, equal losses, whatever the set is called


def test_a_registered_toy_family_reaches_ranking_ablation_and_dps(tiny_model_dir, tmp_path, monkeypatch):
    @register_head_scorer("toy_first_heads", label="toy: head index, reversed", uses_discovery=False)
    def toy(ctx):
        shape = ctx.setup.shape
        return HeadScores(-torch.arange(shape.n_heads, dtype=torch.float).repeat(shape.n_layers, 1))

    monkeypatch.setitem(config_module.PRESETS["quick"], "families",
                        [*config_module.PRESETS["quick"]["families"], "toy_first_heads"])
    try:
        args = common(tiny_model_dir, tmp_path)
        pcs = pcs_ranking.main(args + RANK)
        abl = ablation_comparison.main(args + ABLATE)
        dps = dps_decoding.main(args + DPS)
    finally:
        HEAD_SCORERS.pop("toy_first_heads")
    assert str(Ranking.load(pcs.root).top("toy_first_heads", 2)) == "L0H0,L1H0"
    assert "toy_first_heads" in set(pd.read_csv(abl.root / "set_summary.csv")["set"])
    assert "toy_first_heads@2" in set(pd.read_csv(abl.root / "comparison_gain_lost.csv").baseline)
    assert "dps-toy_first_heads" in set(pd.read_csv(dps.root / "methods.csv").generation)


def test_unknown_family_is_an_error_that_suggests_the_name(tiny_model_dir, tmp_path):
    with pytest.raises(KeyError, match="did you mean induction"):
        pcs_ranking.main(common(tiny_model_dir, tmp_path) + ["--families", "pcs", "inducton"])


def test_evaluation_on_ranking_examples_is_refused(finished, tmp_path):
    results, pcs, _, _, args = finished
    ranking = Ranking.load(pcs.root)
    per = pd.read_csv(next(results.glob("*/*/seed0/ablation_comparison/per_example.csv")))
    ranking.discovery_ids.append(per.example_id.iloc[0])
    ranking.save(tmp_path / "ranking.json")
    with pytest.raises(ValueError, match="used for head ranking"):
        ablation_comparison.main(args + ["--ranking-run", str(tmp_path), "--results", str(tmp_path / "r")])


def test_a_ranking_from_another_draw_is_refused(finished, tmp_path):
    _, pcs, _, _, args = finished
    with pytest.raises(ValueError, match=r"n: 6 -> 8"):
        ablation_comparison.main(args + ABLATE + ["--n", "8", "--ranking-run", str(pcs.root), "--results",
                                                  str(tmp_path)])


def test_paper_tables_are_generated_from_results(finished, tmp_path):
    results, _, _, dps, _ = finished
    out = paper_tables.main(["--results", str(results), "--out", str(tmp_path / "gen")])
    macros = (out / "macros.tex").read_text()
    assert "SignalEvaluationGainSpecificMean" in macros and "AblSpecificPcsSpecificGainLostMean" in macros
    appendix = next(out.glob("*-conventions2012.tex")).read_text()
    assert "Each named head set at the largest k" in appendix, appendix[:500]
    best = json.loads((dps.root / "manifest.json").read_text())["best_baseline"]  # the baseline's name, as a macro
    named = re.search(r"\\newcommand\{\\(\w+)DpsBestBaseline\}\{([^}]*)\}", macros)
    assert named and named.group(2) == paper.BASELINE_NAMES[best], (best, named)


def test_paper_tables_give_each_study_folder_its_measured_minutes(tmp_path):
    """The wall times the paper quotes are macros from the manifests: the sum of every run that computed rows (a
    resumed folder's parts add up); a folder only re-rendered (no provenance) gets no macro rather than a 0."""
    seed = tmp_path / "smollm2-135m" / "conventions2012" / "seed1"
    for study, manifest in {"dps_decoding": {"provenance": [{"seconds": 600.0}, {"seconds": 330.0}]},
                            "ablation_comparison-zero-all": {"provenance": [{"seconds": 59.0}]},
                            "pcs_ranking": {"rendered_by": {"commit": "abc"}}}.items():
        (seed / study).mkdir(parents=True)
        (seed / study / "manifest.json").write_text(json.dumps(manifest))
    numbers = paper.v2_numbers(tmp_path)
    assert numbers["SmolConvSeedOneDpsMinutes"] == (15.5, "16")
    assert numbers["SmolConvSeedOneAblZeroAllMinutes"].text == "1"
    assert not [k for k in numbers if "Ranking" in k]


def test_seeds_summary_reports_overlap_and_a_pooled_estimate(tiny_model_dir, tmp_path):
    from studies import seeds

    args = common(tiny_model_dir, tmp_path)
    for seed, null in (("0", []), ("1", ["--n-random", "3"])):  # seeds with nulls of different sizes still pool
        pcs_ranking.main(args + RANK + ["--seed", seed])
        ablation_comparison.main(args + ABLATE + null + ["--seed", seed])
    run = seeds.main(args + ["--seeds", "0", "1"])
    overlap = pd.read_csv(run.root / "overlap_across_seeds.csv")
    assert set(overlap.family) >= {"specific_pcs", "pcs"} and overlap.mean_jaccard.between(0, 1).all()
    by_seed = pd.read_csv(run.root / "set_summary_by_seed.csv")
    assert set(by_seed.seed.astype(str)) == {"0", "1", "pooled"}
    pooled = pd.read_csv(run.root / "comparison_pooled_specific_gain_lost.csv")
    assert pooled.name.iloc[0] == "specific_pcs@2" and len(pooled) == 5
    man = json.loads((run.root / "manifest.json").read_text())
    assert man["n_examples_pooled"] == 6  # 3 evaluation examples per seed
    assert man["n_sets_left_out"] > 0  # seed 0's random sets #3, #4 of each named set: measured on one seed only
    assert not pd.read_csv(run.root / "set_summary_by_seed.csv").query("seed == 'pooled'").empty
    assert set(by_seed.analysis) == {"exploratory"}  # a tiny model is in no declared family
    copies = pd.read_csv(run.root / "copy_heads.csv")
    assert list(copies.seed) == [0, 1] and copies.overlap.between(0, 1).all()
    seed_data = man["seed_data_sha256"]  # each seed's own draw, and a hash of them all (not the hash of no data)
    abl0 = Path(man["seed_runs"]["0"][1]) / "manifest.json"
    assert seed_data["0"] == json.loads(abl0.read_text())["data_sha256"] and set(seed_data) == {"0", "1"}
    assert man["data_sha256"] not in (hashlib.sha256(b"").hexdigest(), *seed_data.values())
    numbers = paper.v2_numbers(tmp_path)  # the pooled estimate reaches the paper as macros
    prefix = next(k for k in numbers if k.endswith("PooledSpecificPcsVsRandomMatchedMeanMean")).removesuffix(
        "SpecificPcsVsRandomMatchedMeanMean")
    assert numbers[prefix + "NExamples"].value == 6 and numbers[prefix + "Seeds"].value == 2
    vs_random = pooled[pooled.baseline == "random_matched_mean@2"].iloc[0]
    assert numbers[prefix + "SpecificPcsVsRandomMatchedMeanMean"].value == pytest.approx(vs_random.mean_diff, abs=5e-4)
    with pytest.raises(SystemExit, match="no finished run"):
        seeds.main(args + ["--seeds", "0", "7"])
    abl1 = Path(man["seed_runs"]["1"][1]) / "manifest.json"  # seed 1's ablation claims another draw: refused
    abl1.write_text(json.dumps({**json.loads(abl1.read_text()), "data_sha256": "0" * 64}))
    with pytest.raises(SystemExit, match="seed 1: its runs used different data"):
        seeds.main(args + ["--seeds", "0", "1"])


def test_every_study_ends_with_a_summary_read_from_its_files(finished, capsys):
    results, pcs, abl, dps, args = finished
    text = (results / "summary.md").read_text()
    assert text == summary.write(results).read_text()  # rebuilt from the files alone: the same after a resume
    best = json.loads((dps.root / "manifest.json").read_text())["best_baseline"]
    for expected in ["**Signal** (`pcs_ranking/signal.csv`", "- evaluation (3 users): gain_own",
                     "by ablating `specific_pcs@2`", "| layer-matched random@2 (mean) |",
                     "Each family's percentile in its own layer-matched random null", "Damage-matched",
                     f"**DPS vs the best baseline** `{best}`", "| dps-specific_pcs ", "| decore "]:
        assert expected in text, expected
    seed0 = str(pcs.root.parent.relative_to(results))  # other tests add seed1/
    listed = re.findall(rf"^- `({seed0}/.+?)/`", text, flags=re.M)
    assert listed == [str(r.root.relative_to(results)) for r in (pcs, abl, dps)]
    assert all((results / folder).is_dir() for folder in listed)
    comparison = pd.read_csv(abl.root / "comparison_specific_gain_lost.csv")
    row = next(line for line in text.splitlines() if line.startswith("| induction@2 "))
    assert tables.format_number(comparison.set_index("baseline").p_holm["induction@2"], p_value=True) in row
    pcs_ranking.main(args + RANK)  # a study prints its model and data's section when it ends
    assert "## " in capsys.readouterr().out


def test_pipeline_prints_the_summary_once_at_its_end(tiny_model_dir, tmp_path, capsys):
    from studies import pipeline

    pipeline.main(["--model", tiny_model_dir, "--results", str(tmp_path), "--stages", "pcs", "--no-paper", "--",
                   "--n", "6", "--max-prompt-tokens", "96", "--max-target-tokens", "8", "--k-heads", "2",
                   "--n-boot", "50", "--n-perm", "50"])
    out = capsys.readouterr().out
    assert len(re.findall(r"^## ", out, flags=re.M)) == 1 and "**Signal**" in out  # the stages' own were muted
    assert f"written to {tmp_path / 'summary.md'}" in out and (tmp_path / "summary.md").exists()
