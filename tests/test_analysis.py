"""The declared analysis (analysis.toml): validation, hash, family membership, Holm across a family, and the studies
held to it."""

import json
import re
import tomllib

import pytest

from harness.analysis import declared as analysis
from harness.analysis import results as reader
from harness.analysis import summary
from harness.analysis.declared import ANALYSIS_PATH, AnalysisError
from harness.runs.folder import Run


def declared() -> dict:
    return tomllib.loads(ANALYSIS_PATH.read_text())


def test_the_repository_declares_one_primary_comparison_inside_one_family():
    decl = analysis.load()
    fam = next(f for f in decl.families if f.name == decl.primary.family)
    assert decl.family_of(model=fam.models[0], data=fam.data[0], set=decl.primary.set, k=decl.primary.k,
                          outcome=decl.primary.outcome, estimate=decl.primary.estimate) == fam.name
    assert 0 < decl.alpha < 1 and len(decl.hash) == 16


def test_the_ablation_study_measures_the_declared_primary_outcome_family_and_null():
    """Fails when the study's primary outcome, primary family, k or null size departs from analysis.toml."""
    from studies.ablation_comparison import AblationConfig
    from studies.pcs_ranking import RankingConfig

    decl = analysis.load()
    assert reader.OUTCOME_ORDER[0] == decl.primary.outcome  # the outcome the summary and tables lead with
    families = RankingConfig.build({"preset": "full"}).families
    assert decl.conflicts(AblationConfig.build({"preset": "full"}).numbers_config(), families) == []
    quick = AblationConfig.build({"preset": "quick", "k_heads": [1, 3, 10]}).numbers_config()
    assert [c.split()[0] for c in decl.conflicts(quick, families[::-1])] == ["primary", "n_random"]


def test_the_hash_ignores_comments_and_layout_but_not_content(tmp_path):
    text = ANALYSIS_PATH.read_text()
    (tmp_path / "a.toml").write_text("# another comment\n\n" + text)
    (tmp_path / "b.toml").write_text(text.replace("alpha = 0.05", "alpha = 0.01"))
    assert analysis.load(tmp_path / "a.toml").hash == analysis.load().hash
    assert analysis.load(tmp_path / "b.toml").hash != analysis.load().hash


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(alpah=0.05), "unknown key 'alpah'; did you mean 'alpha'"),
    (lambda d: d.update(alpha=1.5), "alpha must lie in (0, 1)"),
    (lambda d: d["primary"].pop("outcome"), "[primary] lacks outcome"),
    (lambda d: d["primary"].update(estimate="per_user"), "primary.estimate = 'per_user' is not one of"),
    (lambda d: d["family"][0].update(sets=["pcs"]), "must lie in its declared family 'primary', found in "
                                                   "['positive_control']"),
    (lambda d: d["family"].append(dict(d["family"][0])), "two families share a name"),
    (lambda d: d["primary"].update(family="again"), "declared family 'again', found in ['primary'"),
    (lambda d: d["family"][0].update(name="exploratory"), "name must be a non-empty string other than"),
    (lambda d: d["copy_heads"].update(members=["retrieval"]), "must name two head families"),
    (lambda d: d["family"][0].update(models=[]), "models must be a non-empty list"),
])
def test_an_unusable_declaration_is_refused_naming_the_entry(edit, message):
    values = declared()
    edit(values)
    with pytest.raises(AnalysisError, match=re.escape(message)):
        analysis.parse(values)


def test_what_no_family_holds_is_exploratory():
    decl = analysis.load()
    p = decl.primary
    base = dict(model="smollm2-135m", data="sotu", set=p.set, k=p.k, outcome=p.outcome,
                estimate=p.estimate)
    assert decl.family_of(**base) == "primary"
    for change in ({"k": 3}, {"outcome": "gain_lost"}, {"data": "conventions2012"}, {"set": "pcs"},
                   {"estimate": "seed0"}, {"against": "random_matched_mean"}):
        assert decl.family_of(**{**base, **change}) == analysis.EXPLORATORY, change


def test_copy_heads_enter_once_where_merged_and_each_member_where_not():
    decl = analysis.load()
    fam = decl.families[0]
    merged = decl.members(fam, lambda m, d: m == fam.models[0])
    assert [s for m, _, s in merged if m == fam.models[0]] == ["specific_pcs", "copy_heads"]
    assert [s for m, _, s in merged if m == fam.models[1]] == ["specific_pcs", "retrieval", "induction"]
    base = dict(model=fam.models[0], data=fam.data[0], k=fam.k, outcome=fam.outcome, estimate=fam.estimate)
    assert decl.family_of(**base, set="retrieval") == analysis.EXPLORATORY  # merged: the union is the test
    assert decl.family_of(**base, set="retrieval", copy_merged=False) == fam.name


def test_holm_runs_over_the_whole_family_and_an_unmeasured_member_counts_as_p_one():
    decl = analysis.load()
    fam = decl.families[0]
    (m0, m1), d = fam.models[:2], fam.data[0]
    p = {(m0, d, "specific_pcs"): 0.001, (m0, d, "copy_heads"): 0.02, (m1, d, "specific_pcs"): 0.04}
    rows = analysis.family_tests(decl, fam, p, lambda m, dd: True)
    by = {(r["model"], r["set"]): r for r in rows}
    assert len(rows) == 4  # 2 models x (specific_pcs, copy_heads)
    assert by[m0, "specific_pcs"]["p_holm"] == pytest.approx(0.004)  # 4 tests: 0.001 * 4
    assert by[m0, "copy_heads"]["p_holm"] == pytest.approx(0.06) and not by[m0, "copy_heads"]["above_null"]
    assert by[m0, "specific_pcs"]["above_null"]
    assert by[m1, "copy_heads"]["status"].startswith("not measured") and not by[m1, "copy_heads"]["above_null"]


def test_every_manifest_records_the_declared_analysis_hash(tmp_path):
    run = Run.open(tmp_path, "m", "d", "seed0/study", {"study": "study"})
    with pytest.raises(TypeError, match="analysis_hash"):  # a manifest cannot leave the declaration out
        run.manifest(seed=0, model="m", data="d", data_sha256="x")
    run.manifest(seed=0, model="m", data="d", data_sha256="x", analysis_hash=analysis.current_hash())
    assert json.loads((run.root / "manifest.json").read_text())["analysis_hash"] == analysis.load().hash


def test_the_summary_names_runs_made_under_another_declaration(tmp_path):
    for study, h in (("signal", analysis.load().hash), ("pcs_ranking", "0123456789abcdef")):
        run = Run.open(tmp_path, "m", "d", f"seed0/{study}", {"study": study})
        run.manifest(seed=0, model="m", data="d", data_sha256="x", analysis_hash=h)
        path = run.root / "manifest.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "analysis_hash": h}))
    text = summary.write(tmp_path).read_text()
    assert "under analysis `0123456789abcdef`: `m/d/seed0/pcs_ranking`" in text
    assert "seed0/signal`" not in text.split("Made under")[1].splitlines()[0]
    assert "## Declared analysis" in text and "no results of its models and corpora here" in text
