"""PCS ranking study: score every head on the discovery split with each registered head family.

    python -m studies.pcs_ranking --preset quick --model smollm2-135m --data conventions2012 [--estimator exact]

Writes ``results/<model>/<data>/pcs_ranking/``: ranking.json (every family's map and top-k sets: what the ablation and
DPS studies read), head_scores.csv (maps with user-clustered CIs), per_example.csv, signal.csv, heatmaps,
overlap and top-k stability tables, agreement.json and manifest.json. Resumes from its checkpoints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from harness.analysis import plots
from harness.analysis import tables
from harness.study.config import StudyConfig, option
from harness.study.lifecycle import finish, start
from harness.scorers.ranking import ScoringContext, exact_check, head_scorer, overlaps, rank_heads, topk_stability
from harness.runs.folder import Run
from harness.runs.files import write_csv, write_json
from harness.analysis.stats import bootstrap_ci
from harness.logs import cli
from harness.study.plan import START

log = logging.getLogger("harness")


@dataclass
class RankingConfig(StudyConfig):
    """PCS ranking: every head family's scores on the discovery split."""

    study = "pcs_ranking"
    work = (*START, "head_scores", "exact_check")
    families: list[str] = option(["specific_pcs", "pcs", "contrast_pcs", "retrieval", "induction"], "head families "
                                 "to score (registered head scorers); the first is the primary one")
    estimator: str = option("attribution", "PCS estimator", choices=("exact", "attribution"))
    check_exact: int = option(0, "with attribution: also score the first N discovery examples exactly and report "
                                 "the agreement (Spearman, top-10 overlap)")
    retrieval_prompts: int = option(8, "needle-in-a-haystack prompts for the retrieval score")
    induction_sequences: int = option(16, "repeated random sequences for the induction score")
    n_boot_stability: int = option(200, "bootstrap resamples for top-k stability")

    def validate(self) -> None:
        super().validate()
        for fam in self.families:
            head_scorer(fam)  # unknown family: error with suggestions


def main(argv: list[str] | None = None) -> Run:
    cfg = RankingConfig.from_argv(argv)
    setup, run = start(cfg)
    ctx = ScoringContext(setup, run, cfg)
    ranking, scores = rank_heads(ctx, cfg.families, cfg.k_heads)
    ranking.save(run.path("ranking.json"))
    agreement = exact_check(ctx, cfg.check_exact)
    if agreement:
        write_json(run.path("agreement.json"), agreement)

    # the maps, with user-clustered CIs where a family is a mean over discovery examples
    users = [e.user_id for e in setup.split.discovery]
    L, H = setup.shape.n_layers, setup.shape.n_heads
    rows = []
    for layer in range(L):
        for head in range(H):
            row = {"layer": layer, "head": head}
            for fam, s in scores.items():
                row[fam] = float(s.map[layer, head])
                if s.per_example is not None:
                    row[f"{fam}_ci_low"], row[f"{fam}_ci_high"] = bootstrap_ci(
                        s.per_example[:, layer, head].numpy(), clusters=users, n_boot=cfg.n_boot, seed=cfg.seed)
            rows.append(row)
    write_csv(run.path("head_scores.csv"), pd.DataFrame(rows))
    if any(head_scorer(f).uses_discovery for f in cfg.families):
        fx = ctx.effects
        write_csv(run.path("per_example.csv"), pd.DataFrame(
            [{"example_id": ex, "user_id": u, "layer": layer, "head": head,
              **{f"effect_{c}": float(fx.effects[c][i, layer, head]) for c in fx.effects}}
             for i, (ex, u) in enumerate(zip(fx.example_ids, fx.user_ids)) for layer in range(L) for head in range(H)]))

    # agreement between families, and how stable each per-example family's top-k is
    tables.write_tables(overlaps(ranking), [("k", "k"), ("set_a", "set A"), ("set_b", "set B"),
                                            ("jaccard", "Jaccard"), ("shared", "shared heads")], run.root, "overlap", note=run.note)
    kmax = max(cfg.k_heads)
    stability, freq = [], {}
    for fam, s in scores.items():
        for k in cfg.k_heads if s.per_example is not None else []:
            mean_j, freq[fam, k] = topk_stability(s.per_example, k, users, n_boot=cfg.n_boot_stability, seed=cfg.seed)
            stability.append({"k": k, "set": fam, "bootstrap_mean_jaccard": mean_j})
    tables.write_tables(stability, [("k", "k"), ("set", "head set"),
                                    ("bootstrap_mean_jaccard", "bootstrap mean Jaccard")], run.root, "stability", note=run.note)
    for fam, s in scores.items():
        marked = [(h.layer, h.head) for h in ranking.top(fam, kmax)]
        plots.heatmap(s.map.numpy(), run.path(f"{fam}_heatmap.png"), title=f"{head_scorer(fam).label}, {cfg.data}",
                      label="score", marked=marked, diverging=s.per_example is not None)
        if (fam, kmax) in freq:
            plots.heatmap(freq[fam, kmax], run.path(f"{fam}_topk_stability.png"), marked=marked, diverging=False,
                          title=f"bootstrap frequency in {fam} top-{kmax}", label="selection frequency")
    baselines = {k: v for fam in cfg.families for k, v in ranking.info.get(fam, {}).items()}
    log.info("%s top-%d: %s", cfg.families[0], kmax, ranking.top(cfg.families[0], kmax))
    return finish(run, setup, cfg, baselines=baselines, agreement_with_exact=agreement,
                  n_discovery=len(ranking.discovery_ids), n_users=len(set(users)))


if __name__ == "__main__":
    cli(main)
