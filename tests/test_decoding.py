"""DPS / contrastive decoding: the per-step maths on hand-computed tensors, and the decoder on the real SmolLM2."""

import math

import pytest
import torch

from harness.data.tokens import left_padded
from harness.generation.decoding import (Contrast, Sampling, contrast_scores, decode, delta_logits_report,
                              entropy_gamma, forward_step, next_tokens, plausibility_mask, plot_delta_logits,
                              token_label)
from harness.intervene.ablation import Ablation
from harness.intervene.heads import HeadSet
from harness.models.remote import choose_backend
from reference_hooks import hooked_ablation

PROMPTS = ["Dear diary, today I walked to the market and", "My favourite food is"]  # different lengths
HEADS = HeadSet.parse("L0-3H0-8")  # every head of the first four layers: a contrast that surely moves tokens
N_NEW = 8


def _hf_greedy(model, texts, n_new):
    """Plain HF generate (greedy), one prompt at a time, cut after the first stop token."""
    out = []
    for text in texts:
        enc = model.tokenizer(text, return_tensors="pt")
        ids = model._module.generate(**enc, max_new_tokens=n_new, do_sample=False)[0, enc.input_ids.shape[1]:]
        row = ids.tolist()
        eos = model.tokenizer.eos_token_id
        out.append(row[: row.index(eos)] if eos in row else row)
    return out


# ------------------------------------------------------------------------------------------ hand-computed maths


def test_plausibility_mask_keeps_tokens_within_alpha_of_the_max():
    probs = torch.tensor([[0.5, 0.3, 0.04, 0.16], [0.25, 0.25, 0.25, 0.25]])
    logits = probs.log() + 3.0  # a shift must not matter
    assert plausibility_mask(logits, 0.1).tolist() == [[True, True, False, True], [True] * 4]
    assert plausibility_mask(logits, 0.5).tolist() == [[True, True, False, False], [True] * 4]
    assert plausibility_mask(logits, 0.0).all()


def test_entropy_gamma_matches_hand_computed_entropy_cap_and_normalisation():
    uniform = torch.zeros(1, 4)
    peaked = torch.tensor([[0.0, -1e4, -1e4, -1e4]])
    two = torch.tensor([[0.0, 0.0, -1e4, -1e4]])
    assert entropy_gamma(uniform).item() == pytest.approx(math.log(4), abs=1e-6)
    assert entropy_gamma(uniform, normalize=True).item() == pytest.approx(1.0, abs=1e-6)
    assert entropy_gamma(uniform, cap=0.5).item() == pytest.approx(0.5)
    assert entropy_gamma(two, scale=2.0).item() == pytest.approx(2 * math.log(2), abs=1e-6)
    assert entropy_gamma(peaked).item() == pytest.approx(0.0, abs=1e-6)


def test_contrast_scores_apply_the_formula_then_mask_implausible_tokens():
    full = torch.tensor([[2.0, 1.0, -5.0]])
    masked = torch.tensor([[1.0, 1.5, 0.0]])
    scores, gamma = contrast_scores(full, masked, Contrast(gamma=1.0, alpha=0.1))
    assert gamma.tolist() == [1.0]
    # 2*full - masked = [3, 0.5, -10]; p_full of token 2 is e^-7 of the max < 0.1 -> -inf
    assert scores[0, :2].tolist() == [3.0, 0.5] and scores[0, 2] == float("-inf")
    lp_scores, _ = contrast_scores(full, masked, Contrast(gamma=0.5, alpha=0.0, space="logprobs"))
    a, b = full.log_softmax(-1), masked.log_softmax(-1)
    assert torch.allclose(lp_scores, 1.5 * a - 0.5 * b)
    ent_scores, g = contrast_scores(torch.zeros(1, 4), torch.tensor([[1.0, 0, 0, 0]]),
                                    Contrast(schedule="entropy", normalize=True, alpha=0.0))
    assert g.item() == pytest.approx(1.0) and torch.allclose(ent_scores, torch.tensor([[-1.0, 0, 0, 0]]), atol=1e-6)


def test_top_p_keeps_only_the_nucleus_and_greedy_is_argmax():
    scores = torch.tensor([[0.0, 3.0, 1.0, -1.0]])
    assert next_tokens(scores, Sampling()).tolist() == [1]
    gen = torch.Generator().manual_seed(0)
    draws = {next_tokens(scores, Sampling(do_sample=True, top_p=0.5), gen).item() for _ in range(50)}
    assert draws == {1}  # the top token alone holds > 50% of the mass
    draws = {next_tokens(scores, Sampling(do_sample=True, temperature=5.0), gen).item() for _ in range(200)}
    assert draws == {0, 1, 2, 3}


