"""LongLaMP mapping through the same `datasets` code path, with the hub replaced by schema fixtures."""
import json
from pathlib import Path

import datasets
import pytest

from harness.data import load_examples
from harness.data.longlamp import CONFIGS, HUB_ID, load_longlamp, load_longlamp_file
from harness.data.records import DataError

FIXTURES = Path(__file__).parent / "fixtures" / "longlamp"
REAL_LOAD = datasets.load_dataset


def fake_hub(path, name=None, split=None, **kwargs):
    """Stands in for the hub: the config's fixture files, loaded by the real `datasets` json builder."""
    if path != HUB_ID:
        return REAL_LOAD(path, name, split=split, **kwargs)
    files = {p.stem: str(p) for p in (FIXTURES / name.replace("_temporal", "_user")).glob("*.jsonl")}
    return REAL_LOAD("json", data_files=files, split=split)


@pytest.fixture
def hub(monkeypatch):
    calls = []

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        return fake_hub(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", recording)
    return calls


def test_configs_cover_three_tasks_in_user_and_temporal_settings():
    assert len(CONFIGS) == 6 and "product_review_temporal" in CONFIGS


def test_abstract_generation_maps_name_title_abstract_and_orders_by_year(hub):
    examples = load_examples("longlamp:abstract_generation_user", "train")
    assert hub[0][0][:2] == (HUB_ID, "abstract_generation_user") and hub[0][1]["split"] == "train"
    first = examples[0]
    assert first.user_id == "Ada Byron" and first.task == "longlamp:abstract_generation_user"
    assert first.output.startswith("We model rabbit populations")
    # the file lists the 1843 paper first; positions follow the year
    assert [(p.fields["year"], p.position) for p in first.profile] == [("1842", 0), ("1843", 1)]
    assert first.profile[0].text == (
        "Notes on analytical engines\nWe give notes on a general purpose engine and a program for Bernoulli numbers."
    )


def test_product_review_maps_reviewer_and_keeps_rating_fields(hub):
    example = load_longlamp("product_review_user", "val")[0]
    assert example.user_id == "A1B2C3" and example.split == "val"
    item = example.profile[0]
    assert item.text == "Boils fast\nBoils a full pot in three minutes."
    assert item.fields["overall"] == "5.0" and item.fields["description"].startswith("Stainless")


def test_topic_writing_maps_author_summary_content(hub):
    examples = load_longlamp("topic_writing_temporal", "test")
    assert [e.user_id for e in examples] == ["breadhead"]
    assert examples[0].profile[0].text == "Starter revived\nThree feedings brought my starter back."


def test_missing_split_is_an_error_not_a_fallback(hub):
    with pytest.raises(DataError, match="has no split 'test'"):
        load_longlamp("product_review_user", "test")  # the fixture has only train and val


def test_split_name_outside_train_val_test_is_rejected_before_loading(hub):
    with pytest.raises(DataError, match="no split 'validation'"):
        load_longlamp("product_review_user", "validation")
    assert hub == []


def test_unknown_config_lists_known_configs(hub):
    with pytest.raises(DataError, match="unknown LongLaMP config 'poetry_user'.*abstract_generation_user"):
        load_examples("longlamp:poetry_user")


def test_same_call_gives_same_records(hub):
    assert load_longlamp("topic_writing_user", "train") == load_longlamp("topic_writing_user", "train")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _review_rows():
    return [json.loads(line) for line in (FIXTURES / "product_review_user" / "train.jsonl").read_text().splitlines()]


def test_missing_profile_field_names_file_row_and_field(tmp_path):
    rows = _review_rows()
    del rows[1]["profile"][0]["reviewText"]
    path = _write_jsonl(tmp_path / "reviews.jsonl", rows)
    with pytest.raises(DataError, match=r"reviews\.jsonl row 1: profile item 0 is missing field 'reviewText'"):
        load_longlamp_file(path)


def test_missing_top_level_field_names_file_row_and_field(tmp_path):
    rows = _review_rows()
    del rows[1]["output"]
    path = _write_jsonl(tmp_path / "reviews.jsonl", rows)
    with pytest.raises(DataError, match=r"reviews\.jsonl row 1: missing field 'output'"):
        load_longlamp_file(path)


def test_empty_profile_row_is_an_error(tmp_path):
    rows = _review_rows()
    rows[0]["profile"] = []
    path = _write_jsonl(tmp_path / "reviews.jsonl", rows)
    with pytest.raises(DataError, match="row 0: empty profile for user A1B2C3"):
        load_longlamp_file(path)


def test_invalid_json_line_names_file_and_row(tmp_path):
    path = tmp_path / "broken.jsonl"
    good = json.dumps(_review_rows()[0])
    path.write_text(good + "\n" + good[:-5] + "\n")
    with pytest.raises(DataError, match=r"broken\.jsonl row 1 \(line 2\): invalid JSON"):
        load_longlamp_file(path)


def test_custom_jsonl_with_user_id_and_text_schema_loads(tmp_path):
    examples = load_examples(str(FIXTURES / "custom_users.jsonl"))
    assert [e.user_id for e in examples] == ["u1", "u2"]
    assert examples[0].profile[1].fields["date"] == "2024-02-01"
    assert examples[0].task == "file:custom_users"


def test_custom_json_array_in_review_schema_loads_like_the_hub_config(hub):
    from_file = load_longlamp_file(FIXTURES / "custom_reviews.json")
    from_hub = load_longlamp("product_review_user", "train")
    assert [(e.user_id, e.input, e.output, e.profile) for e in from_file] == [
        (e.user_id, e.input, e.output, e.profile) for e in from_hub
    ]


def test_single_file_has_only_train_split():
    with pytest.raises(DataError, match="single file holds one split"):
        load_longlamp_file(FIXTURES / "custom_users.jsonl", "test")


def test_folder_without_requested_split_is_an_error():
    with pytest.raises(DataError, match="no split 'test'"):
        load_examples(str(FIXTURES / "product_review_user"), "test")


def test_file_without_a_known_user_field_says_which_are_expected(tmp_path):
    rows = [{"writer": "x", "input": "a", "output": "b", "profile": [{"text": "c"}]}]
    path = _write_jsonl(tmp_path / "odd.jsonl", rows)
    with pytest.raises(DataError, match="exactly one user id field.*reviewerId"):
        load_longlamp_file(path)
