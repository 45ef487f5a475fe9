"""Retrieval heads (Wu et al. 2024): hit counting on constructed attention, prompt building, a run on SmolLM2."""

from __future__ import annotations

import pytest
import torch

from harness.intervene.heads import HeadSet
from harness.scorers.retrieval import (RetrievalResult, first_line_steps, needle_prompts, needle_recall, retrieval_hits,
                                     retrieval_scores)

# Prompt of 12 tokens; the answer span is positions 4..7 holding tokens 40, 41, 42, 43.
PROMPT = torch.tensor([1, 10, 11, 12, 40, 41, 42, 43, 13, 14, 40, 15])
SPAN = (4, 8)
GENERATED = torch.tensor([20, 40, 41, 42, 43, 2])  # "The" + the four answer tokens + EOS


def _top(**heads: list[int]) -> torch.Tensor:
    """[steps, 1 layer, n heads] argmax positions, one list of per-step positions per head (h0, h1, ...)."""
    cols = [torch.tensor(heads[f"h{i}"]) for i in range(len(heads))]
    return torch.stack(cols, dim=-1)[:, None, :]


def test_head_that_copies_every_answer_token_scores_one():
    top = _top(h0=[0, 4, 5, 6, 7, 0])
    assert retrieval_hits(top, GENERATED, PROMPT, SPAN).tolist() == [[1.0]]


def test_hits_need_the_position_in_the_span_and_its_token_equal_to_the_generated_one():
    top = _top(
        h0=[0, 10, 5, 6, 11, 0],  # step 1 attends to a 40 outside the span: no hit; steps 2, 3 hit
        h1=[0, 5, 6, 7, 4, 0],  # inside the span but always one token off: no hit
        h2=[0, 4, 9, 9, 9, 9],  # one hit
    )
    assert retrieval_hits(top, GENERATED, PROMPT, SPAN).tolist() == [[0.5, 0.0, 0.25]]


def test_repeated_hits_on_one_position_count_once_unless_asked():
    generated = torch.tensor([40, 40, 40, 41])
    top = _top(h0=[4, 4, 4, 5])
    assert retrieval_hits(top, generated, PROMPT, SPAN).tolist() == [[0.5]]
    assert retrieval_hits(top, generated, PROMPT, SPAN, unique_positions=False).tolist() == [[1.0]]


def test_attention_to_generated_positions_past_the_prompt_is_no_hit():
    top = _top(h0=[12, 13, 14, 15, 16, 17])
    assert retrieval_hits(top, GENERATED, PROMPT, SPAN).tolist() == [[0.0]]


def test_retrieval_hits_reject_misaligned_inputs():
    with pytest.raises(ValueError, match="one step per generated token"):
        retrieval_hits(_top(h0=[4, 5]), GENERATED, PROMPT, SPAN)
    with pytest.raises(ValueError, match="span"):
        retrieval_hits(_top(h0=[4] * 6), GENERATED, PROMPT, (8, 20))


def test_scores_average_only_prompts_that_recovered_the_needle():
    per_prompt = torch.tensor([[[1.0, 0.0]], [[0.5, 0.2]], [[0.0, 1.0]]])  # [3 prompts, 1 layer, 2 heads]
    result = RetrievalResult(per_prompt=per_prompt, recovered=torch.tensor([True, True, False]),
                             recall=[1.0, 0.8, 0.1], responses=["", "", ""], prompts=[])
    assert torch.allclose(result.scores, torch.tensor([[0.75, 0.1]]))
    assert result.heads() == HeadSet.parse("L0H0,L0H1")
    assert result.heads(0.2) == HeadSet.parse("L0H0")
    assert result.top_k(1) == HeadSet.parse("L0H0")
    none = RetrievalResult(per_prompt=per_prompt, recovered=torch.zeros(3, dtype=torch.bool),
                           recall=[0.0] * 3, responses=[""] * 3, prompts=[])
    assert none.scores.tolist() == [[0.0, 0.0]]


def test_needle_recall_is_rouge1_recall_of_the_answer():
    assert needle_recall("smoked paprika and lemon zest", "The secret is smoked paprika and lemon zest.") == 1.0
    assert needle_recall("smoked paprika and lemon zest", "Paprika, I think.") == pytest.approx(0.2)
    assert needle_recall("smoked paprika", "") == 0.0


def test_first_line_steps_cuts_after_the_first_line_of_content(tokenizer):
    ids = tokenizer("\nThe answer is here.\nMore text follows", add_special_tokens=False)["input_ids"]
    keep = first_line_steps(tokenizer, ids)
    assert tokenizer.decode(ids[:keep]).strip() == "The answer is here."
    assert first_line_steps(tokenizer, ids[:3]) == 3


