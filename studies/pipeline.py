"""The whole study: PCS ranking -> ablation comparison -> DPS decoding, then the paper's tables and figures.

    python -m studies.pipeline --preset quick                      # minutes on 2 CPU cores (README's main command)
    python -m studies.pipeline --preset full --seeds 0 1 2            # the main design: sotu, other-address profiles
    python -m studies.pipeline --preset full --data conventions2012 -- --profile-docs any   # committed same-speech runs

Each stage is resumable (its own checkpoints); a rerun skips finished work. Extra flags after ``--`` go to every
stage (e.g. ``-- --remote ndif --model meta-llama/Llama-3.1-8B``).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

from harness.analysis import summary
from harness.models.registry import DEFAULT_MODEL
from harness.study.config import PRESETS, Options, option
from harness.logs import cli, configure as configure_logging
from harness.study.plan import print_plan
from studies import ablation_comparison, dps_decoding, paper_tables, pcs_ranking, seeds

log = logging.getLogger("harness")
# The null of a secondary ablation design (every design after the first): 20 layer-matched random sets per named set,
# 5 at the other k, 4 unmatched and 40 damage-matched, against the full preset's 100 / 10 / 10 / 200. An all-position
# ablation runs every set over the whole prompt (the primary, target-position design runs the prompt once per
# example), so the full null is 4x the work (--plan, SmolLM2 on conventions2012: 32.3 M against 8.2 M tokens); null
# percentiles come in 5-point steps. Explicit flags after -- still win.
SECONDARY_NULL = ["--n-random", "20", "--n-random-other", "5", "--n-unmatched", "4", "--n-damage", "40"]
STAGES = {"pcs": pcs_ranking.main, "ablation": ablation_comparison.main, "dps": dps_decoding.main}
CONFIGS = {"pcs": pcs_ranking.RankingConfig, "ablation": ablation_comparison.AblationConfig,
           "dps": dps_decoding.DPSConfig}


@dataclass
class PipelineConfig(Options):
    """The whole study: ranking -> ablation comparison -> DPS, then the paper; flags after -- go to every stage."""

    study = "pipeline"
    preset: str = option("quick", "the preset every stage runs", choices=tuple(PRESETS))
    model: str = option(DEFAULT_MODEL, "registry name, HF repo id or local folder")
    data: list[str] = option(["sotu"], "datasets, one after the other")
    stages: list[str] = option(["pcs", "ablation", "dps"], "stages to run", choices=tuple(STAGES))
    results: str = option("results", "results folder (a quick run's never overwrites committed results)",
                          runtime=True)
    designs: list[str] | None = option(None, "ablation designs (mode/positions) for the ranking and ablation stages; "
                                             "DPS runs on the first (default: the FV-style primary design "
                                             "mean/target, then for the full preset also the all-position zero "
                                             "ablation of prior code, zero/all, whose ablation stage runs a smaller "
                                             "null: SECONDARY_NULL)")
    small_null: bool = option(False, "every design's ablation stage runs SECONDARY_NULL, a quarter of the head sets "
                                     "(how the committed Gemma-3-270M comparison was run: on 2 cores its 262k-token "
                                     "vocabulary makes each head set cost about 2.5 times SmolLM2's)")
    seeds: list[int] = option([0], "split seeds: each repeats split -> ranking -> evaluation; with several, "
                                   "studies.seeds summarizes the overlap across seeds and the pooled estimate")
    paper: bool = option(True, "regenerate paper/generated/ at the end (--no-paper skips it)", runtime=True)
    plan: bool = option(False, "print every stage's work (requests, forwards, tokens, time estimate) and exit: runs "
                               "and writes nothing", runtime=True)


def main(argv: list[str] | None = None) -> None:
    """Run the stages for every dataset, seed and design (flags after ``--`` go to every stage), then the paper."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args, extra = PipelineConfig.from_argv(argv[:cut]), argv[cut + 1:]
    configure_logging(verbose="--verbose" in extra)
    results = args.results
    t0 = time.time()
    designs = [d.split("/") for d in args.designs or (["mean/target"] if args.preset == "quick"
                                                      else ["mean/target", "zero/all"])]

    def stage_argv(data: str, seed: int, mode: str, positions: str, stage: str = "") -> list[str]:
        secondary = stage == "ablation" and (args.small_null or [mode, positions] != designs[0])
        return ["--preset", args.preset, "--model", args.model, "--data", data, "--results", results, "--seed",
                str(seed), "--mode", mode, "--positions", positions, *(SECONDARY_NULL if secondary else []), *extra]
    if args.plan or "--plan" in extra:  # every stage's config, counted together (one draw, one calibration)
        return print_plan(*[CONFIGS[stage].from_argv(stage_argv(data, seed, mode, positions, stage))
                            for data in args.data for seed in args.seeds for i, (mode, positions) in enumerate(designs)
                            for stage in ["pcs", "ablation", "dps"]
                            if stage in args.stages and (stage != "dps" or i == 0)])
    with summary.muted():  # each stage rewrites summary.md; the pipeline prints it once, at the end
        for data in args.data:
            for seed in args.seeds:
                for i, (mode, positions) in enumerate(designs):
                    for stage in [s for s in ["pcs", "ablation", "dps"] if s in args.stages and (s != "dps" or i == 0)]:
                        log.info("== %s on %s, seed %d (%s preset, %s ablation at %s positions) ==", stage, data, seed,
                                 args.preset, mode, positions)
                        STAGES[stage](stage_argv(data, seed, mode, positions, stage))
            if len(args.seeds) > 1 and {"pcs", "ablation"} <= set(args.stages):
                for mode, positions in designs:
                    seeds.main(["--preset", args.preset, "--model", args.model, "--data", data, "--results", results,
                                "--seeds", *map(str, args.seeds), "--mode", mode, "--positions", positions, *extra])
        if args.paper:
            paper_tables.main(["--results", results] + (["--out", f"{results}/paper-generated"]
                                                        if results != "results" else []))
    summary.report(results, args.model, args.data)
    log.info("pipeline finished in %.1f min; results in %s/", (time.time() - t0) / 60, results)


if __name__ == "__main__":
    cli(main)
