"""Regenerate the paper's tables, figure includes and number macros from ``results/`` (nothing typed by hand).

    python -m studies.paper_tables [--results results] [--out paper/generated]
    python -m studies.paper_tables --claims        # every claim, its numbers and whether it holds; writes nothing

Writes ``<out>/macros.tex`` (every number the text may quote, from the v2 run folders
``results/<model>/<data>/seed<k>/<study>``), ``<out>/numbers.json`` (the same numbers at full precision: what
``paper/claims.toml`` is checked against) and one ``<out>/<model>-<data>.tex`` of appendix tables and figures per
results folder (:mod:`harness.analysis.paper`). ``tests/test_paper.py`` fails when the committed ``paper/generated/``
differs from what this produces or when a claim in the text no longer holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.analysis.paper import v2_numbers, write_generated
from harness.study.config import Options, option
from harness.logs import cli


@dataclass
class PaperConfig(Options):
    """Regenerate the paper's tables, figure includes and number macros from results/."""

    results: str = option("results", "results folder read", runtime=True)
    out: str = option("paper/generated", "folder the macros, numbers and appendix tables are written to",
                      runtime=True)
    claims: str | None = option(None, "print every claim of this file (the flag alone: paper/claims.toml) with its "
                                      "numbers and whether it holds for --results, and write nothing",
                                const="paper/claims.toml", runtime=True)


def main(argv: list[str] | None = None) -> Path:
    """Write the paper's generated files (or, with --claims, print the claims' check and write nothing)."""
    cfg = PaperConfig.from_argv(argv)
    if cfg.claims:
        from harness.analysis.claims import load_claims, report

        print(report(load_claims(cfg.claims), v2_numbers(Path(cfg.results))), flush=True)
        return Path(cfg.out)
    return write_generated(Path(cfg.results), Path(cfg.out))


if __name__ == "__main__":
    cli(main)
