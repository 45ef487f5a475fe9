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

A family whose run is missing is named in the log and left out, never filled in.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.analysis import outcomes
from harness.analysis import plots
from harness.analysis import declared, tables
from harness.errors import ConfigError
from harness.study.config import StudyConfig, option
from harness.data.planted import FAMILIES
from harness.study.lifecycle import begin
from harness.scorers.ranking import Ranking, jaccard
from harness.runs.folder import Run
from harness.runs.provenance import hash_of, source_data
from harness.runs.files import slug

log = logging.getLogger("harness")

ABSTRACT = ("lexicon", "spelling", "case")  # rules that must be inferred, not copied verbatim
GAINS = ("gain_own", "gain_specific", "marker_gain_own", "marker_gain_specific")
# the outcome that carries each family's planted signal: the case rule is shared by most donors, so it lives in the
# profile gain (none − own), every other rule in the user-specific gain (other − own)
SIGNAL = {"case": "gain_lost"}


@dataclass
class KnownAnswerConfig(StudyConfig):
    """The planted-preference families side by side."""

    study = "known_answer"
    planted: list[str] = option(list(FAMILIES), "planted families whose runs are read", choices=FAMILIES)

    def family_data(self, family: str) -> str:
        return f"planted:{self.data}:{family}"


def _read(path: Path) -> pd.DataFrame | None:
    """A result CSV (None if the run did not write it), its intervals read back as pairs."""
    if not path.exists():
        return None
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if "ci" in frame:
        frame["ci"] = [tuple(json.loads(v)) if isinstance(v, str) else v for v in frame.ci]
    return frame


def _clean_gains(losses: pd.DataFrame, ids: set, column: str, prefix: str) -> dict[str, float]:
    """The clean gains the ``<prefix>specific_gain_lost`` and ``<prefix>gain_lost`` outcomes are shares of: other −
    own and none − own of the ``<column>_<condition>`` losses, averaged over the evaluation examples ``ids``."""
    part = losses[losses.example_id.isin(ids) & (losses.split == "evaluation")]
    own = part[f"{column}_own"]
    return {f"{prefix}specific_gain_lost": float((part[f"{column}_other"] - own).mean()),
            f"{prefix}gain_lost": float((part[f"{column}_none"] - own).mean())}


def _share_rows(frame: pd.DataFrame, gains: dict[str, float], gain_field: str, k: int, families: list[str], *,
                null: bool, stat: dict) -> list[dict]:
    """Per outcome of ``gains`` (outcome -> the clean gain it is a share of): each family's summary at ``k`` (and,
    with ``null``, each family's layer-matched random sets), with the gain under ``gain_field`` and the share of it;
    ``share_ci`` is the ratio CI of the summary's own share (the same examples' clean gains, users resampled)."""
    rows = []
    for outcome, total in gains.items():
        summaries = outcomes.set_summary(frame, outcome, k, families, **stat)
        if null:
            summaries += outcomes.matched_null_summary(frame, outcome, k, families, **stat)
        rows += [{**row, gain_field: total, "share": row["mean"] / total if total else float("nan")}
                 for row in summaries]
    return rows


