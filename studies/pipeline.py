"""The whole study: PCS ranking -> ablation comparison -> DPS decoding, then the paper's tables and figures.

    python -m studies.pipeline --preset quick                      # minutes on 2 CPU cores (README's main command)
    python -m studies.pipeline --preset full --data conventions2012 debates2016   # the committed results

Each stage is resumable (its own checkpoints); a rerun skips finished work. Extra flags after ``--`` go to every
stage (e.g. ``-- --remote ndif --model meta-llama/Llama-3.1-8B``).
"""

from __future__ import annotations

import argparse
import logging
import time

from studies import ablation_comparison, dps_decoding, paper_tables, pcs_ranking

log = logging.getLogger("harness")
STAGES = {"pcs": pcs_ranking.main, "ablation": ablation_comparison.main, "dps": dps_decoding.main}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=["quick", "full"], default="quick")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", nargs="+", default=["conventions2012"])
    ap.add_argument("--stages", nargs="+", choices=sorted(STAGES), default=["pcs", "ablation", "dps"])
    ap.add_argument("--results", default=None, help="results folder (default: results/ for full, "
                                                    "results-quick/ for quick, so quick runs never overwrite "
                                                    "committed results)")
    ap.add_argument("--no-paper", action="store_true", help="skip regenerating paper/generated/")
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="-- then flags passed to every stage")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = args.results or ("results" if args.preset == "full" else "results-quick")
    extra = [a for a in args.rest if a != "--"]
    t0 = time.time()
    for data in args.data:
        for stage in ["pcs", "ablation", "dps"]:
            if stage not in args.stages:
                continue
            log.info("== %s on %s (%s preset) ==", stage, data, args.preset)
            STAGES[stage](["--preset", args.preset, "--model", args.model, "--data", data, "--results", results,
                           *extra])
    if not args.no_paper:
        paper_tables.main(["--results", results] + (["--out", f"{results}/paper-generated"]
                                                    if results != "results" else []))
    log.info("pipeline finished in %.1f min; results in %s/", (time.time() - t0) / 60, results)


if __name__ == "__main__":
    main()
