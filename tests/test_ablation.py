"""Invariants of the declarative head ablation on the real local model (SmolLM2-135M, GQA: 9 query / 3 kv heads)."""

import random

import nnsight
import pytest
import torch

from harness.intervene.ablation import Ablation, ablate, ablate_generation, capture, head_means
from harness.models.arch import attention, out_proj, shape_of
from harness.intervene.heads import HeadSet
from reference_hooks import hooked_ablation, logits

PROMPT = "Dear diary, today I walked to the market and bought fresh bread. Then I"
REFS = ["The weather was cold and grey all week.", "Our team shipped the new release on Friday."]


def _trace_logits(model, text, **kw):
    with model.trace(text):
        if kw:
            ablate(model, **kw)
        out = model.output.logits.save()
    return out


def test_empty_head_set_gives_bit_identical_logits(smollm):
    plain = logits(smollm._module, smollm.tokenizer, PROMPT)
    assert torch.equal(_trace_logits(smollm, PROMPT, heads=HeadSet()), plain)
    assert torch.equal(_trace_logits(smollm, PROMPT), plain)


def test_zeroing_every_head_of_a_layer_equals_removing_the_attention_output(smollm):
    layer = 7
    shape = shape_of(smollm.config)
    got = _trace_logits(smollm, PROMPT, heads=HeadSet.parse(f"L{layer}H0-{shape.n_heads - 1}"))
    proj = out_proj(smollm._module, layer)
    bias = proj.bias if getattr(proj, "bias", None) is not None else 0.0

    def replace_output(module, args, output):
        return (torch.zeros_like(output[0]) + bias,) + tuple(output[1:])

    handle = attention(smollm._module, layer).register_forward_hook(replace_output)
    try:
        want = logits(smollm._module, smollm.tokenizer, PROMPT)
    finally:
        handle.remove()
    assert torch.allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["zero", "mean", "resample"])
def test_harness_equals_independent_pre_hook_for_random_head_sets(smollm, mode):
    shape = shape_of(smollm.config)
    rng = random.Random(1234)
    reference = {"zero": None, "mean": head_means(smollm, REFS), "resample": capture(smollm, REFS[0])}[mode]
    for _ in range(3):
        chosen = rng.sample([(l, h) for l in range(shape.n_layers) for h in range(shape.n_heads)], 6)
        heads = HeadSet(chosen)
        got = _trace_logits(smollm, PROMPT, heads=heads, mode=mode, reference=reference)
        replacement = None
        if reference is not None:
            replacement = dict(reference.values)
            if mode == "resample":  # target is longer than the source: the tail takes the source's mean
                t = len(smollm.tokenizer(PROMPT).input_ids)
                replacement = {l: torch.cat([v, v.mean(0, keepdim=True).expand(t - v.shape[0], -1)])
                               for l, v in replacement.items()}
        with hooked_ablation(smollm._module, {l: list(hs) for l, hs in heads.by_layer().items()},
                             shape.head_dim, replacement):
            want = logits(smollm._module, smollm.tokenizer, PROMPT)
        assert torch.equal(got, want), (mode, str(heads), (got - want).abs().max())


def test_gqa_heads_sharing_a_kv_head_are_ablated_independently(smollm):
    # heads 0, 1 and 2 of SmolLM2 share kv head 0
    layer, d = 4, shape_of(smollm.config).head_dim
    with smollm.trace(PROMPT):
        clean = out_proj(smollm, layer).input.clone().save()
    with smollm.trace(PROMPT):
        ablate(smollm, HeadSet.parse(f"L{layer}H0"))
        z = out_proj(smollm, layer).input.clone().save()
    assert torch.count_nonzero(z[..., 0:d]) == 0
    assert torch.equal(z[..., d:], clean[..., d:])
    one = _trace_logits(smollm, PROMPT, heads=HeadSet.parse(f"L{layer}H0"))
    group = _trace_logits(smollm, PROMPT, heads=HeadSet.parse(f"L{layer}H0-2"))
    assert not torch.allclose(one, group)


def test_one_head_changes_every_residual_dimension_not_a_slice_of_them(smollm):
    """Ablating the projection's output (the released code's bug) would change only head_dim residual dimensions."""
    layer = 9
    with smollm.trace(PROMPT):
        clean = attention(smollm, layer).output[0].clone().save()
    with smollm.trace(PROMPT):
        ablate(smollm, HeadSet.parse(f"L{layer}H3"))
        ablated = attention(smollm, layer).output[0].clone().save()
    changed = ((ablated - clean).abs() > 0).any(dim=1)[0]
    assert changed.sum() > 0.9 * changed.numel()  # all 576 dims move, not 64


