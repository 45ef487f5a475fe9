"""Planted-preference families side by side (studies.known_answer): each family's signal, ranking, ablation and DPS
runs found through :mod:`harness.analysis.results`, and the rows of its tables: the planted and control users' gains,
the share of the planted gain each head family's top-k removes (and its layer-matched random sets), the same sets on
the control users and on the rule's tokens alone, DPS's marker rate, and the top-k overlap across planted families.
A family whose run is missing is named in the log and left out, never filled in.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..analysis import outcomes
from ..analysis import results as reader
from ..data.planted import PREFIX
from ..scorers.ranking import Ranking, topk_overlap
from .config import StudyConfig

log = logging.getLogger("harness")

STUDIES = ("signal", "pcs_ranking", "ablation_comparison", "dps_decoding")  # the runs each planted family has
ABSTRACT = ("lexicon", "spelling", "case")  # rules that must be inferred, not copied verbatim
GAINS = ("gain_own", "gain_specific", "marker_gain_own", "marker_gain_specific")
# the outcome that carries each family's planted signal: the case rule is shared by most donors, so it lives in the
# profile gain (none − own), every other rule in the user-specific gain (other − own)
SIGNAL = {"case": "gain_lost"}

SIGNAL_COLUMNS = [("family", "family"), ("group", "users"), ("gain", "gain"), ("mean", "mean"), ("ci", "interval"),
                  ("n_examples", "examples"), ("n_users", "users")]
REMOVED_COLUMNS = [("family", "family"), ("outcome", "outcome"), ("set", "head set"), ("mean", "gain lost"),
                   ("ci", "interval"), ("share", "share of the planted gain"), ("share_ci", "share interval"),
                   ("planted_gain", "planted gain"), ("p_wilcoxon", "p (vs 0)"), ("mde", "MDE"),
                   ("null_percentile", "null pct."), ("p_null", "p (null)"), ("null_matched_to", "null matched to")]
CONTROL_COLUMNS = [("family", "family"), ("outcome", "outcome"), ("set", "head set"), ("mean", "gain lost"),
                   ("ci", "interval"), ("interval", "interval is"), ("mde", "MDE"), ("null_percentile", "null pct."),
                   ("n_users", "users")]
MARKER_COLUMNS = [("family", "family"), ("users", "users"), ("outcome", "outcome"), ("set", "head set"),
                  ("mean", "gain lost"), ("ci", "interval"), ("interval", "interval is"),
                  ("share", "share of the marker gain"), ("share_ci", "share interval"), ("marker_gain", "marker gain"),
                  ("p_wilcoxon", "p (vs 0)"), ("mde", "MDE"), ("null_percentile", "null pct."), ("n_users", "users")]
DPS_COLUMNS = [("family", "family"), ("name", "generation"), ("baseline", "vs"), ("mean_a", "marker rate"),
               ("mean_b", "baseline marker rate"), ("mean_diff", "difference"), ("ci", "interval"),
               ("p_holm", "p (Holm)"), ("mde", "MDE (80%, Holm)")]
OVERLAP_COLUMNS = [("head_family", "head family"), ("k", "k"), ("planted_a", "planted family"), ("planted_b", "vs"),
                   ("jaccard", "Jaccard"), ("shared", "heads shared")]


def planted_data(data: str, family: str) -> str:
    """The ``--data`` name of ``family`` planted into the base dataset ``data``: ``planted:<data>:<family>``."""
    return f"{PREFIX}{data}:{family}"


def family_runs(cfg: StudyConfig, families: Sequence[str]) -> dict[str, dict[str, Path]]:
    """Per planted family, the run folder of each study of :data:`STUDIES` (same preset and design as ``cfg``); a
    family missing a finished run other than the optional signal study is named in the log."""
    runs = {f: {s: reader.run_folder(cfg.results, cfg.model, planted_data(cfg.data, f), StudyConfig.folder(cfg, s))
                for s in STUDIES} for f in families}
    for fam, folders in runs.items():
        absent = [s for s, p in folders.items() if s != "signal" and not reader.finished(p)]
        if absent:
            log.warning("planted %s: no finished %s run (%s): left out of those tables", fam, ", ".join(absent),
                        folders[absent[0]])
    return runs


def _read(folder: Path, stem: str) -> pd.DataFrame | None:
    """A family run's table (None if not written), names read literally and intervals as pairs."""
    return reader.table(folder, stem, na=("",), pairs=True)


def signal_rows(runs: dict[str, dict[str, Path]]) -> list[dict]:
    """Per family, the planted and control users' evaluation gains (:data:`GAINS`), from the signal run, else from
    the ablation run (every study measures the signal first; the signal study is optional)."""
    rows = []
    for fam, folders in runs.items():
        sig = next((t for t in (_read(folders[s], "signal") for s in ("signal", "ablation_comparison"))
                    if t is not None), None)
        if sig is not None and "group" in sig:
            part = sig[(sig.split == "evaluation") & sig.group.isin(["planted", "control"]) & sig.gain.isin(GAINS)]
            rows += [{"family": fam, **r} for r in part.to_dict("records")]
    return rows