def test_bad_settings_name_the_problem():
    with pytest.raises(ValueError, match="schedule"):
        Contrast(schedule="linear")
    with pytest.raises(ValueError, match="alpha"):
        Contrast(alpha=2.0)
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=0.0)
    with pytest.raises(ValueError, match="min_new_tokens"):
        Sampling(min_new_tokens=-1)


# ------------------------------------------------------------------------------------------ the decoder


def test_gamma_zero_reproduces_plain_greedy_token_for_token(smollm):
    got = decode(smollm, PROMPTS, heads=HEADS, contrast=Contrast(gamma=0.0), max_new_tokens=N_NEW)
    assert got.token_ids == _hf_greedy(smollm, PROMPTS, N_NEW)
    plain = decode(smollm, PROMPTS, max_new_tokens=N_NEW)
    assert plain.token_ids == got.token_ids and plain.texts == got.texts


def test_batched_step_halves_equal_a_plain_and_a_separately_ablated_forward(smollm):
    from harness.models.arch import shape_of

    tok, hf = smollm.tokenizer, smollm._module
    text = PROMPTS[0]
    ids, mask = left_padded(tok, [text, text])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits, cache = forward_step(smollm, ids, mask, pos, heads=[None, HEADS])
    nxt = logits[0].argmax()
    step_ids = torch.stack([nxt, nxt])[:, None]
    step, _ = forward_step(smollm, step_ids, torch.cat([mask, mask[:, :1]], 1), pos[:, -1:] + 1, cache=cache,
                           heads=[None, HEADS])
    full_seq = torch.cat([ids[:1], step_ids[:1]], 1)
    with torch.no_grad():
        plain = hf(input_ids=full_seq).logits[0, -1]
        head_dim = shape_of(smollm.config).head_dim
        with hooked_ablation(hf, {l: list(h) for l, h in HEADS.by_layer().items()}, head_dim):
            ablated = hf(input_ids=full_seq).logits[0, -1]
    assert torch.allclose(step[0], plain, atol=1e-4, rtol=0)
    assert torch.allclose(step[1], ablated, atol=1e-4, rtol=0)
    assert (step[0] - step[1]).abs().max() > 1.0  # the ablation really reached the masked half only


def test_kv_cached_and_uncached_decoding_agree(smollm):
    kw = dict(heads=HEADS, contrast=Contrast(gamma=0.5), max_new_tokens=10)
    cached = decode(smollm, PROMPTS[:1], **kw)
    uncached = decode(smollm, PROMPTS[:1], use_cache=False, **kw)
    assert cached.token_ids == uncached.token_ids
    assert len(cached.token_ids[0]) >= 5


def test_batched_prompts_of_different_lengths_match_one_by_one(smollm):
    kw = dict(heads=HEADS, contrast=Contrast(gamma=0.5), max_new_tokens=N_NEW)
    batched = decode(smollm, PROMPTS, **kw)
    single = [decode(smollm, [p], **kw).token_ids[0] for p in PROMPTS]
    assert batched.token_ids == single


def test_dps_with_heads_and_positive_gamma_differs_from_greedy(smollm):
    greedy = decode(smollm, PROMPTS, max_new_tokens=N_NEW)
    dps = decode(smollm, PROMPTS, heads=HEADS, contrast=Contrast(gamma=1.0), max_new_tokens=N_NEW)
    assert dps.token_ids != greedy.token_ids
    assert all(g == [1.0] * len(g) for g in dps.gammas)


def test_seeded_sampling_is_reproducible_and_seed_dependent(smollm):
    kw = dict(heads=HEADS, contrast=Contrast(gamma=0.5, alpha=0.0), max_new_tokens=N_NEW)
    a = decode(smollm, PROMPTS[:1], sampling=Sampling(do_sample=True, temperature=1.5, seed=7), **kw)
    b = decode(smollm, PROMPTS[:1], sampling=Sampling(do_sample=True, temperature=1.5, seed=7), **kw)
    others = [decode(smollm, PROMPTS[:1], sampling=Sampling(do_sample=True, temperature=1.5, seed=s), **kw)
              for s in (8, 9)]
    assert a.token_ids == b.token_ids
    assert any(o.token_ids != a.token_ids for o in others)


