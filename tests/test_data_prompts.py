"""Prompt building with the real SmolLM2 tokenizer (loaded once for the module: it takes seconds)."""
import pytest

from harness.data.prompts import PROFILE_HEADER, build_prompt, load_smollm2_tokenizer
from harness.data.records import Example, ProfileItem


@pytest.fixture(scope="module")
def tokenizer():
    return load_smollm2_tokenizer()


def n_tokens(tokenizer, text):
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _example(n_items=6, item_words=80, input_text="Write about the tax plan and the economy."):
    profile = tuple(
        ProfileItem(f"Item {i} " + " ".join(["economy tax growth jobs"] * (item_words // 4)), {}, i)
        for i in range(n_items)
    )
    return Example("ex1", "alice", input_text, "Taxes will fall.", profile, "t", "train")


def test_prompt_with_small_profile_shows_all_items_under_chat_template(tokenizer):
    prompt = build_prompt(_example(n_items=2, item_words=8), tokenizer, k=4)
    assert prompt.n_profile_items == 2
    assert prompt.with_profile.startswith("<|im_start|>system")
    assert prompt.with_profile.endswith("<|im_start|>assistant\n")
    assert prompt.target == "Taxes will fall." and prompt.user_id == "alice"
    start, end = prompt.profile_span
    assert prompt.with_profile[start:end].startswith(PROFILE_HEADER)


def test_no_profile_twin_has_no_profile_text(tokenizer):
    example = _example(n_items=3, item_words=8)
    prompt = build_prompt(example, tokenizer)
    assert PROFILE_HEADER not in prompt.without_profile
    assert all(item.text not in prompt.without_profile for item in example.profile)
    assert example.input in prompt.without_profile and example.input in prompt.with_profile
    assert prompt.with_profile.endswith(prompt.without_profile.split(example.input)[-1])


@pytest.mark.parametrize("budget", [128, 200, 512])
def test_budget_is_respected_by_dropping_then_cutting_profile(tokenizer, budget):
    prompt = build_prompt(_example(), tokenizer, max_prompt_tokens=budget, k=6)
    assert n_tokens(tokenizer, prompt.with_profile) <= budget
    assert n_tokens(tokenizer, prompt.without_profile) <= budget
    assert 1 <= prompt.n_profile_items < 6
    assert not prompt.input_truncated


def test_lowest_ranked_items_are_dropped_first(tokenizer):
    prompt = build_prompt(_example(), tokenizer, max_prompt_tokens=300, k=6, retrieval="recency")
    assert prompt.profile_positions == (5, 4, 3)[: prompt.n_profile_items]
    assert "Item 5" in prompt.with_profile and "Item 0" not in prompt.with_profile


def test_input_too_long_is_cut_with_a_warning(tokenizer):
    example = _example(input_text=" ".join(["word"] * 400))
    with pytest.warns(UserWarning, match="input alone does not fit"):
        prompt = build_prompt(example, tokenizer, max_prompt_tokens=100)
    assert prompt.input_truncated and prompt.n_profile_items == 0
    assert n_tokens(tokenizer, prompt.with_profile) <= 100


def test_plain_prompt_without_chat_template_ends_at_the_answer_cue(tokenizer):
    prompt = build_prompt(_example(n_items=1, item_words=8), tokenizer, chat=False)
    assert "<|im_start|>" not in prompt.with_profile
    assert prompt.with_profile.endswith("Answer:\n") and prompt.without_profile.startswith("Write about")


def test_real_corpus_prompts_fit_the_default_budget(tokenizer):
    from harness.data import load_examples

    for example in load_examples("debates2016", n=5):
        prompt = build_prompt(example, tokenizer)
        assert n_tokens(tokenizer, prompt.with_profile) <= 512 and prompt.n_profile_items >= 1


def _bos_word_tokenizer():
    """A word-level tokenizer that adds its BOS to every sequence, as Gemma's does."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<bos>", "a", "b", "c", "d"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", unk_token="<unk>")


@pytest.mark.parametrize("budget", [30, 38, 47, 65, 92])
def test_the_budget_counts_the_bos_that_scoring_puts_first(budget):
    from harness.data.tokens import encode

    tok = _bos_word_tokenizer()
    profile = tuple(ProfileItem(" ".join(["a b c d"] * 6), {}, i) for i in range(4))
    prompt = build_prompt(Example("ex1", "u", "b c", "a b", profile, "t", "train"), tok, max_prompt_tokens=budget,
                          k=4, chat=False, retrieval="recency")
    for text in (prompt.with_profile, prompt.without_profile):
        scored = encode(tok, text, prompt.target).ids.numel() - len(tok(prompt.target, add_special_tokens=False)
                                                                    ["input_ids"])
        assert scored <= budget  # without the BOS counted: 31, 39, 66 and 93 scored tokens
