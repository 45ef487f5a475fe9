"""Planted-preference corpora: the rules' rewrites, the seeded balanced assignment, and the corpora through --data."""
import collections
import dataclasses
import logging
import re
from pathlib import Path

import pytest

from harness.data import dataset_names, load_examples
from harness.data.planted import (FAMILIES, DroppedG, Lowercase, PlantedSpec, Signoff, WordRule, assign_rules,
                                  changed_spans, family_pool, parse_planted_name, plant, planting_summary)
from harness.data.records import DataError, Example, ProfileItem
from harness.analysis.metrics import marker_rate

CUSTOM = str(Path(__file__).parent / "fixtures" / "longlamp" / "custom_users.jsonl")
LEXICON = WordRule(0, "test", (("people", "folk"), ("very", "remarkably")), "lexicon")
SIGNOFF = Signoff(0, "Onward and upward, Juniper.")
TEXTS = (
    "People say the PEOPLE are very, very tired. Townspeople and peoples are not people.",
    "I realized that our neighbors honor labor; the Center is gray. Going nothing thing KING being string.",
    'He said: "We are Going Home." i think iPhone prices are VERY high!',
    "plain lowercase text with no rule words at all",
)


def _rules():
    """One rule of every family (both spelling instances)."""
    return [LEXICON, SIGNOFF, Lowercase(0), *family_pool("spelling"), family_pool("lexicon")[0]]


def _outside(text: str, spans) -> list[str]:
    """The pieces of ``text`` between ``spans``."""
    pieces, last = [], 0
    for a, b in spans:
        pieces.append(text[last:a])
        last = b
    return pieces + [text[last:]]


GOLD = "People said today was just a very great day, and the people agreed."  # a source word of every lexicon instance


def _examples(n_users: int = 8, per_user: int = 2) -> list[Example]:
    """Small hand-built examples whose gold outputs every rule changes."""
    return [
        Example(example_id=f"u{u}:{k}", user_id=f"u{u}", input='Continue:\n"This is very Good."',
                output=f"{GOLD} Meeting {u}.{k}.",
                profile=(ProfileItem(f"Very many people came to event {u}.", {}, 0),
                         ProfileItem("Nothing new.", {}, 1)),
                task="t", split="train", lead="This is very Good.")
        for u in range(n_users) for k in range(per_user)
    ]


# ------------------------------------------------------------------------------------------------ rules


def test_word_rule_keeps_capitalization_and_whole_words():
    text, spans = LEXICON.rewrite(TEXTS[0])
    assert text == "Folk say the FOLK are remarkably, remarkably tired. Townspeople and peoples are not folk."
    assert [text[a:b] for a, b in spans] == ["Folk", "FOLK", "remarkably", "remarkably", "folk"]


def test_word_rule_leaves_other_casings_alone():
    assert LEXICON.apply("pEople and VeRy") == "pEople and VeRy"


@pytest.mark.parametrize("text", TEXTS)
def test_every_rule_is_idempotent(text):
    for rule in _rules():
        once = rule.apply(text)
        assert rule.apply(once) == once, rule.label


@pytest.mark.parametrize("text", TEXTS)
def test_rules_change_nothing_outside_their_spans(text):
    for rule in _rules():
        planted, spans = rule.rewrite(text)
        diff = changed_spans(text, planted)
        assert all(any(a <= c and d <= b for a, b in spans) for c, d in diff), rule.label
        if isinstance(rule, (WordRule, Lowercase)):  # word swaps: the text between words is byte-identical
            assert re.split(r"[^\W\d_]+", planted) == re.split(r"[^\W\d_]+", text)


@pytest.mark.parametrize("text", TEXTS)
def test_word_rules_rewrite_exactly_the_words_they_would_change(text):
    for rule in _rules():
        if isinstance(rule, Signoff):  # an insertion: nothing of the text itself would change
            assert rule.would_change(text) == () and rule.rewrite(text)[1] == ((len(text), len(rule.apply(text))),)
            continue
        planted, spans = rule.rewrite(text)
        assert _outside(planted, spans) == _outside(text, rule.would_change(text)), rule.label


def test_british_spelling_uses_its_word_list_only():
    british = family_pool("spelling")[1]
    assert british.apply(TEXTS[1]) == ("I realised that our neighbours honour labour; the Centre is grey. "
                                       "Going nothing thing KING being string.")
    for same in ("size", "prize", "honorary", "vigorous", "meter", "defensive", "actor", "governor"):
        assert british.apply(same) == same


def test_g_dropping_rewrites_unstressed_ing_only():
    assert DroppedG(0).apply(TEXTS[1].split(". ")[1]) == "Goin' nothin' thing KING bein' string."
    assert DroppedG(0).apply("GOING") == "GOIN'"


