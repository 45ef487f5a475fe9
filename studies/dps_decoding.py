"""DPS decoding study: contrast full vs head-ablated logits, with each ranked head family, against every baseline.

    python -m studies.dps_decoding --preset quick --model smollm2-135m --data conventions2012

Generations on the evaluation split: no profile, profile in context, RAG (BM25 top-k), CAD, StyleVector (layer and
alpha chosen on discovery data), DPS with each family's top-k heads (retrieval heads = DeCoRe) and with random heads
matched per layer to the primary family's set, plus a gamma sweep for the primary family. Metrics per example:
ROUGE-1/L, METEOR (exact+stem), style similarity; mean and user-clustered CI per generation method, and every DPS
variant against the best baseline (paired, Holm). Optionally a pairwise LLM judge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from harness.analysis import outcomes
from harness.analysis.report import marker_rate_tables
from harness.analysis import plots
from harness.analysis import tables
from harness.errors import ConfigError
from harness.study.config import StudyConfig, option
from harness.data import assert_not_used_for_ranking
from harness.generation.decoding import DELTA_TOKENS, delta_logits_report, plot_delta_logits
from harness.study.lifecycle import finish, start
from harness.generation.methods import comparison_generations
from harness.intervene.heads import random_headset
from harness.study.measure import generations, score_generations, style_choice
from harness.analysis.metrics import METEOR_VARIANT
from harness.scorers.ranking import load_ranking
from harness.runs.folder import Run
from harness.runs.files import relative_path, write_csv, write_json
from harness.logs import cli
from harness.study.plan import START

METRICS = ("rouge1", "rougeL", "meteor", "style_similarity")
REPORTED = (*METRICS, "continues")  # with the share of generations that continue the text
BASELINES = ("no_profile", "profile", "rag", "cad", "stylevector")

log = logging.getLogger("harness")


@dataclass
class DPSConfig(StudyConfig):
    """DPS decoding against the generation baselines."""

    study = "dps_decoding"
    work = (*START, "style_vectors", "generations", "delta_logits")
    dps_k_heads: int | None = option(None, "heads in the DPS head sets (default: the largest of --k-heads)")
    gammas: list[float] = option([0.5, 1.0, 2.0], "gamma sweep of DPS with the primary family's heads")
    gamma: float = option(1.0, "gamma of the main DPS and CAD rows")
    style_layers: list[int] | None = option(None, "StyleVector layers to try (default: at 1/3 and 2/3 depth)")
    style_alphas: list[float] = option([0.25, 0.5, 1.0], "StyleVector scales to try")
    max_new_tokens: int = option(24, "generation length")
    judge: str = option("none", "pairwise judge of primary-family DPS vs the best baseline",
                        choices=("none", "local", "openai"))
    judge_model: str = option("gpt-4o-mini", "judge model name (--judge openai: OPENAI_BASE_URL + key)")
    ranking_run: str | None = option(None, "ranking run folder (default: the sibling pcs_ranking folder)")
    batch_size: int = option(8, "prompts per decoding loop", runtime=True)

    def validate(self) -> None:
        super().validate()
        if self.positions == "profile":
            raise ConfigError("--positions profile is a scoring design (ranking, ablation); DPS ablates its masked "
                              "branch at all or target positions: use --positions target or all")


def main(argv: list[str] | None = None) -> Run:
    cfg = DPSConfig.from_argv(argv)
    setup, run = start(cfg)
    ranking, ranking_dir = load_ranking(cfg)
    evaluation, k_dps, primary = setup.split.evaluation, cfg.dps_k_heads or max(cfg.k_heads), ranking.families[0]
    assert_not_used_for_ranking([e.example_id for e in evaluation], ranking.discovery_ids)
    style, alpha = style_choice(setup, run, cfg)
    heads = {f: ranking.top(f, k_dps) for f in ranking.families}
    heads["random"] = random_headset(setup.shape, f"dps-random:{cfg.seed}", like=heads[primary], exclude=heads[primary])
    specs = comparison_generations(heads, primary, gamma=cfg.gamma, gammas=cfg.gammas, k_profile=cfg.k_profile,
                                   style=style, alpha=alpha, ablation=setup.ablation)
    gen = dict(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, max_prompt_tokens=cfg.max_prompt_tokens)
    texts = generations(setup, run, specs, **gen)
    df = score_generations(setup, texts, METRICS)
    write_csv(run.path("per_example.csv"), df)
    stat = dict(n_boot=cfg.n_boot, seed=cfg.seed)
    summary = outcomes.clustered_means(df, "generation", REPORTED, order=[s.name for s in specs], **stat)
    tables.write_tables(summary, [("generation", "generation")] + [(k, k) for m in REPORTED for k in (m, f"{m}_ci")]
                        + [("interval", "intervals are")],
                        run.root, "methods", note=run.note)
    baselines = [s for s in specs if s.name in BASELINES]  # the best is chosen on discovery examples
    discovery = score_generations(setup, generations(setup, run, baselines, split="discovery", **gen), ["rougeL"],
                                  split="discovery")
    best = discovery.groupby("generation").rougeL.mean().idxmax()
    comps = outcomes.compare_to_one(df, "generation", [s.name for s in specs if s.kind == "dps"], best,
                                    ["rougeL", "meteor", "style_similarity"], n_perm=cfg.n_perm, **stat)
    tables.write_tables(outcomes.comparison_records(comps, outcomes.mdes_to_one(df, "generation", comps)),
                        [("name", "generation"), ("baseline", "vs best baseline"), ("outcome", "metric")]
                        + outcomes.PAIRED_COLUMNS[2:], run.root, "dps_vs_best_baseline", note=run.note)
    if "marker_rate" in df:  # planted corpus: does DPS raise the rule's marker rate over every baseline?
        marker_rate_tables(df, run, f"dps-{primary}", [s.name for s in baselines], [s.name for s in specs],
                      n_perm=cfg.n_perm, **stat)
    plots.bars({r["generation"]: (r["rougeL"], *r["rougeL_ci"]) for r in summary}, run.path("rougeL_by_method.png"),
               title=f"ROUGE-L by generation method ({cfg.data}, n={len(evaluation)})", ylabel="ROUGE-L")
    rows = {r["generation"]: r for r in summary}
    sweep = sorted((s.contrast.gamma, rows[s.name]) for s in specs if s.kind == "dps" and s.source == primary)
    plots.effect_curves([g for g, _ in sweep], {f"dps-{primary}": tuple(pd.Series(v).to_numpy() for v in zip(
        *[(r["rougeL"], *r["rougeL_ci"]) for _, r in sweep]))}, run.path("gamma_sweep.png"),
        title="DPS gamma sweep (ROUGE-L, user-clustered 95% CI)", ylabel="ROUGE-L")
    main_dps = next(s for s in specs if s.name == f"dps-{primary}")
    report = delta_logits_report(setup.model, setup.prompts[evaluation[0].example_id].with_profile, main_dps.heads,
                                 max_new_tokens=min(DELTA_TOKENS, cfg.max_new_tokens), contrast=main_dps.contrast,
                                 backend=setup.backend)
    write_json(run.path("delta_logits_example.json"), [r.__dict__ for r in report])
    plot_delta_logits(report, str(run.path("delta_logits_example.png")))
    if cfg.judge != "none":
        from harness.generation.judge import judge_generations

        write_json(run.path("judge.json"), judge_generations(
            setup, cfg.judge, cfg.judge_model, evaluation, [[p.text for p in e.profile] for e in evaluation],
            (main_dps.name, texts[main_dps.name]), (best, texts[best])))
    return finish(run, setup, cfg, n_eval=len(evaluation), best_baseline=best, meteor_variant=METEOR_VARIANT,
                  ranking_run=relative_path(str(ranking_dir.resolve())), ranking_config_hash=ranking.config_hash,
                  judge=cfg.judge)


if __name__ == "__main__":
    cli(main)
