"""Ablation comparison: do the primary family's heads matter more than the other families' and random heads?

    python -m studies.ablation_comparison --preset quick --model smollm2-135m --data conventions2012

Head sets come from the ranking run (discovery split); every number is measured on the disjoint evaluation split (the
study refuses otherwise). Per evaluation example, prompt variant and head set: the ablated gold NLL, from which each
outcome of ``harness.analysis.outcomes``. Tables: the primary family vs every other family and the random sets matched to it
(paired, user-clustered, Holm), a per-set summary with the null position, a k sweep, ROUGE-L of generations.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import pandas as pd
from tqdm import tqdm

from harness.analysis import declared as analysis
from harness.analysis import outcomes
from harness.analysis import tables
from harness.errors import ConfigError
from harness.study.config import StudyConfig, option
from harness.data import assert_not_used_for_ranking
from harness.study.lifecycle import finish, start
from harness.generation.methods import generate_ablated
from harness.study.measure import ablation_losses, comparison_sets, copy_head_unions
from harness.analysis.report import ablation_report
from harness.analysis.metrics import rouge
from harness.scorers.ranking import load_ranking
from harness.runs.folder import Run
from harness.runs.files import relative_path, write_csv, write_json
from harness.study.signal import prior_mde
from harness.logs import cli
from harness.study.plan import START

log = logging.getLogger("harness")


@dataclass
class AblationConfig(StudyConfig):
    """Ablation comparison of the ranking's head families against matched random head sets."""

    study = "ablation_comparison"
    work = (*START, "ablation_sets", "ablated_generations")
    n_random: int = option(100, "random sets matched per layer to each compared set at the largest k (the null)")
    n_random_other: int = option(10, "matched random sets at the other k (the null band)")
    matched_to: str = option("each", "draw matched random sets for each family's set, or the first's only",
                             choices=("each", "primary"))
    null_excludes_named: bool = option(True, "a named set's own heads are never drawn into its layer-matched random "
                                             "sets (a layer it fills takes its share from the nearest layers, "
                                             "recorded in head_sets.json)")
    n_unmatched: int = option(20, "uniform random sets at the largest k")
    n_damage: int = option(200, "random sets of many sizes and depths: the damage-matched null (needs conditions "
                                "own, other, none)")
    max_eval: int | None = option(None, "use only the first N evaluation examples (a compute budget)")
    max_new_tokens: int = option(24, "generation length")
    ranking_run: str | None = option(None, "ranking run folder (default: the sibling pcs_ranking folder)")
    batch_size: int = option(16, "head sets per forward", runtime=True)

    def validate(self) -> None:
        super().validate()
        if self.n_random < 1 or self.n_random_other < 1:
            raise ConfigError("--n-random and --n-random-other must be >= 1 (the null needs random sets)")


def main(argv: list[str] | None = None) -> Run:
    cfg = AblationConfig.from_argv(argv)
    setup, run = start(cfg)
    if cfg.max_eval:
        setup.split = dataclasses.replace(setup.split, evaluation=setup.split.evaluation[: cfg.max_eval])
    ranking, ranking_dir = load_ranking(cfg)
    assert_not_used_for_ranking([e.example_id for e in setup.split.evaluation], ranking.discovery_ids)
    families, kmax = ranking.families, max(cfg.k_heads)
    decl = analysis.load()
    departs = decl.conflicts(cfg.numbers_config(), families)
    for what in departs:
        log.warning("this run departs from the declared analysis (analysis.toml): %s; its tables are exploratory", what)
    # retrieval and induction top-k that mostly share heads are one more named set, their union (its own null)
    unions = copy_head_unions(ranking, kmax, members=decl.copy_members, min_overlap=decl.copy_min_overlap,
                              name=analysis.COPY_HEADS)
    families = families + list(unions)
    sets = comparison_sets(ranking, setup.shape, families, cfg.k_heads, n_random=cfg.n_random,
                           n_random_other=min(cfg.n_random_other, cfg.n_random), n_unmatched=cfg.n_unmatched,
                           seed=cfg.seed, matched_to=cfg.matched_to, n_damage=cfg.n_damage,
                           exclude_named=cfg.null_excludes_named, unions=unions)
    write_json(run.path("head_sets.json"), [{**dataclasses.asdict(s), "heads": str(s.heads)} for s in sets])
    frame = outcomes.add_outcomes(ablation_losses(setup, run, sets, cfg.conditions, batch_size=cfg.batch_size),
                                  cfg.conditions)
    write_csv(run.path("per_example.csv"), frame)

    power = prior_mde(setup.signal, int(frame.user_id.nunique()), n_tests=len(families))
    log.info("minimal detectable effect at %d evaluation users: %.4f nats (%s)", power["n_users"], power["mde"],
             power["from"])
    stat = dict(n_boot=cfg.n_boot, seed=cfg.seed)
    ablation_report(frame, run, families, cfg.k_heads, title=f"{cfg.data}, n={frame.example_id.nunique()}",
                    n_perm=cfg.n_perm, **stat)

    # greedy generations with each named set of the largest k ablated (and none), scored against the gold text; the
    # sets are ablated at every position whatever --positions (so the recorded generations were made; their
    # checkpoint key names only the sets)
    everywhere = dataclasses.replace(setup.ablation, positions="all")
    named = [s for s in sets if s.k == kmax and s.family in families]
    ck = run.checkpoint("generations")
    variants = {"none": None, **{s.name: s.heads for s in named}}
    key = "|".join(f"{n}={h}" for n, h in variants.items())  # content, not names
    for ex in tqdm([e for e in setup.split.evaluation if f"{e.example_id}|{key}" not in ck], desc="generations"):
        texts = setup.call(generate_ablated, setup.model, setup.prompts[ex.example_id].with_profile,
                           list(variants.values()), max_new_tokens=cfg.max_new_tokens,
                           min_new_tokens=cfg.min_new_tokens, ablation=everywhere, backend=setup.backend,
                           what=f"generations on {ex.example_id}")
        ck.add(f"{ex.example_id}|{key}", texts=dict(zip(variants, texts)))
    gens = pd.DataFrame([{"example_id": e.example_id, "user_id": e.user_id, "set": name, "text": text,
                          "rougeL": rouge(text, setup.prompts[e.example_id].target)["rougeL"]}
                         for e in setup.split.evaluation
                         for name, text in ck.get(f"{e.example_id}|{key}")["texts"].items()])
    write_csv(run.path("generations.csv"), gens)
    tables.write_tables(outcomes.clustered_means(gens, "set", ["rougeL"], **stat),
                        [("set", "ablated set"), ("rougeL", "ROUGE-L"), ("rougeL_ci", "interval"),
                         ("interval", "interval is")], run.root,
                        "generation_rouge", note=run.note)
    return finish(run, setup, cfg, n_eval=int(frame.example_id.nunique()), n_users=int(frame.user_id.nunique()),
                  k_main=kmax, n_random=cfg.n_random, prior_mde=power, ranking_run=relative_path(str(ranking_dir.resolve())),
                  ranking_config_hash=ranking.config_hash, analysis_departures=departs,
                  copy_heads_merged=bool(unions))


if __name__ == "__main__":
    cli(main)
