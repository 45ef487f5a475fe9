"""DPS decoding speed vs plain greedy HF ``generate`` on the same prompts and length, and vs the naive two-pass DPS.

    python -m benchmarks.dps_speed [--model smollm2-135m] [--prompts 4] [--tokens 32] [--repeats 3] [--threads N]
        [--prompt-tokens 1024]

DPS runs both branches as one batched forward per step (2 x prompts rows, heads ablated in the masked half, one
KV cache); the naive variant runs two forwards per step, each with its own cache. Prompt-once DPS ablates only at the
positions that predict generated tokens (``Ablation(positions="target")``), so the prompt runs once for both branches.
Each DPS variant is timed alternately with plain generate (benchmarks.common.time_pair). Prints tokens/s and the
ratio DPS / generate (target >= 0.6 on CPU). ``--prompt-tokens N`` prefixes each request with a user profile so
that every prompt has about N tokens (study v2 uses 1024).
"""

from __future__ import annotations

import argparse

import torch

from harness.intervene.ablation import Ablation
from harness.data.tokens import left_padded
from harness.generation.decoding import Contrast, decode
from harness.intervene.heads import HeadSet
from harness.models.registry import hf_module, load_model

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
    ap.add_argument("--prompt-tokens", type=int, default=0, help="pad each prompt to ~N tokens with a profile")
    ap.add_argument("--variants", default="dps,naive,prompt_once", help="DPS variants to time against generate")
    args = ap.parse_args(argv)
    if not 1 <= args.prompts <= len(PROMPTS):
        raise SystemExit(f"--prompts must be in 1..{len(PROMPTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    model = load_model(args.model)
    hf, tok = hf_module(model), model.tokenizer
    prompts = [with_profile(tok, p, args.prompt_tokens) for p in PROMPTS[: args.prompts]]
    heads = HeadSet.parse(args.heads)
    ids, mask = left_padded(tok, prompts)
    steps: dict[str, int] = {}

    def plain() -> None:
        hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                    do_sample=False, pad_token_id=tok.pad_token_id)

    variants = {"dps": ("DPS, one batched forward/step", dict(fused=True)),
                "naive": ("DPS naive, two forwards/step", dict(fused=False)),
                "prompt_once": ("DPS prompt once (target positions)",
                                dict(fused=True, ablation=Ablation(positions="target")))}

    def dps(**kwargs) -> None:
        out = decode(model, prompts, heads=heads, contrast=Contrast(gamma=args.gamma), max_new_tokens=args.tokens,
                     **kwargs)
        steps["dps_steps"] = out.steps

    n = args.prompts
    result = {"model": args.model, "prompts": n, "tokens": args.tokens, "prompt_tokens": int(ids.shape[1]),
              "threads": torch.get_num_threads(), "heads": str(heads), "gamma": args.gamma, "tokens_per_s": {}}
    print(f"model {args.model}, {n} prompts of {ids.shape[1]} tokens (left-padded) x {args.tokens} new tokens, "
          f"{len(heads)} heads, gamma {args.gamma}, {torch.get_num_threads()} threads, median of {args.repeats}")
    for name in args.variants.split(","):
        label, kwargs = variants[name]
        t_dps, t_plain = time_pair(lambda: dps(**kwargs), plain, repeats=args.repeats, warmup=1)
        tps_plain, tps_dps = n * args.tokens / t_plain, n * steps["dps_steps"] / t_dps
        result["tokens_per_s"][name] = tps_dps
        result["tokens_per_s"][f"generate_{name}"] = tps_plain
        result[f"ratio_{name}"] = tps_dps / tps_plain
        if steps["dps_steps"] < args.tokens:
            print(f"note: every {name} row stopped after {steps['dps_steps']} steps; tokens/s counts steps run")
        print(f"plain HF generate (greedy)          : {tps_plain:7.1f} tok/s")
        print(f"{label:<36}: {tps_dps:7.1f} tok/s   ratio {result[f'ratio_{name}']:.3f}")
    return result


def with_profile(tok, request: str, prompt_tokens: int) -> str:
    """The chat prompt of ``request``, after a user profile sized so the prompt has about ``prompt_tokens`` tokens
    (0: no profile)."""
    def chat(profile: str | None) -> str:
        content = request if profile is None else f"Profile of the user (earlier writing):\n{profile}\n\n{request}"
        return tok.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                       tokenize=False)

    if not prompt_tokens:
        return chat(None)
    unit = tok(" ".join(PROMPTS) + " ", add_special_tokens=False).input_ids
    room = max(prompt_tokens - len(tok(chat(""), add_special_tokens=False).input_ids), 0)
    return chat(tok.decode((unit * (room // len(unit) + 1))[:room]))


if __name__ == "__main__":
    main()
