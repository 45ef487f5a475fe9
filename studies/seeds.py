"""Across split seeds: do the same heads come out, and what does the pooled evidence say?

    python -m studies.seeds --preset full --data conventions2012 --seeds 0 1 2

Reads the ranking and ablation runs of each seed (``results/<model>/<data>/seed<k>/``; run them first, e.g. with
``python -m studies.pipeline --seeds 0 1 2``) and writes ``all_seeds/seeds_summary[-<design>]/``: the top-k overlap of
every family across seeds (mean pairwise Jaccard), each seed's set summary, and the pooled estimate: every seed's
evaluation examples together, clustered by user (a user drawn into several evaluation splits counts once).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.analysis import declared as analysis
from harness.analysis import outcomes
from harness.analysis import summary
from harness.analysis import tables
from harness.study.config import PRIMARY_DESIGN, StudyConfig, option
from harness.errors import ConfigError
from harness.intervene.heads import copy_heads
from harness.study.lifecycle import begin
from harness.scorers.ranking import Ranking, jaccard
from harness.runs.folder import Run
from harness.runs.provenance import hash_of, source_data
from harness.runs.files import slug

log = logging.getLogger("harness")


@dataclass
class SeedsConfig(StudyConfig):
    """A summary across split seeds of the ranking and ablation runs."""

    study = "seeds_summary"
    seeds: list[int] = option([0, 1, 2], "split seeds whose runs are summarized")

    def validate(self) -> None:
        super().validate()
        if len(self.seeds) < 2:
            raise ConfigError(f"--seeds needs at least two seeds, got {self.seeds}")

    def folder(self, study: str | None = None) -> str:
        return super().folder(study).replace(f"seed{self.seed}/", "all_seeds/", 1)


def seed_data(folders: dict[int, tuple[Path, ...]]) -> dict[str, str]:
    """Each seed's data hash (each seed is its own draw of examples), read off its runs' manifests; a seed whose runs
    disagree (a ranking and an ablation of different draws or corpus versions) is refused, naming both."""
    out = {}
    for s, runs in folders.items():
        hashes = source_data(runs)
        if len(set(hashes.values())) != 1:
            named = ", ".join(f"{p}: {h}" for p, h in hashes.items())
            raise SystemExit(f"seed {s}: its runs used different data ({named}); rerun them from the same "
                             f"--data/--n/--seed before pooling")
        out[str(s)] = next(iter(hashes.values()))
    return out


def main(argv: list[str] | None = None) -> Run:
    cfg = SeedsConfig.from_argv(argv)
    begin(cfg)
    base = Path(cfg.results) / slug(cfg.model) / slug(cfg.data)
    per_seed = {s: dataclasses.replace(cfg, seed=s) for s in cfg.seeds}
    folders = {s: (base / StudyConfig.folder(c, "pcs_ranking"), base / StudyConfig.folder(c, "ablation_comparison"))
               for s, c in per_seed.items()}
    missing = [str(p) for pair in folders.values() for p in pair if not (p / "manifest.json").exists()]
    if missing:
        raise SystemExit(f"no finished run in {', '.join(missing)}: run `python -m studies.pipeline --seeds "
                         f"{' '.join(map(str, cfg.seeds))}` (same --model/--data/--preset) first")
    data = seed_data(folders)
    run = Run.open(cfg.results, cfg.model, cfg.data, cfg.folder(), cfg.numbers_config(), fresh=cfg.fresh,
                   command=cfg.command())
    rankings = {s: Ranking.load(r) for s, (r, _) in folders.items()}
    overlap = [{"family": f, "k": k, "mean_jaccard": sum(jaccard(rankings[a].top(f, k), rankings[b].top(f, k))
                                                         for a, b in pairs) / len(pairs), "seeds": len(cfg.seeds)}
               for f in rankings[cfg.seeds[0]].families for k in cfg.k_heads
               for pairs in [list(itertools.combinations(cfg.seeds, 2))]]
    tables.write_tables(overlap, [("family", "head family"), ("k", "k"), ("mean_jaccard", "mean pairwise Jaccard"),
                                  ("seeds", "seeds")], run.root, "overlap_across_seeds")

    frames = []
    for s, (_, abl) in folders.items():
        frame = pd.read_csv(abl / "per_example.csv", keep_default_na=False)  # matched_to "" stays ""
        frames.append(frame.assign(seed=s, example_id=f"seed{s}:" + frame.example_id.astype(str)))
    # seeds may have nulls of different sizes (e.g. 100 layer-matched sets on one, the smaller null on another): pool
    # the head sets every seed measured (random sets pair by their index in the null), and name what is left out
    common = set.intersection(*(set(f.set) for f in frames))
    left_out = sorted(set().union(*(set(f.set) for f in frames)) - common)
    if left_out:
        log.info("pooling the %d head sets every seed measured; %d measured on some seeds only are left out (e.g. %s)",
                 len(common), len(left_out), left_out[0])
    pooled = pd.concat([f[f.set.isin(common)] for f in frames], ignore_index=True)
    families, kmax = rankings[cfg.seeds[0]].families, max(cfg.k_heads)
    families += [analysis.COPY_HEADS] if f"{analysis.COPY_HEADS}@{kmax}" in common else []  # every seed merged them
    measured = [o for o in outcomes.OUTCOMES if o in pooled.columns]
    stat = dict(n_boot=cfg.n_boot, seed=cfg.seed)
    decl = analysis.load()
    copies = [{"seed": s, "k": kmax, **{f: str(r.top(f, kmax)) for f in decl.copy_members}, "overlap": c.overlap,
               "shared": str(c.shared), "merged": c.merged}
              for s, r in rankings.items() if set(decl.copy_members) <= set(r.families)
              for c in [copy_heads(*(r.top(f, kmax) for f in decl.copy_members), min_overlap=decl.copy_min_overlap)]]
    tables.write_tables(copies, [("seed", "seed"), ("k", "k"), ("overlap", "overlap (shared / k)"),
                                 ("shared", "shared heads"), ("merged", "one copy_heads set")], run.root, "copy_heads",
                        caption=f"retrieval and induction top-k: at overlap >= {decl.copy_min_overlap} they enter the "
                                "declared family once, as their union")
    merged = bool(copies) and all(c["merged"] for c in copies)

    def family(row: dict) -> str:
        """The declared family of a row (the pooled estimate of the primary design only), else exploratory."""
        if row["seed"] != "pooled" or (cfg.mode, cfg.positions) != PRIMARY_DESIGN:
            return analysis.EXPLORATORY
        return decl.family_of(model=slug(cfg.model), data=slug(cfg.data), set=row["set"], k=row["k"],
                              outcome=row["outcome"], estimate="pooled_seeds", copy_merged=merged)
    rows = [{**r, "seed": s} for o in measured for s, grp in [*pooled.groupby("seed"), ("pooled", pooled)]
            for r in outcomes.set_summary(grp, o, kmax, families, **stat)]
    rows = [{**r, "analysis": family(r)} for r in rows]
    tables.write_tables(rows, [("seed", "seed")] + outcomes.SUMMARY_COLUMNS + [("analysis", "declared family")],
                        run.root, "set_summary_by_seed",
                        caption="the pooled rows of a declared family are its tests (Holm across the family in "
                                "summary.md); every other row is exploratory")
    for o in measured:
        comps = outcomes.compare_sets(pooled, o, kmax, families[0], families[1:], null_of=families[0],
                                      n_perm=cfg.n_perm, **stat)
        eqs = outcomes.comparison_equivalence(pooled, comps, alpha=decl.alpha,
                                              margin=outcomes.equivalence_margin(pooled, decl.margin_share))
        tables.write_tables(outcomes.comparison_records(comps, outcomes.comparison_mdes(pooled, comps), eqs),
                            outcomes.COMPARISON_COLUMNS, run.root, f"comparison_pooled_{o}",
                            caption="exploratory: differences from other head sets and from the random sets' mean "
                                    "(the declared test is the null position, summary.md)")
    log.info("top-%d overlap across seeds (mean Jaccard): %s", kmax, ", ".join(
        f"{r['family']} {r['mean_jaccard']:.2f}" for r in overlap if r["k"] == kmax))
    run.manifest(seed=cfg.seed, model=cfg.model, data=cfg.data, data_sha256=hash_of(data),
                 analysis_hash=analysis.current_hash(), extra={
        "seed_data_sha256": data,
        "seed_runs": {str(s): [str(p) for p in pair] for s, pair in folders.items()},
        "n_examples_pooled": int(pooled.example_id.nunique()), "n_users_pooled": int(pooled.user_id.nunique()),
        "n_sets_pooled": len(common), "n_sets_left_out": len(left_out)})
    summary.report(cfg.results, cfg.model, cfg.data)
    return run


if __name__ == "__main__":
    main()
