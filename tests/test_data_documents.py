"""Documents in the data model: no profile item from the example's own document (profile_docs="other"), the sotu
corpus of many documents per user, the same-document twin and the covariate-matched (nearest) donor."""
import json
from collections import Counter

import pytest

from harness.errors import ConfigError
from harness.study.config import StudyConfig
from harness.data import DataError, Example, ProfileItem, load_examples
from harness.data.prompts import donor_order
from harness.data.records import restrict_profile_docs
from harness.data.registry import resolve_donor

CORPORA = ["debates2016", "conventions2012", "sotu", "planted:sotu:signoff", "planted:conventions2012:case"]


@pytest.fixture(scope="module")
def sotu():
    return load_examples("sotu")


@pytest.mark.parametrize("name", CORPORA)
def test_no_profile_item_comes_from_the_examples_own_document(name):
    examples = load_examples(name)
    assert examples and all(e.doc_id for e in examples)
    for e in examples:
        assert all(item.doc_id and item.doc_id != e.doc_id for item in e.profile), e.example_id
        assert all(item.doc_id == e.doc_id for item in e.same_doc)


@pytest.mark.parametrize("name", ["debates2016", "conventions2012", "sotu"])
def test_any_keeps_the_same_document_items_the_default_leaves_out(name):
    other = {e.example_id: e for e in load_examples(name)}
    anyd = {e.example_id: e for e in load_examples(name, profile_docs="any")}
    assert set(other) <= set(anyd)
    with_same = [e for e in anyd.values() if e.same_doc]
    assert with_same  # each of these corpora has users with same-document items
    for e in with_same[:300]:  # items compared by identity: the loaders share item objects (sotu: ~550 an example)
        same = {id(i) for i in e.same_doc}
        assert same <= {id(i) for i in e.profile}
        if e.example_id in other:
            assert [id(i) for i in other[e.example_id].profile] == [id(i) for i in e.profile if id(i) not in same]
            assert [id(i) for i in other[e.example_id].same_doc] == [id(i) for i in e.same_doc]


def test_custom_file_takes_documents_and_covariate_from_fields(tmp_path):
    rows = [{"id": "a", "user_id": "u1", "input": "in", "output": "out", "doc_id": "d1", "covariate": 1999,
             "profile": [{"text": "same doc", "doc_id": "d1"}, {"text": "other doc", "doc_id": "d2"}]},
            {"id": "b", "user_id": "u2", "input": "in", "output": "out", "doc_id": "d3",
             "profile": [{"text": "only own doc", "doc_id": "d3"}]}]
    path = tmp_path / "users.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    [a] = load_examples(str(path))  # b's only item is its own document: dropped
    assert a.covariate == 1999.0 and [i.text for i in a.profile] == ["other doc"]
    assert [i.text for i in a.same_doc] == ["same doc"]
    assert len(load_examples(str(path), profile_docs="any")) == 2


def test_unknown_profile_docs_is_refused_by_name():
    with pytest.raises(DataError, match="profile-docs 'mine'"):
        load_examples("debates2016", profile_docs="mine")
    with pytest.raises(ConfigError, match="profile-docs"):
        StudyConfig.build({"profile_docs": "mine"})


def test_sotu_users_are_presidents_with_two_or_more_addresses(sotu):
    users = Counter(e.user_id for e in sotu)
    assert "Zachary Taylor" not in users  # one address: no other document
    assert "Grover Cleveland" in users and "Donald J. Trump" in users  # two terms, one person
    assert len(users) == 42 and len(sotu) > 10_000
    assert all(isinstance(e.covariate, float) and 1790 <= e.covariate <= 2026 for e in sotu)
    assert all(4 <= len(e.lead.split()) <= 50 for e in sotu)  # a longer lead, shown twice, would fill the prompt


def test_sotu_example_is_a_paragraph_lead_and_its_rest(sotu):
    e = next(e for e in sotu if e.doc_id == "1963-Kennedy-1")
    assert e.lead in e.input and e.input.startswith("Continue this paragraph from a U.S. president")
    assert e.example_id.startswith("sotu:1963-Kennedy-1:") and e.covariate == 1963.0
    assert len(e.output.split()) <= 60 and len(e.lead.split()) >= 4


def test_sotu_profiles_leave_out_the_paragraph_its_neighbours_and_leaks():
    for e in load_examples("sotu", profile_docs="any", n=300, seed=3):
        para = int(e.example_id.rsplit(":", 1)[1])
        for item in e.profile:
            assert item.fields["address"] != e.doc_id or abs(int(item.fields["paragraph"]) - para) > 1
            assert e.output[:60] not in item.text


def test_sotu_loads_from_the_command_line(capsys):
    from harness.data.__main__ import main

    assert main(["sotu"]) == 0
    out = capsys.readouterr().out
    assert "users" in out and "42" in out and "profile items per example" in out


def _example(user: str, year: float | None, i: int = 0) -> Example:
    return Example(f"{user}:{i}", user, "in", "out", (ProfileItem("text", position=0),), "t", "train",
                   covariate=year)


def test_nearest_donor_is_the_user_closest_on_the_covariate():
    me = _example("me", 1900)
    donors = [_example("far", 1790), _example("near", 1905), _example("mid", 1850), _example("near", 1950, 1)]
    order = donor_order(me, donors, donor="nearest", seed=0)
    assert order == ["near", "mid", "far"]  # near's median year 1927.5 is 27.5 away; mid 50; far 110
    assert sorted(donor_order(me, donors, donor="random", seed=0)) == ["far", "mid", "near"]


def test_nearest_donor_without_a_covariate_is_refused_by_name():
    with pytest.raises(DataError, match="no covariate"):
        donor_order(_example("me", None), [_example("x", 1800)], donor="nearest")
    with pytest.raises(DataError, match="conventions2012 has none"):
        resolve_donor("nearest", "conventions2012")
    assert resolve_donor("auto", "sotu") == "nearest" and resolve_donor("auto", "planted:sotu:case") == "nearest"
    assert resolve_donor("auto", "debates2016") == "random"


def test_options_added_later_keep_the_hash_of_runs_made_before_them():
    legacy = StudyConfig.from_argv(["--data", "conventions2012", "--profile-docs", "any"])
    numbers = legacy.numbers_config()
    assert "profile_docs" not in numbers and "donor" not in numbers and "same_doc" not in numbers
    new = StudyConfig.from_argv(["--data", "conventions2012"])
    assert new.numbers_config()["profile_docs"] == "other" and new.config_hash() != legacy.config_hash()
    assert StudyConfig.from_argv(["--data", "sotu"]).numbers_config()["donor"] == "nearest"


def test_a_donor_other_than_the_corpus_own_gets_its_own_folder():
    assert StudyConfig.from_argv(["--data", "sotu"]).folder("signal") == "seed0/signal"
    assert StudyConfig.from_argv(["--data", "sotu", "--donor", "random"]).folder("signal") == \
        "seed0/signal-donor-random"
    assert StudyConfig.from_argv(["--data", "debates2016"]).folder("signal") == "seed0/signal"


def test_restrict_profile_docs_drops_examples_left_without_a_profile():
    own = ProfileItem("mine", doc_id="d1")
    e = Example("x", "u", "in", "out", (own,), "t", "train", doc_id="d1")
    assert restrict_profile_docs([e], "other") == []
    [kept] = restrict_profile_docs([e], "any")
    assert kept.profile == (own,) and kept.same_doc == (own,)
