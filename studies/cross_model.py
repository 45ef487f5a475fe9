"""Across models: where each head family's top-k sits in depth, and whether the sets agree across seeds and data.

    python -m studies.cross_model [--results results] [--k K]

Runs no model. Reads every finished v2 ranking, ``results/<model>/<data>/seed<k>/pcs_ranking/ranking.json`` (the v1
folders ``results/<model>/<data>/pcs_ranking``, without a seed level, are not read), and writes
``results/cross_model/`` (``cross_model-zero-all/`` for ``--ranking-folder pcs_ranking-zero-all``):

- ``depth``: per model, data folder, seed and head family, the top-k heads and their relative depth
  (layer / n_layers, n_layers from the family's ``[n_layers, n_heads]`` map), and per (model, family), over all its
  data folders and seeds, the mean relative depth and its range (and the heads that recur);
- ``overlap``: top-k Jaccard and shared heads across the seeds of one model, data folder and family, and across the
  data folders of one model at the same seed (a real dataset against each of its planted variants, the planted
  variants among themselves, then other datasets);
- ``contrast_vs_copy``: per model, data folder and seed, the ``specific_pcs`` and ``contrast_pcs`` top-k against the
  ``retrieval`` and ``induction`` top-k: are the contrast-PCS heads the copying heads?
- ``depth.png``: the relative depth of every family's top-k, one row per (model, family), a marker per data folder.

Every overlap row also gives the heads two uniformly random top-k sets of that model would share (k^2 / heads) and
the hypergeometric chance of sharing at least as many: models with 72 and 270 heads are compared on that scale.

k: ``--k`` everywhere, else the largest k common to the rankings compared (a model's rankings for its depth rows;
the two sets of an overlap; the two families of one ranking); every row names its k. A ranking without that k is
named in the log and left out, never filled in. ``--plan`` lists the rankings it would read and writes nothing.
The arithmetic is :mod:`harness.study.across_models`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.analysis import declared, tables
from harness.errors import ConfigError
from harness.logs import cli, configure as configure_logging
from harness.runs.files import slug
from harness.runs.folder import Run
from harness.study import across_models as across
from harness.study.config import Options, option


@dataclass
class CrossModelConfig(Options):
    """Every committed ranking side by side: depth, overlaps, contrast-PCS vs copying heads."""

    study = "cross_model"
    results: str = option("results", "results folder read, and written below (<results>/cross_model/)", runtime=True)
    k: int | None = option(None, "top-k compared everywhere (None: the largest k common to the rankings compared)")
    ranking_folder: str = option("pcs_ranking", "the ranking run's folder below seed<k>/, e.g. pcs_ranking-zero-all "
                                                "for that design, written to cross_model-zero-all/")
    fresh: bool = option(False, "discard a previous cross_model folder", runtime=True)
    verbose: bool = option(False, "show third-party messages", runtime=True)
    plan: bool = option(False, "list the rankings it would read and exit, writing nothing", runtime=True)

    def validate(self) -> None:
        """Refuse a --k below 1, naming the option."""
        super().validate()
        if self.k is not None and self.k < 1:
            raise ConfigError(f"--k must be >= 1, got {self.k}")

    @property
    def out_folder(self) -> str:
        """``cross_model``, or for another design's rankings (``pcs_ranking-zero-all``) ``cross_model-zero-all``."""
        design = self.ranking_folder.removeprefix("pcs_ranking")
        return self.study + (design if design.startswith("-") or not design else f"-{slug(self.ranking_folder)}")


def main(argv: list[str] | None = None) -> Run | None:
    """Read every ranking, write depth, overlap and contrast_vs_copy (and depth.png) and print their summary."""
    cfg = CrossModelConfig.from_argv(argv)
    configure_logging(cfg.verbose)
    results = Path(cfg.results)
    entries = across.load_entries(results, cfg.ranking_folder)
    if cfg.plan:
        print(across.plan_text(entries, results / cfg.out_folder, cfg.k), flush=True)
        raise SystemExit(0)
    run = Run.open_folder(results / cfg.out_folder, cfg.numbers_config(), fresh=cfg.fresh, command=cfg.command())
    k_text = f"k = {cfg.k}" if cfg.k else "k: the largest k common to the model's rankings"

    depth = across.depth_rows(entries, cfg.k)
    tables.write_tables(depth, across.DEPTH_COLUMNS, run.root, "depth", caption=(
        f"top-k heads per ranking and their relative depth (layer / n_layers); {k_text}; rows with data = all: the "
        "model's mean over every data folder and seed, its range, and its heads (xN: in N rankings)"))
    overlap = across.overlap_rows(entries, cfg.k)
    seeds_note = "" if any(r["comparison"] == "across seeds" for r in overlap) else \
        "; no model and data folder has more than one seed, so there are no across-seed rows"
    tables.write_tables(overlap, across.OVERLAP_COLUMNS, run.root, "overlap", caption=(
        "top-k Jaccard and shared heads, per head family: across the seeds of one model and data folder, and across "
        "the data folders of one model at the same seed (real vs planted, planted vs planted, other datasets); "
        f"{'k = ' + str(cfg.k) if cfg.k else 'k: the largest k both rankings hold'}{seeds_note}. The retrieval and "
        "induction scores are computed on constructed inputs, not on the data: across the data folders of one model "
        "and seed they agree by construction"))
    contrast = across.contrast_rows(entries, cfg.k)
    tables.write_tables(contrast, across.CONTRAST_COLUMNS, run.root, "contrast_vs_copy", caption=(
        "are the contrast-PCS heads the copying heads? The specific_pcs and contrast_pcs top-k against the retrieval "
        f"and induction top-k of the same ranking; {'k = ' + str(cfg.k) if cfg.k else 'k: the largest k both hold'}; "
        "by chance: the heads two uniformly random top-k sets of the model share on average, p (chance): the "
        "hypergeometric chance of sharing at least as many (a reference scale, not a test of a mechanism)"))
    across.depth_plot(depth, entries, run.path("depth.png"))

    run.manifest(seed=sorted({e.seed for e in entries}), model=across.model_order(entries),
                 analysis_hash=declared.current_hash(), data=sorted({e.data for e in entries}, key=across.data_order),
                 extra=across.read_record(entries, results))
    print(across.summary_text(entries, depth, overlap, contrast, run.root), flush=True)
    return run


if __name__ == "__main__":
    cli(main)