def test_stop_tokens_end_a_row_and_are_not_returned(smollm):
    full = decode(smollm, PROMPTS[:1], max_new_tokens=6).token_ids[0]
    stop = full[2]
    cut = decode(smollm, PROMPTS[:1], max_new_tokens=6, stop_token_ids=[stop]).token_ids[0]
    assert cut == full[: full.index(stop)]


def test_min_new_tokens_bars_stops_until_then_and_changes_nothing_else(smollm):
    full = decode(smollm, PROMPTS[:1], max_new_tokens=6).token_ids[0]
    stop = full[1]  # a stop at step 1 ends the row after one token ...
    assert decode(smollm, PROMPTS[:1], max_new_tokens=6, stop_token_ids=[stop]).token_ids[0] == full[:1]
    barred = decode(smollm, PROMPTS[:1], max_new_tokens=6, stop_token_ids=[stop],
                    sampling=Sampling(min_new_tokens=3)).token_ids[0]
    assert len(barred) >= 3 and stop not in barred[:3] and barred[:1] == full[:1]  # ... unless barred until step 3
    # with the stop barred, step 1 takes the next-best token; where no stop is the argmax, nothing changes
    assert decode(smollm, PROMPTS[:1], max_new_tokens=6, sampling=Sampling(min_new_tokens=6)).token_ids[0] == full


def test_naive_two_pass_and_local_remote_simulation_give_the_same_tokens(smollm):
    kw = dict(heads=HEADS, contrast=Contrast(gamma=0.5), max_new_tokens=6)
    fused = decode(smollm, PROMPTS, **kw)
    assert decode(smollm, PROMPTS, fused=False, **kw).token_ids == fused.token_ids
    # chosen as a study chooses --remote local: the harness ships by value
    assert decode(smollm, PROMPTS, backend=choose_backend("local"), **kw).token_ids == fused.token_ids


def test_cad_branch_rows_use_the_second_prompts(smollm):
    same = decode(smollm, PROMPTS, second=PROMPTS, contrast=Contrast(gamma=1.0), max_new_tokens=N_NEW)
    assert same.token_ids == decode(smollm, PROMPTS, max_new_tokens=N_NEW).token_ids
    other = decode(smollm, PROMPTS, second=["Once upon a time", "The stock market"], contrast=Contrast(gamma=2.0),
                   max_new_tokens=N_NEW)
    assert other.token_ids != same.token_ids


def test_delta_report_lists_promoted_and_suppressed_tokens_and_plots(smollm, tmp_path):
    report = delta_logits_report(smollm, PROMPTS[1], HEADS, k=3, max_new_tokens=4, contrast=Contrast(gamma=0.5))
    assert 1 <= len(report) <= 4 and all(len(r.promoted) == 3 == len(r.suppressed) for r in report)
    # step 0's Δ equals full − ablated logits of the prompt, computed independently
    from harness.models.arch import shape_of

    hf, tok = smollm._module, smollm.tokenizer
    enc = tok(PROMPTS[1], return_tensors="pt")
    with torch.no_grad():
        full = hf(**enc).logits[0, -1]
        with hooked_ablation(hf, {l: list(h) for l, h in HEADS.by_layer().items()}, shape_of(smollm.config).head_dim):
            masked = hf(**enc).logits[0, -1]
    delta = full - masked
    top = delta.topk(3)
    assert [t for t, _ in report[0].promoted] == [tok.decode([int(i)]) for i in top.indices]
    assert [v for _, v in report[0].promoted] == pytest.approx(top.values.tolist(), abs=1e-3)
    assert [v for _, v in report[0].suppressed] == pytest.approx((-(-delta).topk(3).values).tolist(), abs=1e-3)
    assert report[0].promoted[0][1] > 0 > report[0].suppressed[0][1]
    path = plot_delta_logits(report, str(tmp_path / "delta.png"))
    assert (tmp_path / "delta.png").stat().st_size > 1000 and path.endswith("delta.png")


def test_left_padded_rows_keep_their_absolute_positions(tiny_models):
    model = tiny_models["gpt2"]  # learned absolute positions: a shifted row would predict differently
    kw = dict(max_new_tokens=5, stop_token_ids=[])
    batched = decode(model, PROMPTS, **kw)
    assert batched.token_ids == [decode(model, [p], **kw).token_ids[0] for p in PROMPTS]


