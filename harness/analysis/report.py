"""The ablation study's report: every outcome's comparison table, set summary, k sweep, nulls and the damage cloud.

Written from the tidy loss frame (``harness.study.measure.ablation_losses`` + ``harness.analysis.outcomes.add_outcomes``), so a
report can be redrawn from a run's ``per_example.csv`` without a model.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd

from . import declared as analysis
from . import outcomes
from . import plots
from . import tables
from ..runs.folder import Run
from ..runs.files import write_csv

log = logging.getLogger("harness")

EXPLORATORY_CAPTION = ("exploratory: one split seed (the declared test, pooled over seeds and Holm-corrected across "
                       "its family, is in summary.md)")


def ablation_report(frame: pd.DataFrame, run: Run, families: Sequence[str], k_heads: Sequence[int], *, title: str,
                    n_boot: int, n_perm: int, seed: int) -> list[dict]:
    """Tables and figures of every measurable outcome; the first family is compared with each other family and with
    the random sets matched to it; each family is placed in its own matched null. Returns the sweep rows."""
    primary, kmax = families[0], max(k_heads)
    decl = analysis.load()
    margin = outcomes.equivalence_margin(frame, decl.margin_share)
    measured = [o for o in outcomes.OUTCOMES if o in frame.columns]
    sweep = [row for o in measured for k in k_heads
             for row in outcomes.set_summary(frame, o, k, families, n_boot=n_boot, seed=seed)]
    for o in measured:
        comps = outcomes.compare_sets(frame, o, kmax, primary, families[1:], null_of=primary, n_boot=n_boot,
                                      n_perm=n_perm, seed=seed)
        tables.write_tables(outcomes.comparison_records(comps, outcomes.comparison_mdes(frame, comps),
                                                        outcomes.comparison_equivalence(frame, comps, margin=margin,
                                                                                        alpha=decl.alpha)),
                            outcomes.COMPARISON_COLUMNS, run.root, f"comparison_{o}", note=run.note,
                            caption=EXPLORATORY_CAPTION)
        nulls = {k: outcomes.null_means(frame, o, k, primary) for k in k_heads}
        rows = [r for r in sweep if r["outcome"] == o]
        curves = {f: tuple(np.array(v) for v in zip(*[(r["mean"], *r["ci"]) for r in rows if r["set"] == f]))
                  for f in families}
        label = outcomes.OUTCOMES[o].label
        plots.effect_curves(k_heads, curves, run.path(f"effect_vs_k_{o}.png"), ylabel=label, title=f"{label} vs k "
                            f"({title})", null_band=([np.percentile(nulls[k], 2.5) for k in k_heads],
                                                      [np.percentile(nulls[k], 97.5) for k in k_heads]))
        plots.null_histogram(nulls[kmax], {r["set"]: r["mean"] for r in rows if r["k"] == kmax},
                             run.path(f"null_{o}.png"), xlabel=label, title=f"random sets matched to {primary}@{kmax}")
    tables.write_tables([r for r in sweep if r["k"] == kmax], outcomes.SUMMARY_COLUMNS, run.root, "set_summary",
                        note=run.note, caption=EXPLORATORY_CAPTION)
    write_csv(run.path("sweep.csv"), pd.DataFrame([{**r, "ci_low": r["ci"][0], "ci_high": r["ci"][1]}
                                                   for r in sweep]).drop(columns="ci"))
    if "specific_gain_lost" in measured and "generic_damage" in measured and (frame.family == "random_damage").any():
        rows, cloud = outcomes.damage_matched(frame, families, kmax, min_near=decl.min_near_sets)
        tables.write_tables(rows, outcomes.DAMAGE_COLUMNS, run.root, "damage_matched", note=run.note,
                            caption=EXPLORATORY_CAPTION)
        plots.damage_cloud(cloud.generic_damage.to_numpy(), cloud.specific_gain_lost.to_numpy(),
                           {f"{r['set']}@{kmax}": (r["damage"], r["mean"]) for r in rows},
                           run.path("damage_matched.png"), fit=(rows[0]["slope"], rows[0]["intercept"]),
                           title=f"specific gain lost vs generic damage ({title})",
                           xlabel=outcomes.OUTCOMES["generic_damage"].label,
                           ylabel=outcomes.OUTCOMES["specific_gain_lost"].label)
    return sweep


def marker_rate_tables(df: pd.DataFrame, run: Run, dps: str, baselines: list[str], order: list[str], *, n_perm: int,
                  n_boot: int, seed: int) -> None:
    """Planted corpora: each method's marker rate for planted and control users, and ``dps`` against every baseline
    on the planted users' marker rate and ROUGE-L (Holm across the table; a pair needs an opportunity in both texts)."""
    stat = dict(n_boot=n_boot, seed=seed)
    rates = [{"group": g, **r} for g in ("planted", "control") if ((df.group == g) & df.marker_rate.notna()).any()
             for r in outcomes.clustered_means(df[(df.group == g) & df.marker_rate.notna()], "generation",
                                               ["marker_rate"], order=order, **stat)]
    tables.write_tables(rates, [("group", "users"), ("generation", "generation"), ("marker_rate", "marker rate"),
                                ("marker_rate_ci", "interval"), ("interval", "interval is")], run.root,
                        "marker_rate_by_method", caption="share of each text's opportunities that follow the user's rule "
                        "(controls: a rule they were not given); texts without an opportunity are left out")
    planted = df[df.group == "planted"]
    complete = planted.groupby("example_id").marker_rate.apply(lambda r: r.notna().sum())
    if not (complete >= 2).any():
        log.warning("no planted example has two texts with an opportunity for its rule: no marker-rate comparison")
        return
    comps = outcomes.compare_to_one(planted, "generation", [dps], baselines, ["marker_rate", "rougeL"],
                                    n_perm=n_perm, missing="drop", **stat)
    tables.write_tables(outcomes.comparison_records(comps, outcomes.mdes_to_one(planted, "generation", comps,
                                                                                  missing="drop")),
                        [("name", "generation"), ("baseline", "vs"), ("outcome", "metric")]
                        + outcomes.PAIRED_COLUMNS[2:], run.root, "dps_marker_rate",
                        note=run.note, caption="planted users; an example whose DPS or baseline text has no "
                        "opportunity for the rule is left out of that marker-rate pair")
