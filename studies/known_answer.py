"""Known answers: what the instrument finds on users whose preference was planted, one row per family.

    python -m studies.known_answer --data conventions2012 --planted signoff lexicon spelling case

Reads, for each planted family, the runs of ``--data planted:<data>:<family>`` (the signal, ranking, ablation and
DPS studies with the same preset and design; run them first) and writes ``results/<model>/planted-<data>/known_answer``:

- ``signal_by_family``: the planted users' and the control users' gains (whole text and marker tokens), evaluation
  (from the signal run, else from the ablation run, which measures the same signal first);
- ``gain_removed_by_family``: on planted users, the specific gain each family's top-k removes (``specific_gain_lost``)
  and the profile gain it removes (``gain_lost``: for ``case``, whose donors mostly write lowercase too, the planted
  signal is the profile gain), each with its interval, its share of the planted gain and its place in the
  layer-matched null; and the same for each family's layer-matched random sets (set ``random:<family>``, the mean
  over its random sets per example), the share that many heads on those layers remove by themselves; drawn in
  ``gain_removed_by_family.png``, a panel per family showing the outcome that carries its planted signal;
- ``gain_removed_control_users``: the same head sets on the control users (no rule), to set beside the planted rows;
- ``marker_gain_removed_by_family``: the same outcomes on the rule's tokens alone (controls: the tokens it would
  change), planted and control users, for ablation runs that measured them: free of the users' own signal, which
  lies mostly in the other tokens;
- ``dps_marker_by_family``: DPS against each baseline on the planted users' marker rate;
- ``overlap_across_families``: for each head family, the top-k Jaccard between planted families, and the heads that
  every abstract family (lexicon, spelling, case) shares.

A family whose run is missing is named in the log and left out, never filled in. The arithmetic is
:mod:`harness.study.across_planted`.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.analysis import declared, plots, tables
from harness.analysis import results as reader
from harness.data.planted import FAMILIES
from harness.errors import ConfigError
from harness.runs.folder import Run
from harness.runs.provenance import hash_of
from harness.study import across_planted as across
from harness.study.config import StudyConfig, option
from harness.study.lifecycle import begin
from harness.logs import cli


@dataclass
class KnownAnswerConfig(StudyConfig):
    """The planted-preference families side by side."""

    study = "known_answer"
    work = ()  # reads finished runs
    planted: list[str] = option(list(FAMILIES), "planted families whose runs are read", choices=FAMILIES)

    def family_data(self, family: str) -> str:
        """The ``--data`` name of ``family`` planted into this config's dataset."""
        return across.planted_data(self.data, family)


def main(argv: list[str] | None = None) -> Run:
    """Read each planted family's runs and write the known-answer tables and figure side by side."""
    cfg = KnownAnswerConfig.from_argv(argv)
    begin(cfg)
    if cfg.data.startswith("planted:"):
        raise ConfigError(f"--data is the base dataset (e.g. conventions2012), not a planted name: {cfg.data}")
    runs = across.family_runs(cfg, cfg.planted)
    run = Run.open(cfg.results, cfg.model, f"planted:{cfg.data}", cfg.folder(), cfg.numbers_config(),
                   fresh=cfg.fresh, command=cfg.command())

    tables.write_tables(across.signal_rows(runs), across.SIGNAL_COLUMNS, run.root, "signal_by_family",
                        caption="evaluation split; marker_*: NLL of the tokens the rule changed (controls: would "
                                "change)")
    removal = across.removal_rows(runs, n_boot=cfg.n_boot, seed=cfg.seed)
    removed = removal.removed
    tables.write_tables(removed, across.REMOVED_COLUMNS, run.root, "gain_removed_by_family",
                        caption="planted users' evaluation examples; specific_gain_lost is a share of the planted "
                                "users' clean specific gain (other − own), gain_lost of their profile gain "
                                "(none − own)")
    figure, ks = run.root / "gain_removed_by_family.png", "/".join(str(k) for k in sorted({r["k"] for r in removed}))
    drawn = removed and plots.share_panels(
        [{**r, "gain": r["planted_gain"]} for r in removed], figure, panel="family",
        outcome_of={f: across.SIGNAL.get(f, "specific_gain_lost") for f in runs},
        ylabel="share of the planted gain removed",
        title=f"{cfg.model}, split seed {cfg.seed}: planted users, top-{ks} of each head family\n"
              "(95% CI; filled: null p ≤ .05 after Holm over the figure's sets; grey: layer-matched random sets)")
    if not drawn:
        figure.unlink(missing_ok=True)  # no family with a gain: an earlier render's figure must not outlive its data
    tables.write_tables(removal.controls, across.CONTROL_COLUMNS, run.root, "gain_removed_control_users",
                        caption="control users' evaluation examples (no planted rule), the same head sets as "
                                "gain_removed_by_family: set beside a planted row, what a set removes of the users' "
                                "own signal; with few control users the interval is the range of user means")
    tables.write_tables(removal.markers, across.MARKER_COLUMNS, run.root, "marker_gain_removed_by_family",
                        caption="the rule's tokens only (controls: the tokens it would change), evaluation examples "
                                "that score one: marker_specific_gain_lost is a share of the clean marker specific "
                                "gain (other − own), marker_gain_lost of the marker profile gain (none − own)")
    tables.write_tables(across.dps_rows(runs), across.DPS_COLUMNS, run.root, "dps_marker_by_family",
                        caption="planted users; Holm within each family's table")
    tables.write_tables(across.overlap_rows(removal.rankings), across.OVERLAP_COLUMNS, run.root,
                        "overlap_across_families")
    read = reader.source_data(p for folders in runs.values() for p in folders.values() if reader.finished(p))
    run.manifest(seed=cfg.seed, model=cfg.model, data=f"planted:{cfg.data}", data_sha256=hash_of(read),
                 analysis_hash=declared.current_hash(), extra={
        "runs": {f: {s: str(p) for s, p in folders.items()} for f, folders in runs.items()}, "run_data_sha256": read})
    return run


if __name__ == "__main__":
    cli(main)
