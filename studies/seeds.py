"""Across split seeds: do the same heads come out, and what does the pooled evidence say?

    python -m studies.seeds --preset full --data conventions2012 --seeds 0 1 2

Reads the ranking and ablation runs of each seed (``results/<model>/<data>/seed<k>/``; run them first, e.g. with
``python -m studies.pipeline --seeds 0 1 2``) and writes ``all_seeds/seeds_summary[-<design>]/``: the top-k overlap of
every family across seeds (mean pairwise Jaccard), each seed's set summary, and the pooled estimate: every seed's
evaluation examples together, clustered by user (a user drawn into several evaluation splits counts once). The
arithmetic is :mod:`harness.study.across_seeds`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from harness.analysis import declared as analysis
from harness.analysis import outcomes, summary, tables
from harness.errors import ConfigError
from harness.runs.files import slug
from harness.runs.folder import Run
from harness.runs.provenance import hash_of
from harness.scorers.ranking import Ranking
from harness.study import across_seeds as across
from harness.study.config import PRIMARY_DESIGN, StudyConfig, option
from harness.study.lifecycle import begin
from harness.logs import cli

log = logging.getLogger("harness")


@dataclass
class SeedsConfig(StudyConfig):
    """A summary across split seeds of the ranking and ablation runs."""

    study = "seeds_summary"
    work = ()  # reads finished runs
    seeds: list[int] = option([0, 1, 2], "split seeds whose runs are summarized")

    def validate(self) -> None:
        """Refuse fewer than two seeds."""
        super().validate()
        if len(self.seeds) < 2:
            raise ConfigError(f"--seeds needs at least two seeds, got {self.seeds}")

    def folder(self, study: str | None = None) -> str:
        """``all_seeds/<study>[-<design>]``: beside the seed folders, not in one."""
        return super().folder(study).replace(f"seed{self.seed}/", "all_seeds/", 1)


def main(argv: list[str] | None = None) -> Run:
    """Read each seed's ranking and ablation runs, write the overlap, copy-head, per-seed and pooled tables."""
    cfg = SeedsConfig.from_argv(argv)
    begin(cfg)
    folders = across.seed_runs(cfg, cfg.seeds)
    data = across.seed_data(folders)
    run = Run.open(cfg.results, cfg.model, cfg.data, cfg.folder(), cfg.numbers_config(), fresh=cfg.fresh,
                   command=cfg.command())
    rankings = {s: Ranking.load(r) for s, (r, _) in folders.items()}
    overlap = across.overlap_rows(rankings, cfg.k_heads)
    tables.write_tables(overlap, across.OVERLAP_COLUMNS, run.root, "overlap_across_seeds")

    pooled = across.pool(folders)
    families, kmax = rankings[cfg.seeds[0]].families, max(cfg.k_heads)
    families += [analysis.COPY_HEADS] if f"{analysis.COPY_HEADS}@{kmax}" in pooled.common else []  # every seed merged
    measured = [o for o in outcomes.OUTCOMES if o in pooled.frame.columns]
    decl = analysis.load()
    copies = across.copy_rows(rankings, kmax, decl)
    tables.write_tables(copies, across.COPY_COLUMNS, run.root, "copy_heads",
                        caption=f"retrieval and induction top-k: at overlap >= {decl.copy_min_overlap} they enter the "
                                "declared family once, as their union")
    merged = bool(copies) and all(c["merged"] for c in copies)

    def family(row: dict) -> str:
        """The declared family of a row (the pooled estimate of the primary design only), else exploratory."""
        if row["seed"] != "pooled" or (cfg.mode, cfg.positions) != PRIMARY_DESIGN:
            return analysis.EXPLORATORY
        return decl.family_of(model=slug(cfg.model), data=slug(cfg.data), set=row["set"], k=row["k"],
                              outcome=row["outcome"], estimate="pooled_seeds", copy_merged=merged)
    rows = across.summary_rows(pooled.frame, measured, kmax, families, n_boot=cfg.n_boot, seed=cfg.seed)
    tables.write_tables([{**r, "analysis": family(r)} for r in rows],
                        [("seed", "seed")] + outcomes.SUMMARY_COLUMNS + [("analysis", "declared family")],
                        run.root, "set_summary_by_seed",
                        caption="the pooled rows of a declared family are its tests (Holm across the family in "
                                "summary.md); every other row is exploratory")
    across.write_pooled_comparisons(pooled.frame, measured, kmax, families, decl, run.root, n_perm=cfg.n_perm,
                                    n_boot=cfg.n_boot, seed=cfg.seed)
    log.info("top-%d overlap across seeds (mean Jaccard): %s", kmax, ", ".join(
        f"{r['family']} {r['mean_jaccard']:.2f}" for r in overlap if r["k"] == kmax))
    run.manifest(seed=cfg.seed, model=cfg.model, data=cfg.data, data_sha256=hash_of(data),
                 analysis_hash=analysis.current_hash(), extra={
        "seed_data_sha256": data,
        "seed_runs": {str(s): [str(p) for p in pair] for s, pair in folders.items()},
        "n_examples_pooled": int(pooled.frame.example_id.nunique()),
        "n_users_pooled": int(pooled.frame.user_id.nunique()),
        "n_sets_pooled": len(pooled.common), "n_sets_left_out": len(pooled.left_out)})
    summary.report(cfg.results, cfg.model, cfg.data)
    return run


if __name__ == "__main__":
    cli(main)
