"""Target-position ablation against one cached prompt equals a full re-forward ablating the target positions.

Tiny random models of every supported family (a Gemma-3 with a sliding window shorter than the prompt), the real
SmolLM2 and Gemma-3-270M (prompt longer than its 512-token window), three prompt variants (own profile, another
user's, none), batches of 1 / 7 / 16 random multi-layer head sets, and an independent forward-pre-hook reference.
"""

from __future__ import annotations

import os
import random
import warnings

import pytest
import torch

from harness.intervene.ablation import Ablation, capture, head_means
from harness.models.arch import shape_of
from harness.intervene.heads import Head, HeadSet
from harness.data.tokens import TokenizedInput, encode
from harness.intervene.pcs import ablated_losses, head_attributions, head_effects, target_nll
from harness.intervene.prompt_cache import batch_cache, continuation, window_reference
from reference_hooks import hooked_ablation

PROFILE = "Alice writes short, dry answers about gardening, tomatoes and rain. "
OTHER = "Bob tells long, cheerful stories about sailing boats, harbours and the open sea. "
TASK = "Write a note about the weekend:"
TARGET = " My tomatoes are ripe and the basil loves the sun, but the slugs came back after the rain."
VARIANTS = {"own": PROFILE + TASK, "other": OTHER + TASK, "none": TASK}
WINDOW = 8  # the tiny Gemma-3's sliding window: far shorter than the prompts


def random_sets(model, n: int, seed: int = 0, max_size: int = 6) -> list[HeadSet]:
    """``n`` random multi-layer head sets (1 to ``max_size`` heads each)."""
    shape, rng = shape_of(model.config), random.Random(seed)
    return [HeadSet(Head(rng.randrange(shape.n_layers), rng.randrange(shape.n_heads))
                    for _ in range(rng.randint(1, max_size))) for _ in range(n)]


def hooked_losses(model, item: TokenizedInput, sets, replacement=None, positions=None) -> torch.Tensor:
    """Independent reference: one plain HF forward per set, a pre-hook editing the slices at ``positions`` (default:
    the target positions)."""
    hf, d, ids = model._module, shape_of(model.config).head_dim, item.ids[None]
    positions = item.target_positions if positions is None else positions
    out = []
    for hs in sets:
        with hooked_ablation(hf, {layer: list(h) for layer, h in hs.by_layer().items()}, d, replacement,
                             positions=positions), torch.no_grad():
            out.append(target_nll(hf(input_ids=ids).logits, ids, item.n_target)[0])
    return torch.stack(out)


@pytest.fixture(scope="module")
def families(tiny_models, tokenizer):
    """The tiny models plus a tiny Gemma-3 whose sliding window is shorter than every prompt (hybrid cache)."""
    from nnsight import TransformersModel
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=WINDOW,
                              layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                              bos_token_id=None, eos_token_id=None, pad_token_id=None)
    hf = AutoModelForCausalLM.from_config(config).eval().requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        windowed = TransformersModel(hf, tokenizer=tokenizer)
    return {**tiny_models, "gemma3_window": windowed}


@pytest.fixture(scope="module")
def gemma3():
    from harness.models.registry import load_model

    return load_model("gemma3-270m")


# ------------------------------------------------------------------------------------------ definitions


def test_target_positions_are_the_positions_that_predict_the_gold_tokens():
    item = TokenizedInput(torch.arange(10), 3)
    assert item.target_positions == slice(6, 9)
    logits = torch.randn(1, 10, 12)
    assert torch.equal(target_nll(logits, item.ids[None], 3), target_nll(logits[:, 6:9], item.ids[None], 3))


def test_batch_cache_shares_the_prompt_and_leaves_it_untouched(families):
    hf = families["gemma3_window"]._module
    ids = torch.arange(20)[None]
    with torch.no_grad():
        prompt = hf(input_ids=ids[:, :12], use_cache=True).cache
        before = [(layer.keys.shape, layer.keys.data_ptr()) for layer in prompt.layers]
        batch = batch_cache(prompt, 5)
        assert all(b.keys.shape[0] == 5 and b.keys.stride(0) == 0 and b.keys.data_ptr() == p.keys.data_ptr()
                   for b, p in zip(batch.layers, prompt.layers)), "a one-row prompt is shared as views, not copied"
        assert batch.layers[0].keys.shape[2] == WINDOW - 1 and batch.layers[1].keys.shape[2] == 12
        logits = hf(**continuation(ids[:, 12:].expand(5, -1), 12), cache=batch).logits
        full = hf(input_ids=ids).logits
    assert [(layer.keys.shape, layer.keys.data_ptr()) for layer in prompt.layers] == before
    torch.testing.assert_close(logits, full[:, 12:].expand(5, -1, -1), atol=1e-5, rtol=0)


