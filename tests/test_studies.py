"""The studies end to end on a tiny random model: every output is written, reruns resume, leakage is refused."""

import json

import pandas as pd
import pytest

from studies import ablation_comparison, dps_decoding, paper_tables, pcs_ranking

pytestmark = pytest.mark.slow


def common(model, results):
    return ["--preset", "quick", "--model", model, "--data", "conventions2012", "--n", "6", "--results", str(results),
            "--max-prompt-tokens", "96", "--max-target-tokens", "8", "--ks", "1", "2"]


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    args = common(tiny_model_dir, results)
    pcs = pcs_ranking.main(args + ["--retrieval-prompts", "1", "--induction-sequences", "2", "--n-boot", "50"])
    abl = ablation_comparison.main(args + ["--n-random", "5", "--n-random-other", "2", "--n-boot", "200", "--n-perm", "200",
                                           "--max-new-tokens", "4"])
    dps = dps_decoding.main(args + ["--max-new-tokens", "4", "--gammas", "1.0", "--style-alphas", "1.0",
                                    "--style-layers", "1", "--n-boot", "200", "--n-perm", "200"])
    return results, pcs, abl, dps, args


def test_pcs_ranking_writes_every_output(finished):
    _, pcs, _, _, _ = finished
    for name in ["head_scores.csv", "per_example.csv", "top_heads.json", "pcs_heatmap.png", "overlap.md",
                 "overlap.tex", "overlap.csv", "stability.csv", "manifest.json", "clean_losses.csv"]:
        assert (pcs.root / name).exists(), name
    scores = pd.read_csv(pcs.root / "head_scores.csv")
    assert len(scores) == 3 * 4 and scores.pcs.abs().sum() > 0
    man = json.loads((pcs.root / "manifest.json").read_text())
    assert man["commit"] and man["seed"] == 0 and man["data_sha256"] and "torch" in man["versions"]


def test_ablation_comparison_writes_tables_and_uses_only_evaluation_examples(finished):
    _, pcs, abl, _, _ = finished
    per = pd.read_csv(abl.root / "per_example.csv")
    discovery = set(json.loads((pcs.root / "top_heads.json").read_text())["discovery_ids"])
    assert not set(per.example_id) & discovery
    assert {"pcs@2", "retrieval@2", "induction@2", "contrast_pcs@2"} <= set(per["set"])
    assert per["set"].str.startswith("random_matched#").sum() == (5 + 2) * per.example_id.nunique()
    for outcome in ["nll_increase", "gain_lost", "generic_damage"]:
        table = pd.read_csv(abl.root / f"comparison_{outcome}.csv")
        assert table.p_holm.between(0, 1).all() and (table.p_holm >= table.p_wilcoxon - 1e-12).all()
    assert (abl.root / "effect_vs_k_gain_lost.png").exists() and (abl.root / "generation_rouge.md").exists()


def test_dps_study_writes_methods_table(finished):
    _, _, _, dps, _ = finished
    methods = pd.read_csv(dps.root / "methods.csv")
    assert {"no_profile", "profile", "rag", "cad", "stylevector", "dps-retrieval", "dps-random",
            "dps-preference"} <= set(methods.method)
    assert (dps.root / "delta_logits_example.png").exists()


def test_rerun_resumes_without_recomputing(finished, monkeypatch):
    results, pcs, _, _, args = finished
    before = (pcs.root / "effects.jsonl").read_text()
    calls = []
    monkeypatch.setattr(pcs_ranking, "head_effects", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(pcs_ranking, "head_attributions", lambda *a, **k: calls.append(1))
    pcs_ranking.main(args + ["--retrieval-prompts", "1", "--induction-sequences", "2", "--n-boot", "50"])
    assert calls == [] and (pcs.root / "effects.jsonl").read_text() == before


def test_changed_configuration_is_refused_not_mixed(finished):
    _, _, _, _, args = finished
    with pytest.raises(RuntimeError, match="another configuration"):
        pcs_ranking.main(args + ["--seed", "1"])


def test_evaluation_on_ranking_examples_is_refused(finished, tmp_path):
    results, pcs, _, _, args = finished
    top = json.loads((pcs.root / "top_heads.json").read_text())
    per = pd.read_csv(results.glob("*/*/ablation_comparison/per_example.csv").__next__())
    top["discovery_ids"].append(per.example_id.iloc[0])
    (tmp_path / "top_heads.json").write_text(json.dumps(top))
    (tmp_path / "head_scores.csv").write_text((pcs.root / "head_scores.csv").read_text())
    with pytest.raises(ValueError, match="used for head ranking"):
        ablation_comparison.main(args + ["--pcs-run", str(tmp_path), "--results", str(tmp_path / "r")])


def test_paper_tables_are_generated_from_results(finished, tmp_path):
    results, *_ = finished
    out = paper_tables.main(["--results", str(results), "--out", str(tmp_path / "gen")])
    macros = (out / "macros.tex").read_text()
    assert "\\newcommand" in macros and "NDiscovery" in macros
    assert list(out.glob("*set_summary.tex"))
