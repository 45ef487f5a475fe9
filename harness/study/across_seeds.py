"""Split seeds side by side and pooled (studies.seeds): each seed's ranking and ablation runs found and checked, the
top-k overlap across seeds, every seed's evaluation examples pooled (clustered by user: a user drawn into several
evaluation splits counts once), and the set summaries and comparisons on them.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..analysis import declared as analysis
from ..analysis import outcomes, tables
from ..analysis import results as reader
from ..intervene.heads import copy_heads
from ..scorers.ranking import Ranking, topk_overlap
from .config import StudyConfig

log = logging.getLogger("harness")

STUDIES = ("pcs_ranking", "ablation_comparison")  # the runs each seed contributes
OVERLAP_COLUMNS = [("family", "head family"), ("k", "k"), ("mean_jaccard", "mean pairwise Jaccard"), ("seeds", "seeds")]
COPY_COLUMNS = [("seed", "seed"), ("k", "k"), ("overlap", "overlap (shared / k)"), ("shared", "shared heads"),
                ("merged", "one copy_heads set")]


def seed_runs(cfg: StudyConfig, seeds: Sequence[int]) -> dict[int, tuple[Path, Path]]:
    """Each seed's ranking and ablation run folders (same model, data, preset and design as ``cfg``); a run not
    finished is an error naming every missing folder and the command that makes them."""
    folders = {s: tuple(reader.run_folder(cfg.results, cfg.model, cfg.data,
                                          StudyConfig.folder(dataclasses.replace(cfg, seed=s), study))
                        for study in STUDIES) for s in seeds}
    missing = [str(p) for pair in folders.values() for p in pair if not reader.finished(p)]
    if missing:
        raise SystemExit(f"no finished run in {', '.join(missing)}: run `python -m studies.pipeline --seeds "
                         f"{' '.join(map(str, seeds))}` (same --model/--data/--preset) first")
    return folders


def seed_data(folders: dict[int, tuple[Path, ...]]) -> dict[str, str]:
    """Each seed's data hash (each seed is its own draw of examples), read off its runs' manifests; a seed whose runs
    disagree (a ranking and an ablation of different draws or corpus versions) is refused, naming both."""
    out = {}
    for s, runs in folders.items():
        hashes = reader.source_data(runs)
        if len(set(hashes.values())) != 1:
            named = ", ".join(f"{p}: {h}" for p, h in hashes.items())
            raise SystemExit(f"seed {s}: its runs used different data ({named}); rerun them from the same "
                             f"--data/--n/--seed before pooling")
        out[str(s)] = next(iter(hashes.values()))
    return out


def overlap_rows(rankings: dict[int, Ranking], k_heads: Sequence[int]) -> list[dict]:
    """Per family of the first seed's ranking and per k: the mean top-k Jaccard over every pair of seeds."""
    seeds = list(rankings)
    pairs = list(itertools.combinations(seeds, 2))
    return [{"family": f, "k": k, "mean_jaccard": sum(topk_overlap(rankings[a].top(f, k), rankings[b].top(f, k))
                                                      ["jaccard"] for a, b in pairs) / len(pairs), "seeds": len(seeds)}
            for f in rankings[seeds[0]].families for k in k_heads]


@dataclass(frozen=True)
class Pooled:
    """Every seed's per-example ablation rows together (example ids prefixed ``seed<k>:``), on the head sets every
    seed measured, and the sets measured on some seeds only (left out)."""

    frame: pd.DataFrame
    common: set[str]
    left_out: list[str]


def pool(folders: dict[int, tuple[Path, Path]]) -> Pooled:
    """The seeds' ablation runs' ``per_example.csv`` pooled. Seeds may have nulls of different sizes (e.g. 100
    layer-matched sets on one, the smaller null on another): the head sets every seed measured are pooled (random
    sets pair by their index in the null), and the others named in the log."""
    frames = []
    for s, (_, abl) in folders.items():
        frame = reader.table(abl, "per_example", na=())  # matched_to "" stays ""
        frames.append(frame.assign(seed=s, example_id=f"seed{s}:" + frame.example_id.astype(str)))
    common = set.intersection(*(set(f.set) for f in frames))
    left_out = sorted(set().union(*(set(f.set) for f in frames)) - common)
    if left_out:
        log.info("pooling the %d head sets every seed measured; %d measured on some seeds only are left out (e.g. %s)",
                 len(common), len(left_out), left_out[0])
    return Pooled(pd.concat([f[f.set.isin(common)] for f in frames], ignore_index=True), common, left_out)


def copy_rows(rankings: dict[int, Ranking], k: int, decl: analysis.Analysis) -> list[dict]:
    """Per seed whose ranking holds the declared copying families: their top-k, overlap and whether they enter the
    declared family once, as their union (``heads.copy_heads``)."""
    return [{"seed": s, "k": k, **{f: str(r.top(f, k)) for f in decl.copy_members}, "overlap": c.overlap,
             "shared": str(c.shared), "merged": c.merged}
            for s, r in rankings.items() if set(decl.copy_members) <= set(r.families)
            for c in [copy_heads(*(r.top(f, k) for f in decl.copy_members), min_overlap=decl.copy_min_overlap)]]


def summary_rows(pooled: pd.DataFrame, measured: Sequence[str], k: int, families: list[str], *,
                 n_boot: int, seed: int) -> list[dict]:
    """Each named set's summary per outcome, per seed and pooled (``seed == "pooled"``)."""
    return [{**r, "seed": s} for o in measured for s, grp in [*pooled.groupby("seed"), ("pooled", pooled)]
            for r in outcomes.set_summary(grp, o, k, families, n_boot=n_boot, seed=seed)]


def write_pooled_comparisons(pooled: pd.DataFrame, measured: Sequence[str], k: int, families: list[str],
                             decl: analysis.Analysis, out_dir: Path, *, n_perm: int, n_boot: int, seed: int) -> None:
    """``comparison_pooled_<outcome>``: the first family against the others and its matched random sets, on the
    pooled examples (differences, MDEs and equivalence; exploratory)."""
    for o in measured:
        comps = outcomes.compare_sets(pooled, o, k, families[0], families[1:], null_of=families[0],
                                      n_perm=n_perm, n_boot=n_boot, seed=seed)
        eqs = outcomes.comparison_equivalence(pooled, comps, alpha=decl.alpha,
                                              margin=outcomes.equivalence_margin(pooled, decl.margin_share))
        tables.write_tables(outcomes.comparison_records(comps, outcomes.comparison_mdes(pooled, comps), eqs),
                            outcomes.COMPARISON_COLUMNS, out_dir, f"comparison_pooled_{o}",
                            caption="exploratory: differences from other head sets and from the random sets' mean "
                                    "(the declared test is the null position, summary.md)")