def test_window_reference_cuts_a_resample_source_to_the_scored_positions(families):
    model = families["llama"]
    ref = capture(model, "a short source")  # shorter than the sequence: later positions take the source mean
    window = window_reference(ref, slice(3, 9), 10)
    x = torch.zeros(1, 10, ref.values[0].shape[-1])
    torch.testing.assert_close(window.values[0], ref.replacement(0, x)[3:9])
    means = head_means(model, ["a reference"])
    assert window_reference(means, slice(3, 9), 10) is means


def test_scoring_refuses_generated_positions_naming_them(families):
    item = encode(families["llama"].tokenizer, TASK, TARGET)
    for score in (ablated_losses, head_effects, head_attributions):
        with pytest.raises(ValueError, match=f"{score.__name__} cannot ablate at positions 'generated'.*all, target, "
                                             "profile"):
            score(families["llama"], item, ablation=Ablation(positions="generated"), **(
                {"sets": [HeadSet.parse("L0H0")]} if score is ablated_losses else {}))


# ------------------------------------------------------------------------------------------ equality


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral", "gpt2", "gpt_neox", "gemma3_window"])
@pytest.mark.parametrize("batch_size", [1, 7, 16])
def test_cached_prompt_losses_equal_a_full_reforward_ablating_target_positions(families, family, batch_size):
    model = families[family]
    sets = random_sets(model, 16, seed=batch_size) + [HeadSet()]
    for name, prompt in VARIANTS.items():
        item = encode(model.tokenizer, prompt, TARGET)
        clean, got = ablated_losses(model, item, sets, Ablation(positions="target"), batch_size=batch_size)
        want_clean, want = ablated_losses(model, item, sets, Ablation(positions="target"), batch_size=batch_size,
                                          reuse_prompt=False)
        assert clean == pytest.approx(want_clean, abs=1e-5), name
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=f"{family}, {name} prompt")
        assert got[-1] == pytest.approx(clean, abs=1e-5), "the empty set is the clean model"
        _, everywhere = ablated_losses(model, item, sets, Ablation(positions="all"), batch_size=batch_size)
        assert (everywhere - got).abs().max() > 1e-4, "target positions only must differ from every position"


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_window"])
@pytest.mark.parametrize("mode", ["mean", "resample"])
def test_cached_prompt_mean_and_resample_ablation_equal_a_full_reforward(families, family, mode):
    model = families[family]
    source = "Carol answers in lists. " * 2  # shorter than the prompt: the tail takes the source's mean
    reference = head_means(model, [OTHER, source]) if mode == "mean" else capture(model, source)
    item = encode(model.tokenizer, VARIANTS["own"], TARGET)
    sets = random_sets(model, 7, seed=3)
    _, got = ablated_losses(model, item, sets, Ablation(mode, reference, "target"), batch_size=4)
    _, want = ablated_losses(model, item, sets, Ablation(mode, reference, "target"),
                             reuse_prompt=False, batch_size=4)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "gemma3_window"])
