"""PCS: exact scores against a brute-force hook loop, attribution against finite differences."""

import pytest
import torch

from harness.intervene.ablation import Ablation, head_means
from harness.models.arch import shape_of
from harness.intervene.heads import Head, HeadSet, all_heads, top_heads
from harness.data.tokens import encode
from harness.intervene.pcs import head_attributions, head_effects
from reference_hooks import hooked_ablation

PROMPT = "The user writes about gardening and tomatoes. Write a note:"
TARGET = " My tomatoes are ripe and the basil loves the sun."


def gold_nll(logits, item):
    """Mean NLL of the gold target, sliced by hand (not harness.intervene.pcs.target_nll): position t's logits score token t+1."""
    positions = torch.arange(item.n_prompt - 1, item.ids.shape[0] - 1)  # [n_target] positions predicting the target
    logprobs = logits[0, positions].double().log_softmax(-1)  # [n_target, V]
    gold = item.ids[positions + 1]  # [n_target] = the last n_target ids
    assert torch.equal(gold, item.ids[-item.n_target:])
    return -logprobs.gather(-1, gold[:, None]).mean()


def brute_force(model, item, heads, replacement=None):
    """One forward per head with a plain pre-hook: the paper code's naive loop, done right (projection input)."""
    hf, d = model._module, shape_of(model.config).head_dim
    with torch.no_grad():
        clean = gold_nll(hf(input_ids=item.ids[None]).logits, item)
    out = []
    for h in heads:
        with hooked_ablation(hf, {h.layer: [h.head]}, d, replacement), torch.no_grad():
            out.append(gold_nll(hf(input_ids=item.ids[None]).logits, item) - clean)
    return clean, torch.stack(out).float()


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("batch_size,reuse", [(None, True), (5, True), (1, False), (12, False)])
def test_exact_pcs_equals_brute_force(tiny_models, family, batch_size, reuse):
    model = tiny_models[family]
    item = encode(model.tokenizer, PROMPT, TARGET)
    heads = list(all_heads(shape_of(model.config)))
    clean, deltas = head_effects(model, item, heads, batch_size=batch_size, reuse_prefix=reuse)
    want_clean, want = brute_force(model, item, heads)
    assert abs(clean - float(want_clean)) < 1e-5
    assert torch.allclose(deltas, want, atol=1e-5, rtol=0)
    assert deltas.abs().max() > 0


def test_exact_pcs_keeps_the_callers_head_order(tiny_models):
    model = tiny_models["llama"]
    item = encode(model.tokenizer, PROMPT, TARGET)
    heads = [Head(2, 1), Head(0, 3), Head(1, 0)]
    _, deltas = head_effects(model, item, heads)
    _, want = brute_force(model, item, sorted(heads))
    assert torch.allclose(deltas, want[[2, 0, 1]], atol=1e-5, rtol=0)


def test_mean_ablation_pcs_equals_brute_force(tiny_models):
    model = tiny_models["llama"]
    item = encode(model.tokenizer, PROMPT, TARGET)
    reference = head_means(model, ["some reference text", "another reference sentence here"])
    heads = list(all_heads(shape_of(model.config)))
    _, deltas = head_effects(model, item, heads, Ablation("mean", reference))
    _, want = brute_force(model, item, heads, replacement=reference.values)
    assert torch.allclose(deltas, want, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def tiny64(tokenizer):
    """A float64 tiny Llama, so finite differences are accurate."""
    from nnsight import TransformersModel
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, bos_token_id=None, eos_token_id=None,
                      pad_token_id=None)
    hf = AutoModelForCausalLM.from_config(cfg).to(torch.float64).eval().requires_grad_(False)
    return TransformersModel(hf, tokenizer=tokenizer)


def test_attribution_matches_finite_difference(tiny64):
    """AtP is the first-order term: partial ablation by eps changes the loss by eps * estimate + O(eps^2)."""
    model = tiny64
    item = encode(model.tokenizer, PROMPT, TARGET)
    shape = shape_of(model.config)
    _, est = head_attributions(model, item)
    hf, d, eps = model._module, shape.head_dim, 1e-2  # smaller eps hits float32 parts of the forward (rotary)
    ids = item.ids[None]
    from harness.models.arch import out_proj

    def loss_with_head_scaled(h, factor):
        def pre(module, args):
            x = args[0].clone()
            x[..., h.head * d:(h.head + 1) * d] *= factor
            return (x,) + tuple(args[1:])

        handle = out_proj(hf, h.layer).register_forward_pre_hook(pre)
        try:
            with torch.no_grad():
                return gold_nll(hf(input_ids=ids).logits, item)
        finally:
            handle.remove()

    for h in [Head(0, 1), Head(1, 3), Head(2, 0)]:
        # moving z_h towards the replacement 0 by eps: central difference of L(z - eps z) vs L(z + eps z)
        fd = (loss_with_head_scaled(h, 1 - eps) - loss_with_head_scaled(h, 1 + eps)) / (2 * eps)
        assert torch.isclose(est[h.layer, h.head].double(), fd, rtol=1e-4, atol=1e-9), (h, float(est[h.layer, h.head]), float(fd))


def test_attribution_runs_with_frozen_weights(tiny64):
    assert not any(p.requires_grad for p in tiny64._module.parameters())
    _, est = head_attributions(tiny64, encode(tiny64.tokenizer, PROMPT, TARGET))
    assert est.shape == (3, 4) and torch.isfinite(est).all() and est.abs().sum() > 0


def test_top_heads_orders_by_score_and_can_exclude():
    scores = torch.tensor([[0.1, 0.9], [0.5, 0.7]])
    assert str(top_heads(scores, 2)) == "L0H1,L1H1"
    assert str(top_heads(scores, 2, exclude=HeadSet.parse("L0H1"))) == "L1H0,L1H1"


def test_empty_target_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="empty gold target"):
        encode(tokenizer, PROMPT, "")


def test_exact_pcs_on_smollm2_equals_brute_force_for_a_few_heads(smollm):
    item = encode(smollm.tokenizer, PROMPT, TARGET)
    heads = [Head(0, 0), Head(3, 4), Head(3, 5), Head(17, 8), Head(29, 2)]
    _, deltas = head_effects(smollm, item, heads, batch_size=3)
    _, want = brute_force(smollm, item, heads)
    assert torch.allclose(deltas, want, atol=1e-4, rtol=0)
