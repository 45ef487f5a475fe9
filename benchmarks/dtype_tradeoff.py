"""Why the studies run in float32: bfloat16 is faster on a CPU with AMX, but its error is the size of the effects.

    python -m benchmarks.dtype_tradeoff [--model smollm2-135m] [--examples 2] [--prompt-tokens 1024] [--k 8]

For each of ``--examples`` conventions2012 examples (own profile, the full preset's prompt), computes the exact effect
of ablating every head (zero, all positions: ``pcs.head_effects``) with the model loaded in float32 and in bfloat16,
alternating the two, and prints per example: both clean losses, both wall times and their ratio, the spread of the
float32 effects, the mean and largest |difference| of the bfloat16 effects, their Spearman correlation and the top-10
overlap. Measured on this project's 2-core Xeon (AMX, SmolLM2-135M, 587- and 620-token inputs): bfloat16 2.2x faster,
mean |diff| 0.006-0.008 nats and max 0.022 against effects of sd 0.035, Spearman 0.92-0.94, top-10 overlap 9-10 of
10 -- an error about a fifth of the head-set effects the studies compare (0.03-0.05 nats), so committed runs stay in
float32.
"""

from __future__ import annotations

import argparse
import time

import torch
from scipy.stats import spearmanr

from harness.data import load_examples
from harness.data.prompts import build_prompt
from harness.models.registry import load_model
from harness.data.tokens import encode
from harness.intervene.ablation import Ablation
from harness.intervene.pcs import head_effects


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--examples", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=1024)
    ap.add_argument("--k", type=int, default=8, help="profile items in the prompt")
    args = ap.parse_args(argv)
    models = {dt: load_model(args.model, dtype=dt) for dt in (torch.float32, torch.bfloat16)}
    tokenizer = models[torch.float32].tokenizer
    for i, example in enumerate(load_examples("conventions2012", n=max(8, args.examples), seed=0)[:args.examples]):
        prompt = build_prompt(example, tokenizer, max_prompt_tokens=args.prompt_tokens, k=args.k)
        item = encode(tokenizer, prompt.with_profile, prompt.target, max_target_tokens=64)
        runs = {}
        for dt, model in models.items():  # alternated per example: drift hits both
            start = time.perf_counter()
            clean, deltas = head_effects(model, item, ablation=Ablation("zero", positions="all"))
            runs[dt] = (clean, deltas.flatten().float(), time.perf_counter() - start)
        (c32, d32, t32), (c16, d16, t16) = runs[torch.float32], runs[torch.bfloat16]
        diff = (d32 - d16).abs()
        top = len(set(d32.topk(10).indices.tolist()) & set(d16.topk(10).indices.tolist()))
        print(f"example {i} ({item.ids.shape[0]} tokens): clean loss {c32:.4f} (float32) vs {c16:.4f} (bfloat16); "
              f"{t32:.1f} s vs {t16:.1f} s ({t32 / t16:.1f}x); effects sd {d32.std():.4f}, |diff| mean "
              f"{diff.mean():.4f} max {diff.max():.4f}; Spearman {spearmanr(d32, d16)[0]:.3f}; top-10 overlap {top}",
              flush=True)


if __name__ == "__main__":
    main()
