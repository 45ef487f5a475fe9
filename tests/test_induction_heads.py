"""Induction scores: the pattern score on constructed attention, the input sequences, and a quick run on SmolLM2."""

from __future__ import annotations

import pytest
import torch

from harness.intervene.heads import HeadSet, top_heads
from harness.scorers.induction import (InductionResult, induction_pattern_scores, induction_scores,
                                     repeated_random_tokens)

N = 6
T = 2 * N + 1


def _causal_uniform(t: int) -> torch.Tensor:
    return torch.tril(torch.ones(t, t)) / torch.arange(1, t + 1)[:, None]


def _perfect_induction(n: int) -> torch.Tensor:
    """Second-copy queries attend fully to the token after their first occurrence; other rows to BOS."""
    w = torch.zeros(2 * n + 1, 2 * n + 1)
    w[:, 0] = 1.0
    for q in range(n + 1, 2 * n + 1):
        w[q] = 0.0
        w[q, q - n + 1] = 1.0
    return w


def test_perfect_induction_pattern_scores_one():
    assert induction_pattern_scores(_perfect_induction(N), N).item() == pytest.approx(1.0)


def test_previous_token_and_duplicate_token_patterns_score_zero():
    prev = torch.zeros(T, T)
    prev[0, 0] = 1.0
    prev[torch.arange(1, T), torch.arange(0, T - 1)] = 1.0
    dup = torch.zeros(T, T)  # attends to the earlier occurrence itself, not the token after it
    dup[:, 0] = 1.0
    for q in range(N + 1, T):
        dup[q] = 0.0
        dup[q, q - N] = 1.0
    assert induction_pattern_scores(torch.stack([prev, dup]), N).tolist() == [0.0, 0.0]


def test_uniform_causal_pattern_scores_mean_inverse_position():
    expected = sum(1.0 / (q + 1) for q in range(N + 1, T)) / N
    assert induction_pattern_scores(_causal_uniform(T), N).item() == pytest.approx(expected)


def test_pattern_scores_keep_leading_dims_per_head():
    w = torch.stack([_perfect_induction(N), _causal_uniform(T), 0.5 * _perfect_induction(N)])  # [H=3, T, T]
    scores = induction_pattern_scores(w[None].expand(2, 3, T, T), N)
    assert scores.shape == (2, 3)
    assert scores[0, 0] == pytest.approx(1.0) and scores[1, 2] == pytest.approx(0.5)
    assert scores[0, 1] < 0.2


def test_pattern_scores_reject_shape_not_matching_sequence():
    with pytest.raises(ValueError, match=r"expected \[\.\.\., 13, 13\]"):
        induction_pattern_scores(torch.zeros(3, 12, 12), N)


def test_top_heads_orders_by_score_then_index():
    scores = torch.tensor([[0.1, 0.9, 0.3], [0.9, 0.0, 0.5]])
    assert top_heads(scores, 2) == HeadSet.parse("L0H1,L1H0")
    assert top_heads(scores, 3) == HeadSet.parse("L0H1,L1H0,L1H2")
    result = InductionResult(scores=scores, per_sequence=scores[None], seq_len=4, seed=0, bos_id=1)
    assert result.heads(0.5) == HeadSet.parse("L0H1,L1H0,L1H2")


def test_repeated_random_tokens_are_bos_then_two_identical_seeded_halves(tokenizer):
    x = repeated_random_tokens(tokenizer, 5, 20, seed=3)
    assert x.shape == (5, 41)
    assert (x[:, 0] == tokenizer.bos_token_id).all()
    assert torch.equal(x[:, 1:21], x[:, 21:])
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    assert not special & set(x[:, 1:].flatten().tolist())
    assert torch.equal(x, repeated_random_tokens(tokenizer, 5, 20, seed=3))
    assert not torch.equal(x, repeated_random_tokens(tokenizer, 5, 20, seed=4))
    assert (repeated_random_tokens(tokenizer, 2, 4, bos_id=0)[:, 0] == 0).all()


# ------------------------------------------------------------------------------------ real model (SmolLM2)


@pytest.fixture(scope="module")
def smollm_induction(smollm_eager):
    return induction_scores(smollm_eager, n_sequences=4, seq_len=32, seed=0)


def test_smollm2_induction_scores_shape_and_range(smollm_induction, smollm_eager):
    cfg = smollm_eager.config
    assert smollm_induction.scores.shape == (cfg.num_hidden_layers, cfg.num_attention_heads)
    assert smollm_induction.per_sequence.shape == (4, cfg.num_hidden_layers, cfg.num_attention_heads)
    assert smollm_induction.scores.min() >= 0 and smollm_induction.scores.max() <= 1


def test_smollm2_has_clear_induction_heads_in_its_middle_layers(smollm_induction):
    # Observed with 16 sequences x 64 tokens: L18H6 0.89, L17H3 0.78, L17H4 0.73, L18H7 0.60, L17H5 0.57.
    scores = smollm_induction.scores
    assert scores.max() > 0.5
    assert float(scores.median()) < 0.05
    assert len(smollm_induction.top_k(5) & HeadSet.parse("L17H3,L17H4,L17H5,L18H6,L18H7")) >= 3


def test_smollm2_induction_scores_are_deterministic_for_a_seed(smollm_induction, smollm_eager):
    again = induction_scores(smollm_eager, n_sequences=4, seq_len=32, seed=0, batch_size=3)
    assert torch.allclose(again.scores, smollm_induction.scores, atol=1e-5)


def test_induction_scores_on_sdpa_model_names_eager_fix(smollm):
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        induction_scores(smollm, n_sequences=1, seq_len=4)
