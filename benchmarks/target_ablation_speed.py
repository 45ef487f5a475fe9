"""Target-position ablation: many head sets scored against one cached prompt vs a full re-forward per set.

    python -m benchmarks.target_ablation_speed [--model smollm2-135m] [--prompt-tokens 1024] [--target-tokens 64]
        [--sets 150] [--repeats 1] [--rss 8,16,32,64] [--v2]

Both contenders compute the same losses (``ablated_losses(..., Ablation(positions="target"))``): the cached mode runs
the prompt once and each batch of sets over the gold tokens only; the baseline re-runs the whole sequence, 16 sets per
forward with clean-prefix reuse (the batching ``ablated_losses`` had before). The sets are shaped like study v2's: top-k
sets of a ranking (k = 1 ... 32) and layer-matched random sets. Prints both times (median of ``--repeats``, run
alternately), the ratio (goal >= 8x) and max |Δloss|.

``--rss``: peak RSS and seconds per set of the cached mode for each batch size, each in a fresh process (peak RSS is
a per-process high-water mark). ``--v2``: wall time of one v2 ablation example (own profile, another user's, none;
the same sets for each) and its projection to 64 evaluation users x 3 seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import torch

from harness.models.arch import shape_of
from harness.intervene.heads import Head, HeadSet, random_headset
from harness.models.registry import load_model
from harness.intervene.ablation import Ablation
from harness.intervene.pcs import BATCH_SIZE, ablated_losses
from harness.data.tokens import TokenizedInput

from .common import child_json, time_pair

PROFILE_A = ("Alice keeps a garden diary. She writes short, dry sentences about tomatoes, basil, slugs and the rain, "
             "counts her beans, complains about the neighbour's cat and never uses exclamation marks. ")
PROFILE_B = ("Bob sails a small wooden boat along the coast. His posts are long and cheerful, full of harbours, "
             "tides, fish markets and friends he met on the quay, and he ends every story with a question. ")
TASK = " Write a short note about your weekend, in your own voice:"
GOLD = (" Weekend. Rain on Saturday, so the slugs had the lettuce. Sunday dry. Tied up the tomatoes, picked the "
        "first basil, gave the cat a look. The beans are late again. The neighbour says it is the soil. It is not "
        "the soil. Next week: copper tape, and an early start before the heat.")


def example(tok, profile: str, prompt_tokens: int, target_tokens: int) -> TokenizedInput:
    """``profile`` repeated up to ``prompt_tokens`` prompt tokens (task last; no profile: the task alone) + gold."""
    task = tok(TASK, add_special_tokens=False).input_ids
    unit = tok(profile, add_special_tokens=False).input_ids if profile else []
    body = (unit * (prompt_tokens // max(len(unit), 1) + 1))[: max(prompt_tokens - len(task), 0)]
    prompt = body + task
    gold = tok(GOLD * 4, add_special_tokens=False).input_ids[:target_tokens]
    return TokenizedInput(torch.tensor(prompt + gold), len(gold))


def v2_sets(model, n: int, seed: int = 0) -> list[HeadSet]:
    """``n`` sets like one v2 example's: top-k of a (random stand-in) ranking, k = 1..32, and matched random sets."""
    shape, rng = shape_of(model.config), random.Random(seed)
    ranking = [Head(layer, h) for layer in range(shape.n_layers) for h in range(shape.n_heads)]
    rng.shuffle(ranking)
    tops = [HeadSet(ranking[:k]) for k in (1, 2, 4, 8, 16, 32) if k <= len(ranking)]
    sets = list(tops)
    while len(sets) < n:
        sets.append(random_headset(shape, rng, like=tops[len(sets) % len(tops)]))
    return sets[:n]


