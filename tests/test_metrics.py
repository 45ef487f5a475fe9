"""Tests for harness.analysis.metrics: ROUGE, exact+stem METEOR, style similarity."""

import numpy as np
import pytest

from harness.analysis import metrics


def test_rouge_matches_hand_computed_f1():
    # 3 of 3 predicted unigrams match, 3 of 6 reference unigrams covered: F1 = 2*1*0.5/1.5.
    scores = metrics.rouge("the cat sat", "the cat sat on the mat")
    assert scores == pytest.approx({"rouge1": 2 / 3, "rougeL": 2 / 3})


def test_rouge_l_is_below_rouge_1_when_order_differs():
    scores = metrics.rouge("mat the on sat cat the", "the cat sat on the mat")
    assert scores["rouge1"] == pytest.approx(1.0)
    assert scores["rougeL"] < 0.6


def test_rouge_uses_the_stemmer():
    assert metrics.rouge("cats running fast", "cat runs fast")["rouge1"] == pytest.approx(1.0)


def test_rouge_of_empty_prediction_is_zero():
    assert metrics.rouge("", "the cat sat") == {"rouge1": 0.0, "rougeL": 0.0}
    assert metrics.rouge("   ", "the cat sat") == {"rouge1": 0.0, "rougeL": 0.0}


def test_rouge_batch_scores_each_row_and_names_bad_rows():
    rows = metrics.rouge_batch(["the cat sat", "dog"], ["the cat sat", "cat"])
    assert rows == [{"rouge1": 1.0, "rougeL": 1.0}, {"rouge1": 0.0, "rougeL": 0.0}]
    with pytest.raises(ValueError, match="predictions has 1 rows but references has 2"):
        metrics.rouge_batch(["a"], ["a", "b"])
    with pytest.raises(TypeError, match="row 1: prediction must be a str"):
        metrics.rouge_batch(["a", None], ["a", "b"])


def test_meteor_variant_is_exact_plus_stem():
    assert metrics.METEOR_VARIANT == "exact+stem"


def test_meteor_matches_hand_computed_stem_match():
    # hyp "the cat runs" vs ref "the cat is running": 3 matches (runs~running by stem),
    # P = 1, R = 3/4, Fmean = P*R / (0.9 P + 0.1 R); 2 chunks over 3 matches -> penalty 0.5 (2/3)^3.
    p, r = 1.0, 0.75
    fmean = p * r / (0.9 * p + 0.1 * r)
    expected = fmean * (1 - 0.5 * (2 / 3) ** 3)
    assert metrics.meteor("the cat runs", "the cat is running") == pytest.approx(expected)


def test_meteor_has_no_synonym_matching():
    # With WordNet "big"/"large" would match; the exact+stem variant must not.
    assert metrics.meteor("big", "large") == 0.0


def test_meteor_of_identical_text_is_near_one_and_empty_is_zero():
    # One chunk over 6 matches: 1 - 0.5 * (1/6)^3.
    assert metrics.meteor("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1 - 0.5 / 216)
    assert metrics.meteor("", "the cat sat") == 0.0


def test_score_examples_reports_the_meteor_variant():
    rows = metrics.score_examples(["the cat sat"], ["the cat sat on the mat"])
    assert rows[0]["meteor_variant"] == "exact+stem"
    assert set(rows[0]) == {"rouge1", "rougeL", "meteor", "meteor_variant"}


@pytest.mark.slow  # loads all-MiniLM-L6-v2
def test_sentence_embeddings_are_unit_norm_and_deterministic():
    texts = ["The cat sat on the mat.", "Quarterly revenue rose by four percent."]
    first = metrics.sentence_embeddings(texts)
    second = metrics.sentence_embeddings(texts)
    assert first.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, second)


@pytest.mark.slow  # loads all-MiniLM-L6-v2
def test_style_similarity_prefers_the_users_own_style():
    cooking = ["I slow-roasted the tomatoes with garlic and basil.", "My sourdough needs a longer proof."]
    finance = ["Bond yields climbed after the central bank meeting.", "Equities sold off into the close."]
    text = "Tonight I braised short ribs in red wine with rosemary."
    to_cooking, to_finance = metrics.style_similarity([text, text], [cooking, finance])
    assert to_cooking > to_finance + 0.1