def clean_gains(losses: pd.DataFrame, ids: set, column: str, prefix: str) -> dict[str, float]:
    """The clean gains the ``<prefix>specific_gain_lost`` and ``<prefix>gain_lost`` outcomes are shares of: other −
    own and none − own of the ``<column>_<condition>`` losses, averaged over the evaluation examples ``ids``."""
    part = losses[losses.example_id.isin(ids) & (losses.split == "evaluation")]
    own = part[f"{column}_own"]
    return {f"{prefix}specific_gain_lost": float((part[f"{column}_other"] - own).mean()),
            f"{prefix}gain_lost": float((part[f"{column}_none"] - own).mean())}


def share_rows(frame: pd.DataFrame, gains: dict[str, float], gain_field: str, k: int, families: list[str], *,
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


@dataclass
class Removal:
    """What each family's top-k removes: of the planted users' gain, on the control users, on the rule's tokens
    alone; and the rankings read (family -> its ranking run's ranking)."""

    removed: list[dict] = field(default_factory=list)
    controls: list[dict] = field(default_factory=list)
    markers: list[dict] = field(default_factory=list)
    rankings: dict[str, Ranking] = field(default_factory=dict)


def removal_rows(runs: dict[str, dict[str, Path]], *, n_boot: int, seed: int) -> Removal:
    """Per family with a ranking and an ablation run: the shares each head family's top-k (largest k) removes of the
    planted users' gains (with the layer-matched null), the same sets on the control users (with at least two), and
    on the rule's tokens alone (ablation runs that measured them; planted and control users)."""
    out, stat = Removal(), dict(n_boot=n_boot, seed=seed)
    for fam, folders in runs.items():
        frame = _read(folders["ablation_comparison"], "per_example")
        losses = _read(folders["ablation_comparison"], "signal_losses")
        if (folders["pcs_ranking"] / reader.RANKING).exists():
            out.rankings[fam] = Ranking.load(folders["pcs_ranking"])
        if frame is None or losses is None or fam not in out.rankings:
            continue
        ranking = out.rankings[fam]
        frame["matched_to"] = frame.matched_to.fillna("")
        ids = {g: set(losses[losses.group == g].example_id) for g in ("planted", "control")}
        mine, theirs = (frame[frame.example_id.isin(ids[g])] for g in ("planted", "control"))  # evaluation examples
        clean = clean_gains(losses, ids["planted"], "loss", "")
        kmax = max(k for k in ranking.sets[ranking.families[0]])
        out.removed += [{"family": fam, **row} for row in share_rows(mine, clean, "planted_gain", kmax,
                                                                     ranking.families, null=True, stat=stat)]
        # the same sets on the control users (no rule): what a set removes there is the users' own signal, which a
        # planted share of the whole-text gain also contains (Gemma-3's controls keep a specific gain of their own)
        n_controls = theirs.user_id.nunique()
        if n_controls >= 2:
            for outcome in clean:
                out.controls += [{"family": fam, **row, "n_users": n_controls} for row in outcomes.set_summary(
                    theirs, outcome, kmax, ranking.families, **stat)]
        # the rule's tokens alone (ablation runs that measured them): the users' own signal lies mostly elsewhere
        if "marker_specific_gain_lost" in frame:
            for group, part in (("planted", mine), ("control", theirs)):
                part = part[part.marker_specific_gain_lost.notna()]
                if part.user_id.nunique() < 2:
                    continue
                totals = clean_gains(losses, set(part.example_id), "marker", "marker_")
                out.markers += [{"family": fam, "users": group, **row, "n_users": int(part.user_id.nunique())}
                                for row in share_rows(part, totals, "marker_gain", kmax, ranking.families,
                                                      null=group == "planted", stat=stat)]
    return out


def dps_rows(runs: dict[str, dict[str, Path]]) -> list[dict]:
    """Per family with a DPS run: each generation against each baseline on the planted users' marker rate."""
    rows = []
    for fam, folders in runs.items():
        marker = _read(folders["dps_decoding"], "dps_marker_rate")
        if marker is not None:
            rows += [{"family": fam, **r} for r in marker[marker.outcome == "marker_rate"].to_dict("records")]
    return rows


def overlap_rows(rankings: dict[str, Ranking]) -> list[dict]:
    """Per head family, at the largest k of the first ranking: the top-k overlap of every pair of planted families,
    then the heads every abstract family (:data:`ABSTRACT`) shares (``planted_b == "(all abstract)"``)."""
    if not rankings:
        return []
    rows, head_families = [], next(iter(rankings.values())).families
    k = max(next(iter(rankings.values())).sets[head_families[0]])
    for hf in head_families:
        for a, b in itertools.combinations(sorted(rankings), 2):
            row = topk_overlap(rankings[a].top(hf, k), rankings[b].top(hf, k))
            rows.append({"head_family": hf, "k": k, "planted_a": a, "planted_b": b, "jaccard": row["jaccard"],
                         "shared": row["shared"]})
        shared = [rankings[f].top(hf, k) for f in ABSTRACT if f in rankings]
        if len(shared) > 1:
            common = set(shared[0].heads).intersection(*(s.heads for s in shared[1:]))
            rows.append({"head_family": hf, "k": k, "planted_a": "+".join(f for f in ABSTRACT if f in rankings),
                         "planted_b": "(all abstract)", "jaccard": float("nan"),
                         "shared": ", ".join(sorted(str(h) for h in common)) or "none"})
    return rows