@pytest.mark.parametrize("where", ["target", "generated"])
def test_prompt_once_dps_equals_decoding_each_branch_from_its_own_prompt(smollm, where):
    kw = dict(heads=HEADS, contrast=Contrast(gamma=1.0), max_new_tokens=N_NEW, ablation=Ablation(positions=where))
    once = decode(smollm, PROMPTS, **kw)  # fused and cached: the prompt runs once for both branches
    assert once.token_ids == decode(smollm, PROMPTS, fused=False, **kw).token_ids
    assert once.token_ids == decode(smollm, PROMPTS, use_cache=False, **kw).token_ids
    everywhere = decode(smollm, PROMPTS, heads=HEADS, contrast=Contrast(gamma=1.0), max_new_tokens=N_NEW)
    assert once.token_ids != everywhere.token_ids


def test_generated_positions_dps_starts_as_the_full_branch_and_target_ablates_the_last_prompt_token(smollm):
    from harness.models.arch import shape_of

    kw = dict(heads=HEADS, contrast=Contrast(gamma=0.5), max_new_tokens=2, record_delta=3)
    generated = decode(smollm, PROMPTS[1:], ablation=Ablation(positions="generated"), **kw)
    assert generated.delta_top["promoted"][0, 0].abs().max() == 0  # step 0: nothing ablated yet
    assert generated.delta_top["promoted"][0, 1].abs().max() > 0
    target = decode(smollm, PROMPTS[1:], ablation=Ablation(positions="target"), **kw)
    hf, tok = smollm._module, smollm.tokenizer
    enc = tok(PROMPTS[1], return_tensors="pt")
    with torch.no_grad():
        full = hf(**enc).logits[0, -1]
        with hooked_ablation(hf, {l: list(h) for l, h in HEADS.by_layer().items()}, shape_of(smollm.config).head_dim,
                             positions=slice(-1, None)):
            masked = hf(**enc).logits[0, -1]
    top = (full - masked).topk(3)
    assert target.delta_top["promoted_ids"][0, 0].tolist() == top.indices.tolist()
    assert target.delta_top["promoted"][0, 0].tolist() == pytest.approx(top.values.tolist(), abs=1e-3)


def test_ablation_positions_need_heads_and_a_decoding_position(smollm):
    with pytest.raises(ValueError, match="need heads"):
        decode(smollm, PROMPTS, second=PROMPTS, ablation=Ablation(positions="target"), max_new_tokens=2)
    with pytest.raises(ValueError, match="decode cannot ablate at positions 'profile'.*all, target, generated"):
        decode(smollm, PROMPTS, heads=HEADS, ablation=Ablation(positions="profile"), max_new_tokens=2)


def _bos_tokenizer():
    """A word-level tokenizer that, like Gemma's and the base Llamas', adds its BOS to every sequence."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<pad>": 0, "<bos>": 1, "a": 2, "b": 3}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", pad_token="<pad>", unk_token="<pad>")


def test_decoding_prompts_carry_the_tokenizers_bos_once_as_scored_prompts_do():
    from harness.data.tokens import encode

    tok = _bos_tokenizer()
    ids, mask = left_padded(tok, ["a b", "<bos> a"])  # plain text; a chat template that writes its BOS out
    assert ids.tolist() == [[1, 2, 3], [0, 1, 2]] and mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    assert encode(tok, "a b", "a").ids.tolist()[:3] == ids[0].tolist()  # generation sees what scoring scored


def test_token_labels_escape_what_the_plot_font_cannot_draw(tmp_path):
    """A CJK or emoji token would be drawn as empty boxes (matplotlib warns "Glyph ... missing"): it is written as its
    code point instead; Latin accents and escaped control characters stay as they are; escapes are never cut."""
    assert token_label("损害") == r"\u635f"  # two escapes exceed 10 characters: only whole ones are kept
    assert token_label(" café\n") == r" café\n"
    assert token_label("🙂") == r"\U0001f642"
    assert token_label("abcdefghijklmno") == "abcdefghij"
    from harness.generation.decoding import TokenDelta

    report = [TokenDelta(step=0, token="损", gamma=1.0, promoted=[("害", 1.0)], suppressed=[("a", -1.0)])]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph is a UserWarning
        plot_delta_logits(report, str(tmp_path / "cjk.png"))
