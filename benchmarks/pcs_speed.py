"""Exact PCS: batched heads + clean-prefix reuse (harness) vs the naive loop (one forward per head with a hook).

    python -m benchmarks.pcs_speed [--model smollm2-135m] [--tokens 128] [--layers 30]

The naive loop is what the paper's released code does (one hooked forward per head per example), here done on the
projection *input* so both compute the same scores. Prints both times, the speed ratio (target >= 3x) and the
maximum absolute score difference (target <= 1e-4).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from harness.arch import shape_of
from harness.heads import Head
from harness.models import hf_module, load_model
from harness.pcs import encode, head_attributions, head_effects, target_nll

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_hooks import hooked_ablation  # noqa: E402


def naive(hf, item, heads, head_dim) -> torch.Tensor:
    ids = item.ids[None]
    with torch.no_grad():
        clean = target_nll(hf(input_ids=ids).logits, ids, item.n_target)[0]
        out = []
        for h in heads:
            with hooked_ablation(hf, {h.layer: [h.head]}, head_dim):
                out.append(target_nll(hf(input_ids=ids).logits, ids, item.n_target)[0] - clean)
    return torch.stack(out)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=128, help="prompt length (the gold target adds ~24)")
    ap.add_argument("--layers", type=int, default=None, help="score heads of the first N layers only (default all)")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    model = load_model(args.model)
    shape = shape_of(model.config)
    tok = model.tokenizer
    text = " ".join(["The user wrote about travel, food and politics in a long diary entry."] * 40)
    prompt = tok.decode(tok(text).input_ids[: args.tokens])
    item = encode(tok, prompt, " My favourite meal on the trip was the grilled fish by the harbour at sunset.")
    n_layers = args.layers or shape.n_layers
    heads = [Head(l, h) for l in range(n_layers) for h in range(shape.n_heads)]
    head_effects(model, item, heads[: shape.n_heads])  # warm up both paths
    naive(hf_module(model), item, heads[:2], shape.head_dim)
    t0 = time.perf_counter()
    ours = head_effects(model, item, heads)[1]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = naive(hf_module(model), item, heads, shape.head_dim)
    t_naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, approx = head_attributions(model, item)
    t_atp = time.perf_counter() - t0
    approx = approx.flatten()[: len(heads)]
    rho = float(spearmanr(approx, ref).statistic)
    diff = float((ours - ref).abs().max())
    res = {"heads": len(heads), "tokens": int(item.ids.shape[0]), "harness_s": t_ours, "naive_s": t_naive,
           "speedup": t_naive / t_ours, "max_abs_diff": diff, "attribution_s": t_atp,
           "attribution_speedup": t_naive / t_atp, "attribution_spearman": rho}
    print(f"{args.model}: {len(heads)} heads, {res['tokens']} tokens, {torch.get_num_threads()} threads")
    print(f"naive loop (1 hooked forward per head) : {t_naive:7.1f} s")
    print(f"harness (batched heads, prefix reuse)  : {t_ours:7.1f} s")
    print(f"speedup                                : {res['speedup']:.2f}x   (target >= 3)")
    print(f"max |score difference|                 : {diff:.2e}   (target <= 1e-4)")
    print(f"attribution PCS (1 fwd + 1 bwd)        : {t_atp:7.1f} s  -> {t_naive / t_atp:.0f}x faster, "
          f"Spearman vs exact {rho:.2f} on this example")
    return res


if __name__ == "__main__":
    main()
