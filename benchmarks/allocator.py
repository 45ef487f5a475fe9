"""4 KB pages vs transparent huge pages (``harness.allocator``) for the ablation loop the studies run.

    python -m benchmarks.allocator [--models gemma3-270m smollm2-135m] [--positions target all] [--prompt-tokens 1024]
        [--target-tokens 64] [--sets 48] [--calls 3] [--repeats 2]

Each contender runs in its own fresh process (PyTorch reads ``THP_MEM_ALLOC_ENABLE`` once), alternately
``--repeats`` times: load the model, warm up once, then ``--calls`` calls of ``ablated_losses`` over ``--sets`` head sets (16 per
forward, as the studies batch them). Prints per model and positions the median wall seconds, CPU seconds in user and
kernel mode, minor page faults and peak RSS of each, the speedup, and max |Δloss| between the two (they must agree).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from harness.allocator import ENV, kernel_thp_mode
from harness.models import load_model
from harness.pcs import ablated_losses

from .target_ablation_speed import PROFILE_A, example, peak_rss, v2_sets

CONTENDERS = {"4 KB pages": "0", "huge pages": "1"}  # THP_MEM_ALLOC_ENABLE


def child(args: argparse.Namespace) -> None:
    """One contender in this fresh process: prints one JSON line."""
    torch.set_grad_enabled(False)
    model = load_model(args.model)
    item = example(model.tokenizer, PROFILE_A, args.prompt_tokens, args.target_tokens)
    sets = v2_sets(model, args.sets)
    ablated_losses(model, item, sets[:16], positions=args.positions)  # warm-up
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with peak_rss() as rss:
        for _ in range(args.calls):
            clean, losses = ablated_losses(model, item, sets, positions=args.positions)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"env": os.environ.get(ENV), "wall_s": wall, "user_s": r1.ru_utime - r0.ru_utime,
                      "sys_s": r1.ru_stime - r0.ru_stime, "minflt": r1.ru_minflt - r0.ru_minflt,
                      "peak_rss_mb": rss["peak_mb"], "clean": float(clean), "losses": losses.tolist()}))


def run_child(args: argparse.Namespace, model: str, positions: str, which: str) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.allocator", "--child", "--model", model, "--positions", positions,
           "--prompt-tokens", str(args.prompt_tokens), "--target-tokens", str(args.target_tokens),
           "--sets", str(args.sets), "--calls", str(args.calls)]
    env = {**os.environ, ENV: which}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    row = json.loads(out.strip().splitlines()[-1])
    if row["env"] != which:
        raise RuntimeError(f"contender {ENV}={which}: the child ran with {row['env']!r}")
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["gemma3-270m", "smollm2-135m"])
    ap.add_argument("--positions", nargs="+", default=["target", "all"], choices=["target", "all"])
    ap.add_argument("--prompt-tokens", type=int, default=1024)
    ap.add_argument("--target-tokens", type=int, default=64)
    ap.add_argument("--sets", type=int, default=48)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="smollm2-135m", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.positions = args.positions[0]
        child(args)
        return []
    results = []
    print(f"kernel transparent huge pages: {kernel_thp_mode()}")
    for model in args.models:
        for positions in args.positions:
            rows: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
            for _ in range(args.repeats):  # alternate, so drift hits both
                for name, which in CONTENDERS.items():
                    rows[name].append(run_child(args, model, positions, which))
            med = {name: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "user_s", "sys_s", "minflt",
                                                                          "peak_rss_mb")}
                   for name, rs in rows.items()}
            a, b = (rows[name][0] for name in CONTENDERS)
            diff = max(abs(x - y) for x, y in zip(a["losses"] + [a["clean"]], b["losses"] + [b["clean"]]))
            base, tuned = (med[name] for name in CONTENDERS)
            res = {"model": model, "positions": positions, "sets": args.sets, "calls": args.calls,
                   "medians": med, "speedup": base["wall_s"] / tuned["wall_s"], "max_abs_diff": diff}
            results.append(res)
            print(f"{model}, ablation at {positions} positions: {args.calls} x {args.sets} sets, "
                  f"{args.prompt_tokens} + {args.target_tokens} tokens, median of {args.repeats}")
            for name, m in med.items():
                print(f"  {name:20s} wall {m['wall_s']:6.1f} s  user {m['user_s']:6.1f} s  sys {m['sys_s']:5.1f} s  "
                      f"minor faults {m['minflt'] / 1e6:5.2f} M  peak RSS {m['peak_rss_mb'] / 1024:4.1f} GB")
            print(f"  speedup {res['speedup']:.2f}x, max |Δloss| {diff:.1e}")
    return results


if __name__ == "__main__":
    main()
