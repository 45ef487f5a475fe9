"""Cost of a declarative nnsight head ablation vs the same ablation as a plain torch forward pre-hook.

    python -m benchmarks.ablation_overhead [--model smollm2-135m] [--tokens 256] [--repeats 10]

Prints both medians and the ratio nnsight / hook (target <= 1.2), plus the max logit difference (must be 0).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from harness.intervene.ablation import ablate
from harness.models.arch import shape_of
from harness.intervene.heads import HeadSet
from harness.models.registry import hf_module, load_model

from .common import time_pair

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_hooks import hooked_ablation  # noqa: E402  (the independent implementation the tests use)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--heads", default="L3H1,L3H4,L10H0,L17H2,L25H8")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    model = load_model(args.model)
    hf, tok = hf_module(model), model.tokenizer
    shape = shape_of(model.config)
    heads = HeadSet.parse(args.heads, shape)
    text = " ".join(["The user wrote about travel, food and politics in a long diary entry."] * 64)
    ids = tok(text, return_tensors="pt", truncation=True, max_length=args.tokens)
    out = {}

    def nnsight_run():
        with model.trace(ids.input_ids):
            ablate(model, heads)
            out["nnsight"] = model.output.logits.save()

    def hook_run():
        with hooked_ablation(hf, {l: list(h) for l, h in heads.by_layer().items()}, shape.head_dim):
            out["hook"] = hf(input_ids=ids.input_ids).logits

    t_nn, t_hook = time_pair(nnsight_run, hook_run, repeats=args.repeats)
    diff = (out["nnsight"] - out["hook"]).abs().max().item()
    result = {"model": args.model, "tokens": int(ids.input_ids.shape[1]), "heads": str(heads),
              "nnsight_s": t_nn, "hook_s": t_hook, "ratio": t_nn / t_hook, "max_abs_logit_diff": diff}
    print(f"model {args.model}, {result['tokens']} tokens, {len(heads)} heads ablated, {torch.get_num_threads()} threads")
    print(f"nnsight trace + ablate : {t_nn * 1000:8.1f} ms (median of {args.repeats})")
    print(f"torch forward pre-hook : {t_hook * 1000:8.1f} ms")
    print(f"ratio nnsight / hook   : {result['ratio']:.3f}   (target <= 1.2)")
    print(f"max |logit diff|       : {diff:.3g}")
    return result


if __name__ == "__main__":
    main()