def test_needle_prompts_place_the_answer_span_and_are_seeded(tokenizer):
    prompts = needle_prompts(tokenizer, 5, lengths=(300, 500), depths=(0.0, 0.5, 1.0), seed=1)
    assert [p.depth for p in prompts] == [0.0, 0.5, 1.0, 0.0, 0.5]
    assert len({p.needle for p in prompts}) == 5 and len({p.question for p in prompts}) == 5
    for p, length in zip(prompts, (300, 500, 300, 500, 300)):
        start, end = p.span
        assert tokenizer.decode(p.input_ids[start:end]).strip() == p.answer
        assert p.answer in p.needle and p.answer not in p.question
        assert p.text.count(p.needle) == 1
        assert 0.7 * length <= p.n_tokens <= length + 10
        assert p.text.startswith("<|im_start|>") and p.text.endswith("<|im_start|>assistant\n")
    user = prompts[0].text.split("<|im_start|>user\n")[1]
    assert user.startswith(prompts[0].needle)  # depth 0: before the first haystack paragraph
    before_question = prompts[2].text.split("\n\nBased on the text above")[0]
    assert before_question.endswith(prompts[2].needle)  # depth 1: after the last paragraph
    again = needle_prompts(tokenizer, 5, lengths=(300, 500), depths=(0.0, 0.5, 1.0), seed=1)
    assert [p.text for p in again] == [p.text for p in prompts]
    assert needle_prompts(tokenizer, 1, seed=2)[0].text != prompts[0].text


def test_needle_prompts_reject_bad_depths_and_lengths(tokenizer):
    with pytest.raises(ValueError, match="depths"):
        needle_prompts(tokenizer, 1, depths=(1.5,))
    with pytest.raises(ValueError, match="lengths"):
        needle_prompts(tokenizer, 1, lengths=(20,))


# ------------------------------------------------------------------------------------ real model (SmolLM2)


@pytest.fixture(scope="module")
def short_prompts(tokenizer):
    return needle_prompts(tokenizer, 2, lengths=(150,), depths=(0.5,), seed=0)


@pytest.fixture(scope="module")
def smollm_retrieval(smollm_eager, short_prompts):
    return retrieval_scores(smollm_eager, short_prompts, max_new_tokens=32, progress=False)


@pytest.mark.slow
def test_smollm2_retrieval_scores_shape_range_and_recovery(smollm_retrieval, smollm_eager, short_prompts):
    cfg = smollm_eager.config
    result = smollm_retrieval
    assert result.per_prompt.shape == (2, cfg.num_hidden_layers, cfg.num_attention_heads)
    assert result.scores.min() >= 0 and result.scores.max() <= 1
    # SmolLM2 answers these short prompts by copying the needle (observed: recall 1.0 on both).
    assert result.recovered.all(), result.responses
    # Observed on 12 prompts of 300-700 tokens: L18H6 0.93, L17H3 0.86, L17H4 0.80, L18H7 0.79, L23H2 0.69.
    assert result.scores.max() > 0.5
    assert len(result.top_k(5) & HeadSet.parse("L17H3,L17H4,L18H6,L18H7,L23H2")) >= 3


@pytest.mark.slow
def test_decoding_steps_read_the_attention_row_that_produced_each_token(smollm_retrieval, smollm_eager):
    """Step k's argmax comes from the query that predicts token k (Wu et al.'s alignment), checked on a replay."""
    result = smollm_retrieval
    prompt, generated, top = result.prompts[0], result.generated[0], result.top_positions[0]
    full = torch.cat([prompt.input_ids, generated])[None]
    with torch.no_grad():
        out = smollm_eager._module(full, output_attentions=True)
    p = prompt.n_tokens
    replay = torch.stack([a[0, :, p - 1:p - 1 + len(generated)].argmax(-1) for a in out.attentions])  # [L, H, S]
    assert torch.equal(out.logits[0, p - 1:-1].argmax(-1), generated)
    assert (replay.permute(2, 0, 1) == top).float().mean() > 0.99
    hits = retrieval_hits(top, generated, prompt.input_ids, prompt.span)
    assert torch.equal(hits, result.per_prompt[0])


@pytest.mark.slow
def test_smollm2_retrieval_scores_are_deterministic(smollm_retrieval, smollm_eager, short_prompts):
    again = retrieval_scores(smollm_eager, short_prompts[:1], max_new_tokens=32, progress=False)
    assert torch.equal(again.per_prompt[0], smollm_retrieval.per_prompt[0])
    assert again.responses[0] == smollm_retrieval.responses[0]


def test_retrieval_scores_on_sdpa_model_names_eager_fix(smollm, short_prompts):
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        retrieval_scores(smollm, short_prompts)


def test_needles_never_come_from_the_studied_corpus_planted_ones_included():
    from harness.scorers.ranking import needle_corpus

    assert needle_corpus("conventions2012") == "debates2016"
    assert needle_corpus("planted:conventions2012:signoff") == "debates2016"
    assert needle_corpus("planted:conventions2012:case:controls=0.5") == "debates2016"
    assert needle_corpus("debates2016") == "conventions2012"
    assert needle_corpus("planted:debates2016:lexicon") == "conventions2012"
    assert needle_corpus("my_users.jsonl") == "conventions2012"
