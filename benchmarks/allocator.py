"""Why the harness leaves the CPU allocator alone: the ablation loop with glibc's defaults, with transparent huge
pages, and with glibc keeping freed memory.

    python -m benchmarks.allocator [--models gemma3-270m smollm2-135m] [--positions all target] [--prompt-tokens 1024]
        [--target-tokens 64] [--sets 32] [--calls 2] [--repeats 1]

PyTorch on CPU has no caching allocator: every activation above glibc's mmap threshold (at most 32 MB) is a fresh
``mmap``, faulted in and zeroed by the kernel, and ``munmap``-ed on free, so Gemma-3-270M's all-positions ablation
loop spends a fifth or more of its CPU time in the kernel. Two ways to avoid that, each in its own fresh process,
alternately ``--repeats`` times (load the model, warm up once, then ``--calls`` calls of ``ablated_losses`` over
``--sets`` head sets, 16 per forward as the studies batch them):

- ``huge pages``: PyTorch's ``THP_MEM_ALLOC_ENABLE=1`` (read at its first CPU allocation) aligns allocations of 2 MB
  and more to 2 MB and asks for transparent huge pages: one fault per 2 MB instead of per 4 KB;
- ``retain freed memory``: glibc's ``mallopt`` mmap and trim thresholds raised to 1 GB, so large buffers come from
  the heap and are reused without the kernel.

Prints per model and positions the median wall seconds, CPU seconds in user and kernel mode, minor page faults and
peak RSS of each, each one's speedup over the default, and max |Δloss| (they must agree).

Measured on 2 cores (the numbers are in benchmarks/README.md): at the target positions the studies score, both are
slower, keeping freed memory also at more RSS; at all positions huge pages cut the faults but not the kernel time,
and keeping freed memory helps by a margin that does not repeat. The kernel's cost is zeroing and unmapping fresh
pages, not the count of faults; so the harness keeps glibc's and PyTorch's defaults.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import resource
import statistics
import time
from pathlib import Path

import torch

from harness.models.registry import load_model
from harness.intervene.ablation import Ablation
from harness.intervene.pcs import ablated_losses

from .common import child_json
from .target_ablation_speed import PROFILE_A, example, peak_rss, v2_sets

CONTENDERS = ("default", "huge pages", "retain freed memory")
THP_ENV = "THP_MEM_ALLOC_ENABLE"
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h


def child(args: argparse.Namespace) -> None:
    """One contender in this fresh process: prints one JSON line."""
    if args.child == "retain freed memory":
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) != 1 or libc.mallopt(M_TRIM_THRESHOLD, 1 << 30) != 1:
            raise RuntimeError("this libc refused mallopt's thresholds")
    torch.set_grad_enabled(False)
    model = load_model(args.model)
    item = example(model.tokenizer, PROFILE_A, args.prompt_tokens, args.target_tokens)
    sets = v2_sets(model, args.sets)
    ablated_losses(model, item, sets[:16], Ablation(positions=args.positions))  # warm-up
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    with peak_rss() as rss:
        for _ in range(args.calls):
            clean, losses = ablated_losses(model, item, sets, Ablation(positions=args.positions))
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"wall_s": wall, "user_s": r1.ru_utime - r0.ru_utime,
                      "sys_s": r1.ru_stime - r0.ru_stime, "minflt": r1.ru_minflt - r0.ru_minflt,
                      "peak_rss_mb": rss["peak_mb"], "clean": float(clean), "losses": losses.tolist()}))


def run_child(args: argparse.Namespace, model: str, positions: str, which: str) -> dict:
    return child_json("benchmarks.allocator", "--child", which, "--model", model, "--positions", positions,
                      "--prompt-tokens", str(args.prompt_tokens), "--target-tokens", str(args.target_tokens),
                      "--sets", str(args.sets), "--calls", str(args.calls),
                      env={THP_ENV: "1" if which == "huge pages" else "0"})


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["gemma3-270m", "smollm2-135m"])
    ap.add_argument("--positions", nargs="+", default=["all", "target"], choices=["target", "all"])
    ap.add_argument("--prompt-tokens", type=int, default=1024)
    ap.add_argument("--target-tokens", type=int, default=64)
    ap.add_argument("--sets", type=int, default=32)
    ap.add_argument("--calls", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    ap.add_argument("--model", default="smollm2-135m", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.positions = args.positions[0]
        child(args)
        return []
    results = []
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    print(f"kernel transparent huge pages: {thp.read_text().strip() if thp.exists() else 'none'}")
    for model in args.models:
        for positions in args.positions:
            rows: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
            for _ in range(args.repeats):  # alternate, so drift hits all
                for name in CONTENDERS:
                    rows[name].append(run_child(args, model, positions, name))
            med = {name: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "user_s", "sys_s", "minflt",
                                                                          "peak_rss_mb")}
                   for name, rs in rows.items()}
            first = [rows[name][0] for name in CONTENDERS]
            diff = max(abs(x - y) for other in first[1:]
                       for x, y in zip(first[0]["losses"] + [first[0]["clean"]], other["losses"] + [other["clean"]]))
            base = med[CONTENDERS[0]]["wall_s"]
            res = {"model": model, "positions": positions, "sets": args.sets, "calls": args.calls, "medians": med,
                   "speedup": {name: base / m["wall_s"] for name, m in med.items()}, "max_abs_diff": diff}
            results.append(res)
            print(f"{model}, ablation at {positions} positions: {args.calls} x {args.sets} sets, "
                  f"{args.prompt_tokens} + {args.target_tokens} tokens, median of {args.repeats}")
            for name, m in med.items():
                print(f"  {name:20s} wall {m['wall_s']:6.1f} s ({res['speedup'][name]:.2f}x)  user {m['user_s']:6.1f} s  "
                      f"sys {m['sys_s']:5.1f} s  minor faults {m['minflt'] / 1e6:5.2f} M  "
                      f"peak RSS {m['peak_rss_mb'] / 1024:4.1f} GB")
            print(f"  max |Δloss| between them {diff:.1e}")
    return results


if __name__ == "__main__":
    main()
