"""DPS decoding speed vs plain greedy HF ``generate`` on the same prompts and length, and vs the naive two-pass DPS.

    python -m benchmarks.dps_speed [--model smollm2-135m] [--prompts 4] [--tokens 32] [--repeats 3] [--threads N]

DPS runs both branches as one batched forward per step (2 x prompts rows, heads ablated in the masked half, one
KV cache); the naive variant runs two forwards per step, each with its own cache. Each DPS variant is timed
alternately with plain generate (benchmarks.common.time_pair). Prints tokens/s and the ratio DPS / generate
(target >= 0.6 on CPU).
"""

from __future__ import annotations

import argparse

import torch

from harness.decoding import Contrast, decode, encode
from harness.heads import HeadSet
from harness.models import hf_module, load_model

from .common import time_pair

PROMPTS = [
    "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle.",
    "Describe, step by step, how to bake sourdough bread at home.",
    "Explain the history of the printing press and why it changed Europe.",
    "Write a letter to a friend about your summer holiday in the mountains.",
    "Give a detailed review of a small Italian restaurant you visited last week.",
    "Tell me about the life cycle of a star, from nebula to white dwarf.",
    "Write an essay on why cities should build more bicycle lanes.",
    "Describe a busy morning at a fish market by the harbour.",
]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--heads", default="L3H1,L3H4,L10H0,L17H2,L25H8")
    ap.add_argument("--gamma", type=float, default=0.5)
    args = ap.parse_args(argv)
    if not 1 <= args.prompts <= len(PROMPTS):
        raise SystemExit(f"--prompts must be in 1..{len(PROMPTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    model = load_model(args.model)
    hf, tok = hf_module(model), model.tokenizer
    prompts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
               for p in PROMPTS[: args.prompts]]
    heads = HeadSet.parse(args.heads)
    ids, mask = encode(tok, prompts)
    steps: dict[str, int] = {}

    def plain() -> None:
        hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                    do_sample=False, pad_token_id=tok.pad_token_id)

    def dps(fused: bool) -> None:
        out = decode(model, prompts, heads=heads, contrast=Contrast(gamma=args.gamma), max_new_tokens=args.tokens,
                     fused=fused)
        steps["dps_steps"] = out.steps

    t_fused, t_plain_a = time_pair(lambda: dps(True), plain, repeats=args.repeats, warmup=1)
    n_fused = steps["dps_steps"]
    t_naive, t_plain_b = time_pair(lambda: dps(False), plain, repeats=args.repeats, warmup=1)
    n_naive = steps["dps_steps"]
    n = args.prompts
    tps = {"generate_a": n * args.tokens / t_plain_a, "dps": n * n_fused / t_fused,
           "generate_b": n * args.tokens / t_plain_b, "naive": n * n_naive / t_naive}
    result = {"model": args.model, "prompts": n, "tokens": args.tokens, "dps_steps": n_fused, "threads":
              torch.get_num_threads(), "heads": str(heads), "gamma": args.gamma, "tokens_per_s": tps,
              "ratio_dps": tps["dps"] / tps["generate_a"], "ratio_naive": tps["naive"] / tps["generate_b"]}
    print(f"model {args.model}, {n} prompts x {args.tokens} new tokens, {len(heads)} heads, gamma {args.gamma}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    if n_fused < args.tokens:
        print(f"note: every DPS row stopped after {n_fused} steps; tokens/s counts the steps actually run")
    print(f"plain HF generate (greedy)     : {tps['generate_a']:7.1f} tok/s")
    print(f"DPS, one batched forward/step  : {tps['dps']:7.1f} tok/s   ratio {result['ratio_dps']:.3f} "
          f"(target >= 0.6)")
    print(f"plain HF generate (2nd pairing): {tps['generate_b']:7.1f} tok/s")
    print(f"DPS naive, two forwards/step   : {tps['naive']:7.1f} tok/s   ratio {result['ratio_naive']:.3f}")
    return result


if __name__ == "__main__":
    main()