def main(argv: list[str] | None = None) -> Run:
    cfg = KnownAnswerConfig.from_argv(argv)
    begin(cfg)
    if cfg.data.startswith("planted:"):
        raise ConfigError(f"--data is the base dataset (e.g. conventions2012), not a planted name: {cfg.data}")
    base = Path(cfg.results) / slug(cfg.model)
    runs = {f: {s: base / slug(cfg.family_data(f)) / StudyConfig.folder(cfg, s)
                for s in ("signal", "pcs_ranking", "ablation_comparison", "dps_decoding")} for f in cfg.planted}
    for fam, folders in runs.items():
        absent = [s for s, p in folders.items() if s != "signal" and not (p / "manifest.json").exists()]
        if absent:
            log.warning("planted %s: no finished %s run (%s): left out of those tables", fam, ", ".join(absent),
                        folders[absent[0]])
    run = Run.open(cfg.results, cfg.model, f"planted:{cfg.data}", cfg.folder(), cfg.numbers_config(),
                   fresh=cfg.fresh, command=cfg.command())
    stat = dict(n_boot=cfg.n_boot, seed=cfg.seed)

    signal_rows = []
    for fam, folders in runs.items():
        sig = next((t for t in (_read(folders[s] / "signal.csv") for s in ("signal", "ablation_comparison"))
                    if t is not None), None)  # every study measures the signal first; the signal study is optional
        if sig is not None and "group" in sig:
            part = sig[(sig.split == "evaluation") & sig.group.isin(["planted", "control"]) & sig.gain.isin(GAINS)]
            signal_rows += [{"family": fam, **r} for r in part.to_dict("records")]
    tables.write_tables(signal_rows, [("family", "family"), ("group", "users"), ("gain", "gain"), ("mean", "mean"),
                                      ("ci", "interval"), ("n_examples", "examples"), ("n_users", "users")],
                        run.root, "signal_by_family", caption="evaluation split; marker_*: NLL of the tokens the rule "
                        "changed (controls: would change)")

    removed, controls, markers, rankings = [], [], [], {}
    for fam, folders in runs.items():
        frame, losses = (_read(folders["ablation_comparison"] / "per_example.csv"),
                         _read(folders["ablation_comparison"] / "signal_losses.csv"))
        if (folders["pcs_ranking"] / "ranking.json").exists():
            rankings[fam] = Ranking.load(folders["pcs_ranking"])
        if frame is None or losses is None or fam not in rankings:
            continue
        frame["matched_to"] = frame.matched_to.fillna("")
        ids = {g: set(losses[losses.group == g].example_id) for g in ("planted", "control")}
        mine, theirs = (frame[frame.example_id.isin(ids[g])] for g in ("planted", "control"))  # evaluation examples
        clean = _clean_gains(losses, ids["planted"], "loss", "")
        kmax = max(k for k in rankings[fam].sets[rankings[fam].families[0]])
        removed += [{"family": fam, **row} for row in _share_rows(mine, clean, "planted_gain", kmax,
                                                                  rankings[fam].families, null=True, stat=stat)]
        # the same sets on the control users (no rule): what a set removes there is the users' own signal, which a
        # planted share of the whole-text gain also contains (Gemma-3's controls keep a specific gain of their own)
        n_controls = theirs.user_id.nunique()
        if n_controls >= 2:
            for outcome in clean:
                controls += [{"family": fam, **row, "n_users": n_controls} for row in outcomes.set_summary(
                    theirs, outcome, kmax, rankings[fam].families, **stat)]
        # the rule's tokens alone (ablation runs that measured them): the users' own signal lies mostly elsewhere
        if "marker_specific_gain_lost" in frame:
            for group, part in (("planted", mine), ("control", theirs)):
                part = part[part.marker_specific_gain_lost.notna()]
                if part.user_id.nunique() < 2:
                    continue
                totals = _clean_gains(losses, set(part.example_id), "marker", "marker_")
                markers += [{"family": fam, "users": group, **row, "n_users": int(part.user_id.nunique())}
                            for row in _share_rows(part, totals, "marker_gain", kmax, rankings[fam].families,
                                                   null=group == "planted", stat=stat)]
    tables.write_tables(removed, [("family", "family"), ("outcome", "outcome"), ("set", "head set"),
                                  ("mean", "gain lost"), ("ci", "interval"), ("share", "share of the planted gain"), ("share_ci", "share interval"),
                                  ("planted_gain", "planted gain"), ("p_wilcoxon", "p (vs 0)"), ("mde", "MDE"),
                                  ("null_percentile", "null pct."), ("p_null", "p (null)"),
                                  ("null_matched_to", "null matched to")], run.root, "gain_removed_by_family",
                        caption="planted users' evaluation examples; specific_gain_lost is a share of the planted users' "
                             "clean specific gain (other − own), gain_lost of their profile gain (none − own)")
    figure, ks = run.root / "gain_removed_by_family.png", "/".join(str(k) for k in sorted({r["k"] for r in removed}))
    drawn = removed and plots.share_panels(
        [{**r, "gain": r["planted_gain"]} for r in removed], figure, panel="family",
        outcome_of={f: SIGNAL.get(f, "specific_gain_lost") for f in runs}, ylabel="share of the planted gain removed",
        title=f"{cfg.model}, split seed {cfg.seed}: planted users, top-{ks} of each head family\n"
              "(95% CI; filled: null p ≤ .05 after Holm over the figure's sets; grey: layer-matched random sets)")
    if not drawn:
        figure.unlink(missing_ok=True)  # no family with a gain: an earlier render's figure must not outlive its data

    tables.write_tables(controls, [("family", "family"), ("outcome", "outcome"), ("set", "head set"),
                                   ("mean", "gain lost"), ("ci", "interval"), ("interval", "interval is"),
                                   ("mde", "MDE"), ("null_percentile", "null pct."), ("n_users", "users")],
                        run.root, "gain_removed_control_users",
                        caption="control users' evaluation examples (no planted rule), the same head sets as "
                                "gain_removed_by_family: set beside a planted row, what a set removes of the users' own "
                                "signal; with few control users the interval is the range of user means")

    tables.write_tables(markers, [("family", "family"), ("users", "users"), ("outcome", "outcome"),
                                  ("set", "head set"), ("mean", "gain lost"), ("ci", "interval"),
                                  ("interval", "interval is"), ("share", "share of the marker gain"), ("share_ci", "share interval"),
                                  ("marker_gain", "marker gain"), ("p_wilcoxon", "p (vs 0)"), ("mde", "MDE"),
                                  ("null_percentile", "null pct."), ("n_users", "users")],
                        run.root, "marker_gain_removed_by_family",
                        caption="the rule's tokens only (controls: the tokens it would change), evaluation examples "
                                "that score one: marker_specific_gain_lost is a share of the clean marker specific "
                                "gain (other − own), marker_gain_lost of the marker profile gain (none − own)")

    dps_rows = []
    for fam, folders in runs.items():
        marker = _read(folders["dps_decoding"] / "dps_marker_rate.csv")
        if marker is not None:
            dps_rows += [{"family": fam, **r} for r in marker[marker.outcome == "marker_rate"].to_dict("records")]
    tables.write_tables(dps_rows, [("family", "family"), ("name", "generation"), ("baseline", "vs"),
                                   ("mean_a", "marker rate"), ("mean_b", "baseline marker rate"),
                                   ("mean_diff", "difference"), ("ci", "interval"), ("p_holm", "p (Holm)"),
                                   ("mde", "MDE (80%, Holm)")],
                        run.root, "dps_marker_by_family", caption="planted users; Holm within each family's table")

    overlap = []
    if rankings:
        head_families = next(iter(rankings.values())).families
        k = max(next(iter(rankings.values())).sets[head_families[0]])
        for hf in head_families:
            for a, b in itertools.combinations(sorted(rankings), 2):
                top_a, top_b = rankings[a].top(hf, k), rankings[b].top(hf, k)
                overlap.append({"head_family": hf, "k": k, "planted_a": a, "planted_b": b,
                                "jaccard": jaccard(top_a, top_b), "shared": str(top_a & top_b) or "none"})
            shared = [rankings[f].top(hf, k) for f in ABSTRACT if f in rankings]
            if len(shared) > 1:
                common = set(shared[0].heads).intersection(*(s.heads for s in shared[1:]))
                overlap.append({"head_family": hf, "k": k, "planted_a": "+".join(f for f in ABSTRACT if f in rankings),
                                "planted_b": "(all abstract)", "jaccard": float("nan"),
                                "shared": ", ".join(sorted(str(h) for h in common)) or "none"})
    tables.write_tables(overlap, [("head_family", "head family"), ("k", "k"), ("planted_a", "planted family"),
                                  ("planted_b", "vs"), ("jaccard", "Jaccard"), ("shared", "heads shared")],
                        run.root, "overlap_across_families")
    read = source_data(p for folders in runs.values() for p in folders.values() if (p / "manifest.json").exists())
    run.manifest(seed=cfg.seed, model=cfg.model, data=f"planted:{cfg.data}", data_sha256=hash_of(read),
                 analysis_hash=declared.current_hash(), extra={
        "runs": {f: {s: str(p) for s, p in folders.items()} for f, folders in runs.items()}, "run_data_sha256": read})
    return run


if __name__ == "__main__":
    main()
