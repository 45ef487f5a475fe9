"""The other-user twin: another user's profile, ranked for this input, as long as the own profile (±5%), seeded."""

import pytest

from harness.data import DataError, build_prompt, load_examples, split_discovery_evaluation, with_other_user

pytestmark = pytest.mark.slow  # the real SmolLM2 tokenizer


@pytest.fixture(scope="module")
def examples():
    return load_examples("conventions2012", n=16, seed=0)


def test_twin_holds_another_users_profile_of_equal_length(tokenizer, examples):
    for ex in examples[:6]:
        own = build_prompt(ex, tokenizer, max_prompt_tokens=768, k=8)
        twin = with_other_user(own, ex, examples, tokenizer, seed=0)
        assert twin.other_user_id and twin.other_user_id != ex.user_id
        n = twin.n_tokens
        assert abs(n["other_profile"] - n["profile"]) <= 0.05 * n["profile"]
        assert twin.other_profile != twin.with_profile and twin.other_profile.count(ex.input[:40]) == 1
        donor_texts = [p.text for e in examples if e.user_id == twin.other_user_id for p in e.profile]
        shown = twin.other_profile.split("Earlier writing by the same person:\n")[1]
        items = [line.split("] ", 1)[1] for line in shown.split("\n\n")[0].split("\n") if line.startswith("[")]
        assert items and all(any(t.startswith(item[:60]) for t in donor_texts) for item in items)  # donor's items
        assert not any(p.text.startswith(item[:60]) and p.text not in donor_texts for item in items for p in ex.profile)


def test_profile_spans_cover_each_variants_own_block_and_its_tokens(tokenizer, examples):
    from harness.data.tokens import encode

    ex = examples[1]
    twin = with_other_user(build_prompt(ex, tokenizer, max_prompt_tokens=768, k=8), ex, examples, tokenizer)
    header = "Earlier writing by the same person:\n"
    for cond in ("own", "other"):
        text, (lo, hi) = twin.text(cond), twin.span(cond)
        assert text[lo:hi].startswith(header) and "\n[1] " in text[lo:hi] and "[1] " not in text[hi:]
        assert text[hi:].lstrip().startswith(twin.input_text[:30])  # the input follows the block
        item = encode(tokenizer, text, twin.target, profile_span=(lo, hi))
        start, stop = item.profile
        shown = tokenizer.decode(item.ids[start:stop])
        assert header.strip() in shown and twin.input_text[:30] not in shown
        assert stop - start == pytest.approx(twin.n_tokens["profile" if cond == "own" else "other_profile"], abs=2)
    assert twin.span("none") is None and encode(tokenizer, twin.text("none"), twin.target).profile == (0, 0)


def test_twin_is_seeded_and_input_and_target_are_unchanged(tokenizer, examples):
    ex = examples[0]
    own = build_prompt(ex, tokenizer, max_prompt_tokens=768, k=8)
    a, b = (with_other_user(own, ex, examples, tokenizer, seed=3) for _ in range(2))
    assert a == b
    draws = {with_other_user(own, ex, examples, tokenizer, seed=s).other_user_id for s in range(6)}
    assert len(draws) > 1  # the seed picks the donor
    assert a.target == own.target and a.text("none") == own.without_profile and a.text("own") == own.with_profile


def test_twin_needs_another_user_and_names_the_example(tokenizer, examples):
    ex = examples[0]
    own = build_prompt(ex, tokenizer, max_prompt_tokens=768, k=8)
    with pytest.raises(DataError, match=f"example {ex.example_id}: no other user"):
        with_other_user(own, ex, [e for e in examples if e.user_id == ex.user_id], tokenizer)
    with pytest.raises(DataError, match="has no 'other' prompt"):
        own.text("other")


def test_by_user_split_shares_no_user(examples):
    split = split_discovery_evaluation(examples, eval_fraction=0.5, seed=0, by_user=True)
    assert not {e.user_id for e in split.discovery} & {e.user_id for e in split.evaluation}


def test_studies_split_by_user_by_default():
    from harness.study.config import StudyConfig

    assert StudyConfig.from_argv([]).by_user is True
    assert StudyConfig.from_argv(["--no-by-user"]).by_user is False


def test_prefill_framing_starts_the_answer_with_the_lead(tokenizer, examples):
    ex = examples[0]
    assert ex.lead and ex.lead in ex.input
    instruction = build_prompt(ex, tokenizer, max_prompt_tokens=768, k=2)
    prefill = build_prompt(ex, tokenizer, max_prompt_tokens=768, k=2, framing="prefill")
    assert prefill.with_profile == instruction.with_profile + ex.lead
    assert prefill.without_profile.endswith(ex.lead) and prefill.target == " " + ex.output
    assert instruction.target == ex.output and not instruction.prefill
    plain = build_prompt(ex, tokenizer, max_prompt_tokens=768, k=2, framing="prefill", chat=False)
    assert plain.with_profile.endswith("\n\n" + ex.lead) and "<|im_start|>" not in plain.with_profile
    twin = with_other_user(prefill, ex, examples, tokenizer)
    assert twin.text("other").endswith(ex.lead)  # every variant shares the framing
    with pytest.raises(DataError, match="unknown framing"):
        build_prompt(ex, tokenizer, framing="chatty")


def test_chat_auto_follows_the_tokenizer(tokenizer):
    from types import SimpleNamespace

    from harness.errors import ConfigError
    from harness.study.experiment import resolve_chat

    base = SimpleNamespace(chat_template=None)
    assert resolve_chat("auto", tokenizer) is True and resolve_chat("auto", base) is False
    assert resolve_chat("off", tokenizer) is False
    with pytest.raises(ConfigError, match="no chat template"):
        resolve_chat("on", base)