def test_target_position_losses_equal_a_plain_pre_hook_at_target_positions(families, family):
    model = families[family]
    item = encode(model.tokenizer, VARIANTS["other"], TARGET)
    sets = random_sets(model, 7, seed=5)
    _, got = ablated_losses(model, item, sets, Ablation(positions="target"))
    torch.testing.assert_close(got, hooked_losses(model, item, sets), atol=1e-5, rtol=0)
    means = head_means(model, [PROFILE, OTHER])
    _, got = ablated_losses(model, item, sets, Ablation("mean", means, "target"))
    torch.testing.assert_close(got, hooked_losses(model, item, sets, means.values), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gemma3_window"])
@pytest.mark.parametrize("positions", ["all", "target"])
def test_per_token_losses_are_the_gold_tokens_nlls_whose_means_are_the_losses(families, family, positions):
    from harness.intervene.pcs import token_nlls

    model = families[family]
    item = encode(model.tokenizer, VARIANTS["own"], TARGET)
    sets = random_sets(model, 7, seed=3) + [HeadSet()]
    clean, losses = ablated_losses(model, item, sets, Ablation(positions=positions), batch_size=3)
    clean_t, losses_t = ablated_losses(model, item, sets, Ablation(positions=positions), batch_size=3, per_token=True)
    assert clean_t.shape == (item.n_target,) and losses_t.shape == (len(sets), item.n_target)
    torch.testing.assert_close(clean_t, token_nlls(model, item), atol=1e-5, rtol=0)
    torch.testing.assert_close(losses_t.mean(-1), losses, atol=1e-6, rtol=0)
    assert clean_t.mean().item() == pytest.approx(clean, abs=1e-6)
    torch.testing.assert_close(losses_t[-1], clean_t, atol=1e-5, rtol=0)  # the empty set is the clean model
    assert (losses_t[:-1] - clean_t).abs().amax(-1).min() > 0, "every set changes some token's NLL"
    # the per-token rows are the reference's: a pre-hook forward per set, each gold token's NLL
    hf, d, ids = model._module, shape_of(model.config).head_dim, item.ids[None]
    for row, hs in zip(losses_t[:2], sets[:2]):
        with hooked_ablation(hf, {layer: list(h) for layer, h in hs.by_layer().items()}, d, None,
                             positions=None if positions == "all" else item.target_positions), torch.no_grad():
            want = target_nll(hf(input_ids=ids).logits, ids, item.n_target, per_token=True)[0]
        torch.testing.assert_close(row, want, atol=1e-5, rtol=0)
    _, none = ablated_losses(model, item, [], per_token=True)
    assert none.shape == (0, item.n_target)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_window"])
def test_profile_positions_ablate_the_profile_block_only_and_equal_a_pre_hook(families, family):
    from harness.intervene.pcs import head_attributions

    model = families[family]
    item = encode(model.tokenizer, VARIANTS["own"], TARGET, profile_span=(0, len(PROFILE.rstrip())))
    start, stop = item.profile
    assert start == 0 and 0 < stop < item.n_prompt
    assert model.tokenizer.decode(item.ids[start:stop]).strip() == PROFILE.strip()
    sets = random_sets(model, 7, seed=9)
    means = head_means(model, [PROFILE, OTHER])
    for mode, ref in (("zero", None), ("mean", means)):
        _, got = ablated_losses(model, item, sets, Ablation(mode, ref, "profile"), batch_size=4)
        want = hooked_losses(model, item, sets, None if ref is None else ref.values, positions=slice(start, stop))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=mode)
    _, target = ablated_losses(model, item, sets, Ablation(positions="target"))
    assert (got - target).abs().max() > 1e-4, "profile positions are not the target positions"
    # a prompt without a profile has nothing to ablate: every set leaves the clean loss, every attribution is 0
    bare = encode(model.tokenizer, VARIANTS["none"], TARGET)
    clean, losses = ablated_losses(model, bare, sets, Ablation(positions="profile"))
    assert torch.equal(losses, torch.full_like(losses, clean))
    assert torch.count_nonzero(head_attributions(model, bare, ablation=Ablation(positions="profile"))[1]) == 0
    assert torch.count_nonzero(head_attributions(model, item, ablation=Ablation(positions="profile"))[1]) > 0