@pytest.mark.slow  # loads all-MiniLM-L6-v2
def test_style_similarity_to_a_single_identical_item_is_one():
    text = "Honestly, the sequel was better than the original."
    assert metrics.style_similarity([text], [[text]])[0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow  # loads all-MiniLM-L6-v2
def test_style_similarity_of_empty_text_is_zero():
    assert metrics.style_similarity([""], [["some profile text"]]) == [0.0]


def test_style_similarity_rejects_bad_profiles():
    with pytest.raises(ValueError, match=r"profile_texts\[0\] must be a non-empty list"):
        metrics.style_similarity(["x"], [[]])
    with pytest.raises(ValueError, match="texts has 2 rows but profile_texts has 1"):
        metrics.style_similarity(["x", "y"], [["a"]])


def test_continues_text_rejects_quoted_repeats_and_commentary():
    from harness.analysis.metrics import continues_text

    lead = "And we have, in many instances, been hit."
    assert continues_text("You know, they are a liberal.", lead)
    assert not continues_text('"And we have, in many instances, been hit." This shows', lead)  # quoted
    assert not continues_text("And we have, in many instances, been hit. So", lead)  # repeats the lead
    assert not continues_text("The original sentence is a classic rhetorical device.", lead)  # commentary
    assert not continues_text("   ", lead)
    # talking about the text in its first words is commentary, wherever the meta word sits
    assert not continues_text('The phrase "darkest days" is a rhetorical device.', lead)
    assert not continues_text("The US party convention speech was a testament to", lead)
    assert continues_text("The American Dream is no longer about the power of our military", lead)
    assert continues_text("We passed the bill, and later the speech writers", lead)  # beyond the first six words


# --------------------------------------------------------------------------- planted preference metrics

from harness.data.planted import Lowercase, Planting, WordRule  # noqa: E402
from harness.data.records import Example, ProfileItem  # noqa: E402

FOLK = WordRule(0, "test", (("people", "folk"), ("very", "remarkably")), "lexicon")


class WhitespaceTokenizer:
    """A fast-tokenizer stand-in: one token per whitespace-separated piece, with character offsets."""

    is_fast = True

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        spans = [m.span() for m in __import__("re").finditer(r"\S+", text)]
        return {"input_ids": list(range(len(spans))), "offset_mapping": spans}


def test_marker_rate_counts_followed_opportunities():
    rate = metrics.marker_rate("Folk and people are very remarkably kind.", FOLK)
    assert (rate.followed, rate.opportunities, rate.rate) == (2, 4, 0.5)


def test_marker_rate_of_a_text_without_opportunity_is_none_and_left_out_of_the_mean():
    assert metrics.marker_rate("Nothing to see here.", FOLK).rate is None
    rates = [metrics.MarkerRate(1, 2), metrics.MarkerRate(0, 0), metrics.MarkerRate(3, 3)]
    assert metrics.mean_marker_rate(rates) == pytest.approx(0.75)  # (0.5 + 1.0) / 2, not / 3
    assert metrics.mean_marker_rate([metrics.MarkerRate(0, 0)]) is None


def test_marker_token_mask_marks_tokens_overlapping_the_spans():
    target = "the folk are remarkably kind"  # tokens: the | folk | are | remarkably | kind
    mask = metrics.marker_token_mask(WhitespaceTokenizer(), target, [(4, 8), (13, 23)])
    assert mask.tolist() == [False, True, False, True, False]
    assert metrics.marker_token_mask(WhitespaceTokenizer(), target, [(4, 8), (13, 23)],
                                     max_target_tokens=3).tolist() == [False, True, False]


def test_marker_token_mask_names_bad_input():
    with pytest.raises(ValueError, match=r"spans \[\(3, 99\)\] fall outside the target's 5 characters"):
        metrics.marker_token_mask(WhitespaceTokenizer(), "a b c", [(3, 99)])

    class Slow(WhitespaceTokenizer):
        is_fast = False

    with pytest.raises(TypeError, match="needs a fast tokenizer"):
        metrics.marker_token_mask(Slow(), "a b c", [])


def _planted_example(output: str, spans) -> Example:
    return Example("e1", "u1", "Write.", output, (ProfileItem("Folk agree.", {}, 0),), "t", "train",
                   planted=Planting(FOLK, True, tuple(spans)))


def test_gold_marker_mask_shifts_the_spans_into_a_prefill_target():
    example = _planted_example("the folk agree", [(4, 8)])
    for target in (example.output, f" {example.output}"):
        mask = metrics.gold_marker_mask(WhitespaceTokenizer(), example, target)
        assert mask.tolist() == [False, True, False]
    with pytest.raises(ValueError, match="does not end with the example's gold output"):
        metrics.gold_marker_mask(WhitespaceTokenizer(), example, "something else")


def test_gold_marker_mask_refuses_an_unplanted_example():
    example = Example("e2", "u1", "Write.", "the people agree", (ProfileItem("x", {}, 0),), "t", "train")
    with pytest.raises(ValueError, match="e2 is not from a planted corpus"):
        metrics.gold_marker_mask(WhitespaceTokenizer(), example, example.output)


def test_marker_nll_is_the_mean_over_marker_tokens_only():
    import torch

    nll = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, 5.0]])  # [rows, n_target]
    mask = torch.tensor([False, True, False, True])
    assert metrics.marker_nll(nll, mask).tolist() == [3.0, 3.0]  # (2 + 4) / 2, (1 + 5) / 2
    assert metrics.marker_nll(nll[0], mask).item() == 3.0
    assert metrics.marker_nll(nll, torch.zeros(4, dtype=torch.bool)) is None
    with pytest.raises(ValueError, match="token_nll covers 4 target tokens but the mask 3"):
        metrics.marker_nll(nll, mask[:3])


def test_marker_token_mask_lines_up_with_the_scored_smollm2_target(tokenizer):
    from harness.data.tokens import encode

    lower, spans = Lowercase(0).rewrite("People of Ohio, Thank you.")
    target = f" {lower}"
    mask = metrics.marker_token_mask(tokenizer, target, [(a + 1, b + 1) for a, b in spans], max_target_tokens=4)
    item = encode(tokenizer, "Prompt:", target, max_target_tokens=4)
    assert mask.shape[0] == item.n_target == 4
    tokens = [tokenizer.decode([i]) for i in item.ids[-item.n_target:]]
    assert tokens == [" people", " of", " oh", "io"]
    assert mask.tolist() == [True, False, True, True]  # every token of a changed word: People -> people, Ohio -> ohio
