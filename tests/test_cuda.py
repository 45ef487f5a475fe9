"""The harness's measurements on a CUDA-resident model, as a GPU-hosted NDIF model runs them.

NDIF's worker moves a request's model inputs to the GPU; nothing guarantees that it moves the tensors the harness
builds on the CPU and then uses inside a trace (gold ids, reference activations, head masks, steering vectors), so
those must follow the activations' device themselves. The loopback NDIF tests serve on the CPU, where a stray CPU
tensor goes unnoticed; here each measurement runs on a tiny random model placed on the GPU with
``harness.models.registry.place`` (inputs moved at the model's forward, as the worker does) and must match the same call on a
CPU copy of the model.

These tests need a CUDA GPU, which neither CI nor a developer's machine here has: they are skipped there and run on
the project's device machine (``pytest --noconftest tests/test_cuda.py``; ``CUDA_CHECK_TOKENIZER`` names a folder
holding SmolLM2's tokenizer when its model is not materialized).
"""

from __future__ import annotations

import copy
import os
import random
import warnings

import pytest
import torch

from harness.intervene.ablation import Ablation, capture, head_means
from harness.models.arch import shape_of
from harness.generation.decoding import Contrast, Steering, decode
from harness.intervene.heads import Head, HeadSet, random_headset
from harness.scorers.induction import induction_scores
from harness.models.registry import place
from harness.data.tokens import TokenizedInput
from harness.intervene.pcs import ablated_losses, head_attributions, head_effects, token_nlls
from tiny_configs import tiny_config

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")]

ATOL = 2e-4  # float32 on two devices: reductions in another order (cuBLAS vs CPU BLAS), sdpa kernels
FAMILIES = ("llama", "gemma3_text", "gpt2")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    folder = os.environ.get("CUDA_CHECK_TOKENIZER")
    if not folder:
        from harness.models.registry import resolve

        folder = resolve("smollm2-135m")
    return AutoTokenizer.from_pretrained(folder)


def _config(family: str, vocab: int, attn: str):
    # wider and deeper than conftest's tiny models, and Gemma-3's sliding window shorter than the prompts
    return tiny_config(family, vocab, width=64, layers=4, sliding_window=24 if family == "gemma3_text" else None,
                       attn=attn)


def _pair(tokenizer, family: str, attn: str = "sdpa"):
    """(cpu model, cuda model): the same random weights, the second placed on the GPU."""
    from nnsight import TransformersModel
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(_config(family, len(tokenizer), attn)).eval().requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu = TransformersModel(hf, tokenizer=tokenizer)
        gpu = TransformersModel(copy.deepcopy(hf), tokenizer=tokenizer)
    return cpu, place(gpu, "cuda")


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request, tokenizer):
    return request.param, *_pair(tokenizer, request.param)


def _item(seed: int, vocab: int, n: int = 80, n_target: int = 12) -> TokenizedInput:
    g = torch.Generator().manual_seed(seed)
    return TokenizedInput(torch.randint(5, vocab, (n,), generator=g), n_target, profile=(8, 40))


def _sets(shape, k: int = 9) -> list[HeadSet]:
    rng = random.Random(0)
    sets = [HeadSet([]), HeadSet([Head(0, 0)]), HeadSet([Head(shape.n_layers - 1, shape.n_heads - 1)])]
    sets += [random_headset(shape, rng, k=rng.randint(1, 5)) for _ in range(k - len(sets))]
    return sets


def _close(a, b, what: str) -> None:
    """GPU result ``a`` within ``ATOL`` of CPU result ``b`` (tensors or lists), as the remote tests compare theirs."""
    torch.testing.assert_close(torch.as_tensor(a).cpu().float(), torch.as_tensor(b).cpu().float(), atol=ATOL, rtol=0,
                               msg=lambda m: f"{what}: GPU and CPU differ\n{m}")


@pytest.mark.parametrize("mode", ["zero", "mean", "resample"])
@pytest.mark.parametrize("positions", ["all", "target", "profile"])
def test_ablated_losses_on_gpu_match_cpu(pair, mode, positions):
    family, cpu, gpu = pair
    shape = shape_of(cpu.config)
    vocab = cpu.config.vocab_size
    item = _item(1, vocab)
    refs = {}
    for name, model in (("cpu", cpu), ("gpu", gpu)):
        if mode == "mean":
            refs[name] = head_means(model, [_item(s, vocab).ids[None] for s in (2, 3)])
        elif mode == "resample":
            refs[name] = capture(model, _item(4, vocab, n=60).ids[None])
        else:
            refs[name] = None
    if refs["cpu"] is not None:
        for layer in refs["cpu"].values:
            _close(refs["gpu"].values[layer], refs["cpu"].values[layer], f"{family} {mode} reference layer {layer}")
    sets = _sets(shape)
    for reuse in (True, False):
        kw = dict(batch_size=4, reuse_prefix=reuse, reuse_prompt=reuse)
        clean_c, loss_c = ablated_losses(cpu, item, sets, Ablation(mode, refs["cpu"], positions), **kw)
        clean_g, loss_g = ablated_losses(gpu, item, sets, Ablation(mode, refs["gpu"], positions), **kw)
        assert loss_g.device.type == "cpu"  # results come back to the CPU
        _close(clean_g, clean_c, f"{family} clean loss")
        _close(loss_g, loss_c, f"{family} {mode}/{positions} ablated losses (reuse {reuse})")
        assert float((loss_c - clean_c).abs().max()) > 1e-4  # the sets change the loss: the comparison has content
    per_tok_c = ablated_losses(cpu, item, sets[:3], Ablation(mode, refs["cpu"], positions), per_token=True)[1]
    per_tok_g = ablated_losses(gpu, item, sets[:3], Ablation(mode, refs["gpu"], positions), per_token=True)[1]
    _close(per_tok_g, per_tok_c, f"{family} per-token losses")


