"""paper/generated/ must be exactly what studies.paper_tables makes from the committed results/, and every claim the
paper states must hold for those results (paper/claims.toml, harness/analysis/claims.py)."""

import filecmp
import json
import re
import shutil
from pathlib import Path

import pytest

from harness.analysis.claims import check, load_claims
from harness.analysis import paper
from studies import paper_tables

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "paper"
CLAIMS = PAPER / "claims.toml"
PREFIXES = (*sorted(paper.MODEL_SHORT.values()), "Cross")  # model macros and studies.cross_model's


def paper_text() -> str:
    """The paper's LaTeX source: main.tex and every section file it inputs."""
    return "".join(p.read_text() for p in [PAPER / "main.tex", *sorted((PAPER / "sections").glob("*.tex"))])


def defined_macros() -> set[str]:
    return set(re.findall(r"\\newcommand\{\\(\w+)\}", (PAPER / "generated" / "macros.tex").read_text()))


def test_generated_paper_files_are_fresh(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = paper_tables.main(["--results", "results", "--out", str(tmp_path)])
    committed = PAPER / "generated"
    fresh = sorted(p.name for p in [*out.glob("*.tex"), *out.glob("*.json")])
    assert fresh == sorted(p.name for p in [*committed.glob("*.tex"), *committed.glob("*.json")]), \
        "paper/generated has missing or extra files"
    stale = [name for name in fresh if not filecmp.cmp(out / name, committed / name, shallow=False)]
    assert not stale, f"stale: {stale}; run `python -m studies.paper_tables`"


def test_every_macro_used_in_the_paper_is_defined():
    used = {m for m in re.findall(r"\\([A-Za-z]+)", paper_text()) if m.startswith(PREFIXES)}
    assert used <= defined_macros(), f"undefined in macros.tex: {sorted(used - defined_macros())}"


def test_every_claim_in_the_paper_holds_for_the_committed_results():
    numbers = paper.v2_numbers(ROOT / "results")
    problems = check(load_claims(CLAIMS), numbers, paper_text(), defined_macros())
    assert not problems, "\n".join(problems)


DESIGN_DECIMALS = {"0.05"}  # the test level alpha: a design choice, not a result


def test_the_paper_types_no_decimal_result_by_hand():
    """Results enter the prose as generated macros: a decimal number typed by hand is refused (design constants
    excepted)."""
    prose = re.sub(r"(?<!\\)%.*", "", paper_text())
    typed = [x for x in re.findall(r"(?<![\w\\{.])\d+\.\d+(?![\w}])", prose) if x not in DESIGN_DECIMALS]
    assert not typed, f"decimal numbers typed into the paper (use a generated macro): {typed}"


@pytest.fixture(scope="module")
def results_copy(tmp_path_factory):
    dst = tmp_path_factory.mktemp("results")
    shutil.copytree(ROOT / "results", dst, dirs_exist_ok=True)
    return dst


def _perturb(csv_path: Path, match: dict, change: tuple[float, float] | dict) -> None:
    """Move the one row matching ``match``: its ``ci`` to ``change`` (low, high), or the columns of a dict."""
    import pandas as pd

    table = pd.read_csv(csv_path)
    rows = (table[list(match)] == pd.Series(match)).all(axis=1)
    assert rows.sum() == 1, f"{csv_path}: {match} matches {rows.sum()} rows"
    for column, value in (change.items() if isinstance(change, dict) else [("ci", json.dumps(list(change)))]):
        assert column in table, f"{csv_path} has no column {column!r}"
        table.loc[rows, column] = value
    table.to_csv(csv_path, index=False)


@pytest.mark.parametrize("rel, match, change, claim", [
    ("smollm2-135m/conventions2012/seed0/signal/signal.csv",
     {"split": "evaluation", "gain": "gain_specific"}, (-0.01, 0.2), "signal-conv-specific"),
    ("smollm2-135m/planted-conventions2012/seed0/known_answer/gain_removed_by_family.csv",
     {"family": "signoff", "outcome": "specific_gain_lost", "set": "retrieval"}, (-0.02, 0.3),
     "planted-signoff-retrieval"),
    ("gemma3-270m/conventions2012/seed0/signal/signal.csv",
     {"split": "evaluation", "gain": "gain_specific"}, (-0.01, 0.2), "signal-gemma-conv-specific"),
    ("gemma3-270m/planted-conventions2012/seed0/known_answer/gain_removed_by_family.csv",
     {"family": "signoff", "outcome": "specific_gain_lost", "set": "pcs"}, (0.01, 0.1),
     "gemma-planted-signoff-heads"),
    ("gemma3-270m/planted-conventions2012/seed0/known_answer/gain_removed_by_family.csv",
     {"family": "case", "outcome": "gain_lost", "set": "pcs"}, (-0.1, 0.02), "gemma-planted-case-heads"),
    ("gemma3-270m/planted-conventions2012/seed0/known_answer/gain_removed_control_users.csv",
     {"family": "spelling", "outcome": "specific_gain_lost", "set": "induction"}, (0.01, 0.1),
     "gemma-planted-controls-removal"),
    ("gemma3-270m/planted-conventions2012/seed0/known_answer/gain_removed_by_family.csv",
     {"family": "spelling", "outcome": "specific_gain_lost", "set": "induction"}, (-0.02, 0.3),
     "gemma-planted-spelling-heads"),
    ("gemma3-270m/planted-conventions2012/seed0/known_answer/marker_gain_removed_by_family.csv",
     {"family": "spelling", "users": "planted", "outcome": "marker_specific_gain_lost", "set": "induction"},
     (-0.02, 0.3), "gemma-planted-marker-removal"),
    ("smollm2-135m/planted-conventions2012/seed0/known_answer/marker_gain_removed_by_family.csv",
     {"family": "case", "users": "planted", "outcome": "marker_gain_lost", "set": "contrast_pcs"}, (-0.02, 0.7),
     "planted-marker-removal"),
    ("gemma3-270m/planted-conventions2012/seed0/known_answer/dps_marker_by_family.csv",
     {"family": "case", "baseline": "cad"}, (-0.5, 0.1), "gemma-dps-planted-case"),
    ("gemma3-270m/conventions2012/all_seeds/seeds_summary/comparison_pooled_specific_gain_lost.csv",
     {"baseline": "random_matched_mean@10"}, (-0.01, 0.08), "gemma-pooled-specific"),
    ("gemma3-270m/conventions2012/seed0/dps_decoding/dps_vs_best_baseline.csv",
     {"name": "dps-random", "outcome": "style_similarity"}, (0.01, 0.09), "gemma-dps-real-style"),
    ("gemma3-270m/conventions2012/seed0/ablation_comparison-zero-all/comparison_specific_gain_lost.csv",
     {"baseline": "random_matched_mean@10"}, (-0.01, 0.2), "gemma-zeroall-specific"),
    ("gemma3-270m/conventions2012/seed1/ablation_comparison-zero-all/comparison_specific_gain_lost.csv",
     {"baseline": "random_matched_mean@10"}, (0.01, 0.1), "gemma-zeroall-seeds"),
    ("smollm2-135m/conventions2012/seed1/ablation_comparison-zero-all/set_summary.csv",
     {"set": "retrieval", "outcome": "specific_gain_lost"}, (0.01, 0.05), "smol-zeroall-seeds-copy"),
    ("cross_model-zero-all/contrast_vs_copy.csv",
     {"model": "smollm2-135m", "seed": 1, "family": "contrast_pcs", "vs": "retrieval"}, {"n_shared": 3},
     "cross-zeroall-smol-contrast-not-copy"),
    ("cross_model-zero-all/contrast_vs_copy.csv",
     {"model": "gemma3-270m", "seed": 2, "family": "contrast_pcs", "vs": "retrieval"}, {"n_shared": 4},
     "cross-zeroall-gemma-contrast"),
    ("cross_model/contrast_vs_copy.csv",
     {"model": "gemma3-270m", "data": "planted-conventions2012-signoff", "seed": 0, "family": "specific_pcs",
      "vs": "induction"},
     {"n_shared": 3}, "gemma-planted-signoff-not-copy"),
    ("smollm2-135m/planted-conventions2012/seed1/known_answer/gain_removed_by_family.csv",
     {"family": "signoff", "outcome": "specific_gain_lost", "set": "retrieval"}, (-0.02, 0.3),
     "planted-second-split-copy"),
    ("smollm2-135m/planted-conventions2012/seed1/known_answer/gain_removed_by_family.csv",
     {"family": "signoff", "outcome": "specific_gain_lost", "set": "specific_pcs"}, (0.001, 0.02),
     "planted-second-split-specific-pcs"),
    ("cross_model/overlap.csv",
     {"comparison": "across seeds", "model": "smollm2-135m", "family": "specific_pcs",
      "data_a": "planted-conventions2012-signoff"}, {"n_shared": 2}, "planted-second-split-smol-heads"),
    ("gemma3-270m/planted-conventions2012/seed1/known_answer/gain_removed_by_family.csv",
     {"family": "signoff", "outcome": "specific_gain_lost", "set": "retrieval"}, (-0.02, 0.6),
     "gemma-planted-second-split"),
    ("smollm2-135m/planted-conventions2012/seed1/known_answer/marker_gain_removed_by_family.csv",
     {"family": "case", "users": "planted", "outcome": "marker_gain_lost", "set": "retrieval"}, (-0.02, 0.9),
     "planted-second-split-case"),
    ("gemma3-270m/planted-conventions2012/seed1/known_answer/gain_removed_by_family.csv",
     {"family": "case", "outcome": "gain_lost", "set": "contrast_pcs"}, (-0.01, 0.3),
     "gemma-planted-second-split-case"),
    ("cross_model/overlap.csv",
     {"comparison": "across seeds", "model": "smollm2-135m", "family": "contrast_pcs",
      "data_a": "planted-conventions2012-case"}, {"n_shared": 1}, "planted-second-split-case-heads"),
    ("smollm2-135m/planted-conventions2012/seed1/known_answer/gain_removed_by_family.csv",
     {"family": "spelling", "outcome": "specific_gain_lost", "set": "pcs"}, (0.003, 0.032),
     "planted-second-split-spelling"),
    ("smollm2-135m/planted-conventions2012/seed1/known_answer/dps_marker_by_family.csv",
     {"family": "case", "baseline": "cad"}, (-0.5, 0.1), "dps-planted-case-second-split"),
    ("smollm2-135m/planted-conventions2012/seed1/known_answer/gain_removed_by_family.csv",
     {"family": "lexicon", "outcome": "specific_gain_lost", "set": "retrieval"}, (0.001, 0.03),
     "planted-second-split-lexicon"),
    ("gemma3-270m/planted-conventions2012/seed1/known_answer/signal_by_family.csv",
     {"family": "lexicon", "group": "planted", "gain": "marker_gain_specific"}, (0.01, 0.5),
     "gemma-planted-second-split-lexicon"),
    ("gemma3-270m/planted-conventions2012/seed1/known_answer/gain_removed_by_family.csv",
     {"family": "spelling", "outcome": "specific_gain_lost", "set": "retrieval"}, (-0.02, 0.3),
     "gemma-planted-second-split-spelling"),
    ("smollm2-135m/planted-conventions2012/seed1/known_answer/dps_marker_by_family.csv",
     {"family": "signoff", "baseline": "cad"}, (-0.5, 0.1), "dps-planted-signoff-second-split"),
    ("gemma3-270m/planted-conventions2012-lexicon/seed0/dps_decoding/marker_rate_by_method.csv",
     {"group": "planted", "generation": "cad"}, {"marker_rate_ci": "[0.0, 1.0]"}, "gemma-dps-planted-lexicon"),
])
def test_a_perturbed_committed_number_breaks_exactly_its_claim(results_copy, rel, match, change, claim):
    """On a temporary copy of results/: moving one committed number (an interval across zero, a count of shared heads)
    makes its claim fail, by id."""
    target = results_copy / rel
    saved = target.read_bytes()
    try:
        numbers = paper.v2_numbers(results_copy)
        claims = load_claims(CLAIMS)
        assert check(claims, numbers, paper_text(), defined_macros()) == []
        _perturb(target, match, change)
        problems = check(claims, paper.v2_numbers(results_copy), paper_text(), defined_macros())
        assert len(problems) == 1 and problems[0].startswith(f"claim {claim!r} no longer holds"), problems
    finally:
        target.write_bytes(saved)


def test_a_claim_stated_without_an_entry_in_the_claims_file_fails(tmp_path):
    numbers = paper.v2_numbers(ROOT / "results")
    text = paper_text() + r"\claim{unheld}{heads carry preference}"
    assert check(load_claims(CLAIMS), numbers, text) == [
        "the text states claim 'unheld', which the claims file does not hold"]


def test_a_p_value_macro_carries_its_relation_and_typesets_in_math_mode():
    """The text writes ``$p\\Macro$``: a value prints ``= 0.031``, a small one ``= 5.0 x 10^-4`` and one below the
    tables' floor ``< 10^-4`` (never ``p = <1e-4``, and never \\textless, which is text mode only)."""
    assert paper.fmt_p(1e-6) == r"\ensuremath{<10^{-4}}"
    assert paper.fmt_p(0.0312) == r"\ensuremath{=0.031}"
    assert paper.fmt_p(5e-4) == r"\ensuremath{=5.0\times10^{-4}}"


def test_the_text_writes_no_relation_before_a_p_value_macro():
    """A p macro prints its own relation, so ``p=\\Macro`` in the text would read ``p = = 0.031``."""
    numbers = paper.v2_numbers(ROOT / "results")
    p_macros = {name for name, n in numbers.items() if n.text.startswith(r"\ensuremath{=") or
                n.text.startswith(r"\ensuremath{<")}
    assert p_macros, "no p-value macro was generated"
    doubled = sorted(set(re.findall(r"[=<>]\s*\\([A-Za-z]+)", paper_text())) & p_macros)
    assert not doubled, f"the text writes a relation before p macros that carry their own: {doubled}"


def test_a_number_below_the_fourth_decimal_typesets_as_a_power_of_ten():
    """0.000 would hide a CI end's sign and size, and ``2.3e-05`` is not how a paper prints it."""
    assert paper.fmt(2.3e-5) == r"\ensuremath{2.3\times10^{-5}}"
    assert paper.fmt(-8.3e-5) == r"\ensuremath{-8.3\times10^{-5}}"
    assert paper.fmt(0.0123) == "0.012" and paper.fmt(0.0) == "0.000"
