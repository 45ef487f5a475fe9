from dataclasses import FrozenInstanceError

import pytest

from harness.data.records import DataError, Example, ProfileItem


def _example(**overrides):
    fields = dict(
        example_id="ex1", user_id="alice", input="Write a review.", output="Great kettle.",
        profile=(ProfileItem("Loved the toaster.", {}, 0),), task="t", split="train",
    )
    fields.update(overrides)
    return Example(**fields)


def test_valid_example_keeps_fields_and_turns_profile_list_into_tuple():
    example = _example(profile=[ProfileItem("a b c", {"k": "v"}, 0)])
    assert example.profile == (ProfileItem("a b c", {"k": "v"}, 0),)


@pytest.mark.parametrize("field", ["input", "output"])
def test_empty_input_or_output_names_the_example(field):
    with pytest.raises(ValueError, match=f"empty {field} in example ex1"):
        _example(**{field: "  "})


def test_empty_profile_names_user_and_example():
    with pytest.raises(DataError, match="empty profile for user alice in example ex1"):
        _example(profile=())


def test_profile_item_with_empty_text_is_rejected():
    with pytest.raises(DataError, match="empty text"):
        ProfileItem("", {}, 3)


def test_records_are_frozen():
    with pytest.raises(FrozenInstanceError, match="cannot assign to field 'input'"):
        _example().input = "changed"