def test_signoff_is_appended_on_its_own_line_and_not_to_a_lead():
    assert SIGNOFF.apply("We won.") == "We won.\nOnward and upward, Juniper."
    assert SIGNOFF.rewrite_opening("We won.") == "We won."


def test_lowercase_is_str_lower_on_ascii_text():
    for text in TEXTS:
        assert Lowercase(0).apply(text) == text.lower()


@pytest.mark.parametrize("rule", [LEXICON, SIGNOFF, Lowercase(0), *family_pool("spelling")], ids=lambda r: r.label)
def test_planted_text_follows_its_rule_and_ordinary_text_does_not(rule):
    text = " ".join(TEXTS[:2])
    assert marker_rate(rule.apply(text), rule).rate == 1.0
    assert marker_rate(text, rule).rate == 0.0


def test_case_opportunities_are_capitals_and_lowercase_sentence_starts():
    rate = marker_rate('hello World. then "we" go. i do.', Lowercase(0))
    assert (rate.followed, rate.opportunities) == (3, 4)  # hello, then, i (followed); World (not)


def test_word_rule_rejects_a_variant_that_is_also_a_source():
    with pytest.raises(DataError, match=r"\['folk'\] are both source and variant"):
        WordRule(0, "bad", (("people", "folk"), ("folk", "kin")))


def test_pools_have_distinct_instances():
    for family in FAMILIES:
        pool = family_pool(family)
        assert [r.instance for r in pool] == list(range(len(pool)))
        assert len(set(pool)) == len(pool)
    assert len(family_pool("signoff")) == 400 and len({r.line for r in family_pool("signoff")}) == 400
    lexicon = family_pool("lexicon")
    assert all(len(r.pairs) == 6 for r in lexicon)
    words = [w for r in lexicon for pair in r.pairs for w in pair]
    assert len(words) == len(set(words))  # disjoint instances


# ----------------------------------------------------------------------------------------------- naming


@pytest.mark.parametrize("name, spec", [
    ("planted:conventions2012:lexicon", PlantedSpec("conventions2012", "lexicon")),
    ("planted:longlamp:product_review_user:case", PlantedSpec("longlamp:product_review_user", "case")),
    ("planted:C:/data/users.jsonl:signoff:controls=0.5,seed=3,lead=original",
     PlantedSpec("C:/data/users.jsonl", "signoff", 0.5, 3, "original")),
])
def test_planted_names_read_the_family_from_the_end(name, spec):
    assert parse_planted_name(name) == spec


@pytest.mark.parametrize("name, message", [
    ("planted:conventions2012:accent", "unknown planted family 'accent'; families: signoff, lexicon"),
    ("planted:lexicon", "no dataset"),
    ("planted:conventions2012:case:controls=1", r"control share must be in \[0, 1\)"),
    ("planted:conventions2012:case:controls=some", "not a float"),
    ("planted:conventions2012:case:share=0.5", "options are controls=..., seed=..., lead=..."),
    ("planted:conventions2012:case:lead=both", "lead='both': choose planted or original"),
])
def test_bad_planted_names_say_what_is_wrong(name, message):
    with pytest.raises(DataError, match=message):
        load_examples(name)


def test_dataset_names_list_planted_corpora():
    names = dataset_names()
    assert {f"planted:conventions2012:{family}" for family in FAMILIES} <= set(names)


# ------------------------------------------------------------------------------------------- assignment


def test_assignment_is_seeded_balanced_and_shares_controls_across_families():
    users = [f"u{i}" for i in range(40)]
    lexicon = assign_rules(users, "lexicon")
    assert lexicon == assign_rules(reversed(users), "lexicon")  # independent of input order
    assert lexicon != assign_rules(users, "lexicon", seed=1)
    controls = {u for u, (_, applied) in lexicon.items() if not applied}
    assert len(controls) == 10
    assert controls == {u for u, (_, applied) in assign_rules(users, "case").items() if not applied}
    counts = collections.Counter(rule.instance for rule, applied in lexicon.values() if applied)
    assert max(counts.values()) - min(counts.values()) <= 1 and len(counts) == 5


def test_signoff_lines_are_distinct_per_user_including_control_shadows():
    lines = [rule.line for rule, _ in assign_rules([f"u{i}" for i in range(178)], "signoff").values()]
    assert len(set(lines)) == 178