def rss_mb() -> float:
    """This process's resident set size now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextmanager
def peak_rss(every_s: float = 0.005) -> Iterator[dict]:
    """Sample RSS in a thread while the block runs; ``["peak_mb"]`` is the highest sample (the model load's own
    peak, which ``ru_maxrss`` would report, is excluded)."""
    box = {"peak_mb": rss_mb()}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            box["peak_mb"] = max(box["peak_mb"], rss_mb())
            time.sleep(every_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        stop.set()
        thread.join()


def rss_child(args: argparse.Namespace) -> None:
    """One batch size in this (fresh) process: RSS before scoring, peak RSS while scoring, seconds per set."""
    torch.set_grad_enabled(False)
    model = load_model(args.model)
    item = example(model.tokenizer, PROFILE_A, args.prompt_tokens, args.target_tokens)
    sets = v2_sets(model, args.sets)
    ablated_losses(model, item, sets[:2], Ablation(positions="target"), batch_size=2)  # warm-up
    before = rss_mb()
    t0 = time.perf_counter()
    with peak_rss() as rss:
        ablated_losses(model, item, sets, Ablation(positions="target"), batch_size=args.rss_child)
    seconds = time.perf_counter() - t0
    print(json.dumps({"batch_size": args.rss_child, "rss_mb_before": before, "peak_rss_mb": rss["peak_mb"],
                      "s_per_set": seconds / len(sets)}))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompt-tokens", type=int, default=1024)
    ap.add_argument("--target-tokens", type=int, default=64)
    ap.add_argument("--sets", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--baseline-batch", type=int, default=16, help="sets per full re-forward (the old default)")
    ap.add_argument("--rss", default="", help="comma-separated batch sizes to measure peak RSS for (fresh processes)")
    ap.add_argument("--v2", action="store_true", help="time one v2 example (3 prompt variants) and project 64 x 3")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_child:
        return rss_child(args)
    torch.set_grad_enabled(False)
    model = load_model(args.model)
    item = example(model.tokenizer, PROFILE_A, args.prompt_tokens, args.target_tokens)
    sets = v2_sets(model, args.sets)
    res: dict = {"model": args.model, "tokens": int(item.ids.shape[0]), "n_target": item.n_target,
                 "sets": len(sets), "batch_size": BATCH_SIZE, "threads": torch.get_num_threads()}
    print(f"{args.model}: {len(sets)} head sets (sizes 1-32), {item.n_prompt} + {item.n_target} tokens, "
          f"{torch.get_num_threads()} threads")
    out: dict = {}

    def cached() -> None:
        out["cached"] = ablated_losses(model, item, sets, Ablation(positions="target"))

    def full() -> None:
        out["full"] = ablated_losses(model, item, sets, Ablation(positions="target"), reuse_prompt=False,
                                     batch_size=args.baseline_batch)

    if not args.skip_baseline:
        ablated_losses(model, item, sets[:2], Ablation(positions="target"), batch_size=2)  # warm both paths up once
        ablated_losses(model, item, sets[:2], Ablation(positions="target"), batch_size=2, reuse_prompt=False)
        t_cached, t_full = time_pair(cached, full, repeats=args.repeats, warmup=0)
        diff = float((out["cached"][1] - out["full"][1]).abs().max())
        res.update(cached_s=t_cached, full_s=t_full, speedup=t_full / t_cached, max_abs_diff=diff,
                   clean_diff=abs(out["cached"][0] - out["full"][0]))
        print(f"full re-forward per set (batch {args.baseline_batch})  : {t_full:7.1f} s")
        print(f"cached prompt, gold tokens only (batch {BATCH_SIZE}): {t_cached:7.1f} s")
        print(f"speedup                                 : {res['speedup']:.2f}x   (goal >= 8)")
        print(f"max |loss difference|                   : {diff:.2e}   (clean: {res['clean_diff']:.1e})")
    if args.rss:
        res["rss"] = []
        for b in [int(x) for x in args.rss.split(",")]:
            row = child_json("benchmarks.target_ablation_speed", "--model", args.model, "--prompt-tokens",
                             str(args.prompt_tokens), "--target-tokens", str(args.target_tokens), "--sets",
                             str(args.sets), "--rss-child", str(b))
            res["rss"].append(row)
            print(f"batch {b:4d}: peak RSS {row['peak_rss_mb']:7.0f} MB while scoring (model loaded: "
                  f"{row['rss_mb_before']:5.0f} MB), {row['s_per_set']:.3f} s per set")
    if args.v2:
        variants = {"own": PROFILE_A, "other": PROFILE_B, "none": ""}
        items = {k: example(model.tokenizer, p, args.prompt_tokens, args.target_tokens) for k, p in variants.items()}
        per_variant = {}
        for name, it in items.items():
            t0 = time.perf_counter()
            ablated_losses(model, it, sets, Ablation(positions="target"))
            per_variant[name] = time.perf_counter() - t0
        t_v2 = sum(per_variant.values())
        res.update(v2_example_s=t_v2, v2_variant_s=per_variant, v2_projection_h=t_v2 * 64 * 3 / 3600)
        print(f"one v2 example ({len(sets)} sets per prompt variant): {t_v2:.1f} s = "
              + ", ".join(f"{k} ({items[k].n_prompt} prompt tokens) {v:.1f} s" for k, v in per_variant.items()))
        print(f"projection, 64 users x 3 seeds = 192 examples: {t_v2 * 192 / 3600:.2f} h on this machine")
    return res


if __name__ == "__main__":
    main()