def test_target_position_pcs_equals_a_per_head_hook_loop(families):
    model = families["gemma3_window"]
    item = encode(model.tokenizer, VARIANTS["own"], TARGET)
    clean, deltas = head_effects(model, item, ablation=Ablation(positions="target"))
    heads = [HeadSet([h]) for h in HeadSet.parse("L0-2H0-3")]
    torch.testing.assert_close(deltas, hooked_losses(model, item, heads) - clean, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------ real models


@pytest.mark.slow
def test_smollm2_cached_prompt_losses_equal_full_reforward_and_hooks(smollm):
    sets = random_sets(smollm, 7, seed=11)
    for name, prompt in VARIANTS.items():
        item = encode(smollm.tokenizer, prompt * (4 if name != "none" else 1), TARGET)
        clean, got = ablated_losses(smollm, item, sets, Ablation(positions="target"), batch_size=4)
        want_clean, want = ablated_losses(smollm, item, sets, Ablation(positions="target"), reuse_prompt=False,
                                          batch_size=4)
        assert clean == pytest.approx(want_clean, abs=1e-5)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=name)
    torch.testing.assert_close(got, hooked_losses(smollm, item, sets), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_gemma3_270m_cached_prompt_sees_the_same_sliding_window_keys_as_a_full_forward(gemma3):
    tok = gemma3.tokenizer
    prompt = " ".join([PROFILE + OTHER] * 20)
    item = encode(tok, prompt, TARGET)
    assert item.target_positions.start > 512 + item.n_target, "the prompt must be longer than Gemma-3's window"
    sets = random_sets(gemma3, 7, seed=13)
    clean, got = ablated_losses(gemma3, item, sets, Ablation(positions="target"), batch_size=7)
    want_clean, want = ablated_losses(gemma3, item, sets, Ablation(positions="target"), reuse_prompt=False,
                                      batch_size=7)
    assert clean == pytest.approx(want_clean, abs=1e-5)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(got[:3], hooked_losses(gemma3, item, sets[:3]), atol=1e-5, rtol=0)


def test_prompt_once_dps_on_a_sliding_window_model_equals_decoding_each_branch(families):
    from harness.generation.decoding import Contrast, decode

    model = families["gemma3_window"]
    prompts = [PROFILE + TASK, TASK]  # left padding; both longer than the window
    means = head_means(model, [OTHER])
    for mode, reference in [("zero", None), ("mean", means)]:
        kw = dict(heads=HeadSet.parse("L0H1,L1H2,L2H0"), contrast=Contrast(gamma=2.0, alpha=0.0), max_new_tokens=6,
                  stop_token_ids=[], ablation=Ablation(mode, reference, "target"))
        once = decode(model, prompts, **kw)
        assert once.token_ids == decode(model, prompts, fused=False, **kw).token_ids, mode
        assert once.token_ids == decode(model, prompts, use_cache=False, **kw).token_ids, mode


# ------------------------------------------------------------------------------------------ attribution


@pytest.fixture(scope="module")
def tiny_llama64(families):
    """The tiny Llama in float64, so finite differences are accurate."""
    import copy

    from nnsight import TransformersModel

    hf = copy.deepcopy(families["llama"]._module).to(torch.float64)
    return TransformersModel(hf, tokenizer=families["llama"].tokenizer)


def test_target_attribution_matches_finite_difference_at_target_positions(tiny_llama64):
    """With positions="target" AtP is the first-order term of scaling a head only where the gold is predicted."""
    from harness.models.arch import out_proj
    from harness.intervene.pcs import head_attributions

    model = tiny_llama64
    item = encode(model.tokenizer, VARIANTS["own"], TARGET)
    d, eps, ids, at = shape_of(model.config).head_dim, 1e-2, item.ids[None], item.target_positions
    _, est = head_attributions(model, item, ablation=Ablation(positions="target"))
    _, everywhere = head_attributions(model, item)

    def loss_with_head_scaled(h: Head, factor: float) -> torch.Tensor:
        def pre(module, args):
            x = args[0].clone()
            x[..., at, h.head * d:(h.head + 1) * d] *= factor
            return (x,) + tuple(args[1:])

        handle = out_proj(model._module, h.layer).register_forward_pre_hook(pre)
        try:
            with torch.no_grad():
                return target_nll(model._module(input_ids=ids).logits, ids, item.n_target)[0]
        finally:
            handle.remove()

    for h in [Head(0, 1), Head(1, 3), Head(2, 0)]:
        fd = (loss_with_head_scaled(h, 1 - eps) - loss_with_head_scaled(h, 1 + eps)) / (2 * eps)
        assert torch.isclose(est[h.layer, h.head].double(), fd, rtol=1e-4, atol=1e-9), (h, float(est[h.layer, h.head]))
    assert not torch.allclose(est, everywhere)


@pytest.mark.slow
def test_attribution_ranks_heads_like_target_position_exact_pcs(smollm):
    """Spearman rho against exact PCS at the target positions on SmolLM2: all-position AtP as it is (measured 0.75),
    and AtP summed over the target positions only (0.94)."""
    from scipy.stats import spearmanr

    from harness.intervene.pcs import head_attributions

    item = encode(smollm.tokenizer, VARIANTS["own"] + " " + VARIANTS["other"], TARGET)
    _, exact = head_effects(smollm, item, ablation=Ablation(positions="target"))
    _, everywhere = head_attributions(smollm, item)
    _, target = head_attributions(smollm, item, ablation=Ablation(positions="target"))
    rho_all = spearmanr(everywhere.flatten(), exact).statistic
    rho_target = spearmanr(target.flatten(), exact).statistic
    print(f"Spearman vs target-position exact PCS: all-position AtP {rho_all:.3f}, target AtP {rho_target:.3f}")
    assert rho_all > 0.5, rho_all
    assert rho_target > 0.9 and rho_target > rho_all, rho_target


def test_grouped_kv_attention_changes_no_logit_and_restores_the_switch(families, monkeypatch):
    from harness.intervene.prompt_cache import grouped_kv_attention

    monkeypatch.delenv("TRANSFORMERS_SDPA_FORCE_GQA", raising=False)
    hf = families["llama"]._module  # 4 query heads on 2 kv heads
    ids = torch.arange(30)[None]
    with torch.no_grad():
        prompt = hf(input_ids=ids[:, :20], use_cache=True).cache
        copied = hf(**continuation(ids[:, 20:].expand(3, -1), 20), cache=batch_cache(prompt, 3)).logits
        with grouped_kv_attention():
            grouped = hf(**continuation(ids[:, 20:].expand(3, -1), 20), cache=batch_cache(prompt, 3)).logits
    assert torch.equal(copied, grouped)
    assert "TRANSFORMERS_SDPA_FORCE_GQA" not in os.environ