def test_plant_rewrites_every_text_of_planted_users_and_no_text_of_controls():
    base = {e.example_id: e for e in _examples()}
    out = plant(list(base.values()), "lexicon", lead="planted")
    assert len(out) == len(base)
    for e in out:
        original, rule = base[e.example_id], e.planted.rule
        if e.planted.control:
            assert dataclasses.replace(e, planted=None) == original
            assert e.planted.output_spans == rule.would_change(e.output) != ()
            continue
        for text, before in [(e.output, original.output), (e.lead, original.lead),
                             *((i.text, j.text) for i, j in zip(e.profile, original.profile))]:
            assert text == rule.apply(before)
        assert e.input == original.input.replace(original.lead, e.lead)
        assert e.planted.output_spans == changed_spans(original.output, e.output)


def test_plant_is_deterministic_and_has_a_quarter_controls():
    out = plant(_examples(), "case")
    assert out == plant(_examples(), "case")
    assert planting_summary(out) == {"examples": 16, "planted_examples": 12, "control_examples": 4,
                                     "planted_users": 6, "control_users": 2}


def test_plant_keeps_the_original_lead_by_default():
    assert plant(_examples(), "case") == plant(_examples(), "case", lead="original")
    for e in plant(_examples(), "case"):
        assert e.lead == "This is very Good." and e.input == 'Continue:\n"This is very Good."'


def test_plant_drops_golds_the_rule_would_not_change_and_logs_it(caplog):
    examples = _examples(4, 1)
    examples[0] = dataclasses.replace(examples[0], output="Nothing to swap here at all.")
    with caplog.at_level(logging.INFO, logger="harness.data.planted"):
        out = plant(examples, "lexicon", control_share=0)
    assert [e.example_id for e in out] == [e.example_id for e in examples[1:]]
    assert "3 of 4 examples kept (1 dropped" in caplog.text


# -------------------------------------------------------------------------------- real corpora via --data


# conventions2012 as its committed planted runs read it: same-speech profiles (profile_docs="any"); under the default
# "other" it keeps only its few speakers with several speeches (tests/test_data_documents.py)
SAME_SPEECH = {"profile_docs": "any"}


@pytest.fixture(scope="module")
def conventions():
    return {e.example_id: e for e in load_examples("conventions2012", **SAME_SPEECH)}


@pytest.mark.parametrize("family, counts", [
    ("signoff", (1475, 134, 44)), ("lexicon", (365, 101, 31)), ("spelling", (478, 101, 33)), ("case", (1475, 134, 44)),
])
def test_conventions2012_planted_corpora_follow_their_rules(family, counts, conventions):
    examples = load_examples(f"planted:conventions2012:{family}", **SAME_SPEECH)
    summary = planting_summary(examples)
    assert (summary["examples"], summary["planted_users"], summary["control_users"]) == counts
    for e in examples:
        original = conventions[e.example_id]
        assert e.planted.family == family
        if e.planted.control:
            assert dataclasses.replace(e, planted=None) == original
        else:
            assert e.output == e.planted.rule.apply(original.output)
            assert marker_rate(e.output, e.planted.rule).rate == 1.0
            assert {marker_rate(i.text, e.planted.rule).rate for i in e.profile} <= {1.0, None}
        # a signoff control's line would be inserted, not changed: its spans are empty; any other rule changed words
        assert bool(e.planted.output_spans) != (family == "signoff" and e.planted.control)


def test_study_seed_and_n_subset_the_same_planted_corpus():
    full = {e.example_id: e for e in load_examples("planted:conventions2012:lexicon")}
    for seed in (0, 1):
        for e in load_examples("planted:conventions2012:lexicon", n=20, seed=seed):
            assert full[e.example_id] == e


def test_spelling_gold_words_mostly_do_not_occur_in_the_profile():
    """The rule has to be inferred: most changed words of the gold are nowhere in the user's profile, shown or not."""
    shared = total = 0
    for e in load_examples("planted:conventions2012:spelling", **SAME_SPEECH):
        if e.planted.control:
            continue
        profile = " ".join(i.text for i in e.profile).lower()
        for word in {e.output[a:b].lower() for a, b in e.planted.output_spans}:
            total += 1
            shared += bool(re.search(rf"(?<![\w']){re.escape(word)}(?![\w'])", profile))
    assert total > 500 and shared / total < 0.25  # measured: 0.18 (g-dropping 0.19, British 0.09; lexicon: 0.63)


def test_custom_files_and_other_corpora_plant_too():
    examples = load_examples(f"planted:{CUSTOM}:case:controls=0")  # u2 writes in lowercase already: dropped
    assert [e.output for e in examples] == [load_examples(CUSTOM)[0].output.lower()]
    assert examples[0].planted.applied
    assert planting_summary(load_examples("planted:debates2016:signoff"))["examples"] == 67
