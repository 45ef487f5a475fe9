"""Exact PCS: batched heads + clean-prefix reuse (harness) vs the naive loop (one forward per head with a hook).

    python -m benchmarks.pcs_speed [--model smollm2-135m] [--tokens 128] [--layers 30] [--positions target]
        [--target-tokens 64]

The naive loop is what the paper's released code does (one hooked forward per head per example), here done on the
projection *input* so both compute the same scores. ``--positions target`` ablates only at the target positions
(the naive hook too); the harness then runs the prompt once and each layer's heads over the gold tokens only.
Prints both times, the speed ratio (target >= 3x) and the maximum absolute score difference (target <= 1e-4).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from harness.models.arch import shape_of
from harness.intervene.heads import Head
from harness.models.registry import hf_module, load_model
from harness.data.tokens import encode
from harness.intervene.ablation import Ablation
from harness.intervene.pcs import head_attributions, head_effects, target_nll

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_hooks import hooked_ablation  # noqa: E402


def naive(hf, item, heads, head_dim, positions: str = "all") -> torch.Tensor:
    ids = item.ids[None]
    at = item.target_positions if positions == "target" else None
    with torch.no_grad():
        clean = target_nll(hf(input_ids=ids).logits, ids, item.n_target)[0]
        out = []
        for h in heads:
            with hooked_ablation(hf, {h.layer: [h.head]}, head_dim, positions=at):
                out.append(target_nll(hf(input_ids=ids).logits, ids, item.n_target)[0] - clean)
    return torch.stack(out)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=128, help="prompt length (the gold target adds ~24)")
    ap.add_argument("--layers", type=int, default=None, help="score heads of the first N layers only (default all)")
    ap.add_argument("--positions", choices=["all", "target"], default="all", help="where heads are ablated")
    ap.add_argument("--target-tokens", type=int, default=64, help="gold tokens kept (the gold text has ~80)")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    model = load_model(args.model)
    shape = shape_of(model.config)
    tok = model.tokenizer
    text = " ".join(["The user wrote about travel, food and politics in a long diary entry."] * 100)
    prompt = tok.decode(tok(text).input_ids[: args.tokens])
    gold = (" My favourite meal on the trip was the grilled fish by the harbour at sunset. The waiter brought it "
            "with lemon, bread and a small salad, and we ate it slowly while the boats came in. Later we walked "
            "along the old town walls, bought figs at the market and watched the lights come on across the bay.")
    item = encode(tok, prompt, gold if args.positions == "target" else gold.split(". ")[0] + ".",
                  max_target_tokens=args.target_tokens)
    n_layers = args.layers or shape.n_layers
    heads = [Head(l, h) for l in range(n_layers) for h in range(shape.n_heads)]
    head_effects(model, item, heads[: shape.n_heads], Ablation(positions=args.positions))  # warm up both paths
    naive(hf_module(model), item, heads[:2], shape.head_dim, args.positions)
    t0 = time.perf_counter()
    ours = head_effects(model, item, heads, Ablation(positions=args.positions))[1]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = naive(hf_module(model), item, heads, shape.head_dim, args.positions)
    t_naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, approx = head_attributions(model, item, Ablation(positions=args.positions))
    t_atp = time.perf_counter() - t0
    approx = approx.flatten()[: len(heads)]
    rho = float(spearmanr(approx, ref).statistic)
    diff = float((ours - ref).abs().max())
    res = {"heads": len(heads), "tokens": int(item.ids.shape[0]), "positions": args.positions,
           "harness_s": t_ours, "naive_s": t_naive,
           "speedup": t_naive / t_ours, "max_abs_diff": diff, "attribution_s": t_atp,
           "attribution_speedup": t_naive / t_atp, "attribution_spearman": rho}
    print(f"{args.model}: {len(heads)} heads, {item.n_prompt} + {item.n_target} tokens, ablated at "
          f"{args.positions} positions, {torch.get_num_threads()} threads")
    print(f"{'naive loop (1 hooked forward per head)':<50}: {t_naive:7.1f} s")
    label = f"harness (batched heads, prefix reuse{', prompt once' if args.positions == 'target' else ''})"
    print(f"{label:<50}: {t_ours:7.1f} s")
    print(f"speedup                                           : {res['speedup']:.2f}x   (target >= 3)")
    print(f"max |score difference|                            : {diff:.2e}   (target <= 1e-4)")
    print(f"attribution PCS (1 fwd + 1 bwd)                   : {t_atp:7.1f} s  -> {t_naive / t_atp:.0f}x faster, "
          f"Spearman vs exact {rho:.2f} on this example")
    return res


if __name__ == "__main__":
    main()