def test_per_row_head_sets_equal_separate_forwards(smollm):
    sets = [None, HeadSet.parse("L2H1"), HeadSet.parse("L2H1,L20H8")]
    with smollm.trace([PROMPT] * 3):
        ablate(smollm, sets)
        batched = smollm.output.logits.save()
    for row, hs in enumerate(sets):
        single = _trace_logits(smollm, PROMPT, heads=hs or HeadSet())
        assert torch.allclose(batched[row], single[0], atol=1e-5, rtol=0)


def test_an_index_limits_the_ablation_to_its_positions(smollm):
    heads = HeadSet.parse("L1H0-8,L2H0-8")
    n = len(smollm.tokenizer(PROMPT).input_ids)
    last_only = _trace_logits(smollm, PROMPT, heads=heads, at=[n - 1])
    clean = _trace_logits(smollm, PROMPT)
    assert torch.equal(last_only[0, : n - 1], clean[0, : n - 1])  # causal: earlier positions untouched
    assert not torch.allclose(last_only[0, -1], clean[0, -1])


@pytest.mark.filterwarnings("ignore:.*was never reached")  # the open step loop ends this way
def test_ablation_applies_at_every_generation_step(smollm):
    heads = HeadSet.parse("L0H0-8,L5H2")
    shape = shape_of(smollm.config)
    with smollm.generate(max_new_tokens=8, do_sample=False) as tracer:
        with tracer.invoke(PROMPT):
            ablate_generation(smollm, tracer, heads)
        with tracer.invoke():
            ids = tracer.result.save()
    enc = smollm.tokenizer(PROMPT, return_tensors="pt")
    with hooked_ablation(smollm._module, {0: list(range(9)), 5: [2]}, shape.head_dim), torch.no_grad():
        want = smollm._module.generate(**enc, max_new_tokens=8, do_sample=False)
    assert torch.equal(ids[0], want[0])


def _generated(model, heads, steps: int = 4, ablation: Ablation = Ablation()):
    """Each step's last-position logits and the greedy ids, ``heads`` ablated by ablate_generation (None: clean).

    Nothing runs after an open step loop in its invoke, so the logits and the ids are read in invokes of their own.
    """
    with model.generate(max_new_tokens=steps, min_new_tokens=steps, do_sample=False) as tracer:
        with tracer.invoke(PROMPT):
            if heads is not None:
                ablate_generation(model, tracer, heads, ablation)
        with tracer.invoke():
            step_logits = nnsight.save(list())
            for _ in tracer.all():
                step_logits.append(model.lm_head.output[0, -1])
        with tracer.invoke():
            ids = tracer.result.save()
    return torch.stack(step_logits), ids


@pytest.mark.filterwarnings("ignore:.*was never reached")  # the open step loops end this way
def test_generated_positions_ablate_every_new_token_but_not_the_prompt_pass(smollm):
    heads = HeadSet.parse("L0H0-8,L1H0-8")
    got, ids = _generated(smollm, heads, ablation=Ablation(positions="generated"))
    clean, clean_ids = _generated(smollm, None)
    every_step, _ = _generated(smollm, heads)
    assert got.shape == clean.shape == (4, len(smollm.tokenizer))
    n = smollm.tokenizer(PROMPT, return_tensors="pt").input_ids.shape[1]
    assert torch.equal(got[0], clean[0]) and ids[0, n] == clean_ids[0, n]  # the prompt pass is left alone
    assert not torch.allclose(every_step[0], clean[0])  # ... though these heads do move it when ablated there
    for step in range(1, 4):  # and every new token's pass is ablated
        assert not torch.allclose(got[step], clean[step]), step


def test_mean_ablation_without_reference_is_an_error(smollm):
    with pytest.raises(ValueError, match="reference"):
        with smollm.trace(PROMPT):
            ablate(smollm, HeadSet.parse("L1H1"), mode="mean")


def test_unknown_mode_is_an_error(smollm):
    with pytest.raises(ValueError, match="unknown ablation mode 'noise'"):
        with smollm.trace(PROMPT):
            ablate(smollm, HeadSet.parse("L1H1"), mode="noise")


def test_out_of_range_head_is_an_error_naming_the_shape(smollm):
    with pytest.raises(ValueError, match="30 layers x 9 heads"):
        with smollm.trace(PROMPT):
            ablate(smollm, "L40H2")


def test_head_means_need_prompts(smollm):
    with pytest.raises(ValueError, match="at least one"):
        head_means(smollm, [])
