"""paper/generated/ must be exactly what studies.paper_tables makes from the committed results/."""

import filecmp
from pathlib import Path

from studies import paper_tables

ROOT = Path(__file__).resolve().parents[1]


def test_generated_paper_files_are_fresh(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = paper_tables.main(["--results", "results", "--out", str(tmp_path)])
    committed = ROOT / "paper" / "generated"
    fresh = sorted(p.name for p in out.glob("*.tex"))
    assert fresh == sorted(p.name for p in committed.glob("*.tex")), "paper/generated has missing or extra files"
    stale = [name for name in fresh if not filecmp.cmp(out / name, committed / name, shallow=False)]
    assert not stale, f"stale: {stale}; run `python -m studies.paper_tables`"


def test_every_macro_used_in_the_paper_is_defined():
    import re

    text = "".join((ROOT / "paper" / name).read_text() for name in ("main.tex", "results.tex", "discussion.tex"))
    defined = set(re.findall(r"\\newcommand\{\\(\w+)\}", (ROOT / "paper" / "generated" / "macros.tex").read_text()))
    used = set(re.findall(r"\\(Conv\w+|Deb\w+)", text))
    assert used <= defined, f"undefined in macros.tex: {sorted(used - defined)}"