def test_exact_and_attribution_pcs_on_gpu_match_cpu(pair):
    family, cpu, gpu = pair
    item = _item(5, cpu.config.vocab_size)
    _close(token_nlls(gpu, item), token_nlls(cpu, item), f"{family} token NLLs")
    target = Ablation(positions="target")
    _close(head_effects(gpu, item, ablation=target)[1], head_effects(cpu, item, ablation=target)[1],
           f"{family} exact head effects")
    mean_c = head_means(cpu, [_item(6, cpu.config.vocab_size).ids[None]])
    mean_g = head_means(gpu, [_item(6, gpu.config.vocab_size).ids[None]])
    for mode, ref_c, ref_g in (("zero", None, None), ("mean", mean_c, mean_g)):
        for positions in ("all", "target"):
            clean_c, est_c = head_attributions(cpu, item, Ablation(mode, ref_c, positions))
            clean_g, est_g = head_attributions(gpu, item, Ablation(mode, ref_g, positions))
            assert abs(clean_c - clean_g) <= ATOL
            _close(est_g, est_c, f"{family} attribution PCS ({mode}, {positions})")


@pytest.mark.parametrize("variant", ["dps-all", "dps-target", "dps-generated", "dps-mean-adaptive", "cad",
                                     "uncached"])
def test_dps_decoding_on_gpu_matches_cpu(pair, variant):
    family, cpu, gpu = pair
    shape = shape_of(cpu.config)
    heads = random_headset(shape, 7, k=4)
    prompts = ["The senator said that the budget", "Thank you all. Tonight we"]
    kw: dict = dict(max_new_tokens=8, record_delta=3)
    if variant == "cad":
        kw.update(second=["the budget", "Tonight we"], contrast=Contrast(gamma=1.0))
    else:
        kw.update(heads=heads, contrast=Contrast(gamma=0.5))
    positions = {"dps-target": "target", "dps-generated": "generated"}.get(variant, "all")
    if variant == "uncached":
        kw.update(use_cache=False)
    ablations = {name: Ablation(positions=positions) for name in ("cpu", "gpu")}
    if variant == "dps-mean-adaptive":
        for name, model in (("cpu", cpu), ("gpu", gpu)):
            ablations[name] = Ablation("mean", head_means(model, [_item(8, cpu.config.vocab_size).ids[None]]))
        kw.update(contrast=Contrast(gamma=0.5, schedule="entropy", alpha=0.1))
    out_c = decode(cpu, prompts, ablation=ablations["cpu"], **kw)
    out_g = decode(gpu, prompts, ablation=ablations["gpu"], **kw)
    assert out_g.token_ids == out_c.token_ids, f"{family} {variant}: the GPU decoded other tokens"
    _close(torch.tensor(sum(out_g.gammas, [])), torch.tensor(sum(out_c.gammas, [])), f"{family} {variant} gammas")
    _close(out_g.delta_top["promoted"], out_c.delta_top["promoted"], f"{family} {variant} promoted Δ-logits")


def test_steered_decoding_and_induction_scores_on_gpu_match_cpu(tokenizer):
    prompts = ["A short one.", "A somewhat longer text about the convention and the party platform."]
    for family in FAMILIES:
        cpu, gpu = _pair(tokenizer, family)
        vectors = torch.randn(2, cpu.config.hidden_size, generator=torch.Generator().manual_seed(9))
        steer = Steering(layer=2, vectors=vectors, alpha=4.0)
        out_c = decode(cpu, prompts, steering=steer, max_new_tokens=8)
        out_g = decode(gpu, prompts, steering=steer, max_new_tokens=8)
        assert out_g.token_ids == out_c.token_ids, f"{family} steered decoding: the GPU decoded other tokens"
        assert out_c.token_ids != decode(cpu, prompts, max_new_tokens=8).token_ids  # the steering acts
        cpu, gpu = _pair(tokenizer, family, attn="eager")
        ind_c = induction_scores(cpu, n_sequences=4, seq_len=16, batch_size=2)
        ind_g = induction_scores(gpu, n_sequences=4, seq_len=16, batch_size=2)
        _close(ind_g.scores, ind_c.scores, f"{family} induction scores")
