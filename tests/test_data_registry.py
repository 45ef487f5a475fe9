from pathlib import Path

import pytest

from harness.data import dataset_names, load_examples
from harness.data.__main__ import main
from harness.data.records import DataError

CUSTOM = str(Path(__file__).parent / "fixtures" / "longlamp" / "custom_users.jsonl")


def test_dataset_names_list_corpora_longlamp_configs_and_planted_corpora():
    names = dataset_names()
    assert names[:2] == ["debates2016", "conventions2012"]
    assert "longlamp:product_review_user" in names and "planted:conventions2012:case" in names
    assert len(names) == 3 + 6 + 3 * 4  # corpora, LongLaMP configs, each corpus with each planted family


def test_unknown_name_lists_known_names():
    with pytest.raises(DataError, match="unknown dataset 'lamp:9'.*debates2016.*longlamp:topic_writing_user"):
        load_examples("lamp:9")


def test_corpora_have_only_a_train_split():
    with pytest.raises(DataError, match="only split 'train'"):
        load_examples("debates2016", "test")


def test_n_takes_the_same_seeded_subset_every_time():
    a = load_examples("conventions2012", n=20, seed=5)
    assert a == load_examples("conventions2012", n=20, seed=5)
    assert len(a) == 20 and a != load_examples("conventions2012", n=20, seed=6)


def test_n_larger_than_dataset_returns_all():
    assert len(load_examples(CUSTOM, n=50)) == 2


def test_cli_prints_a_summary_table(capsys):
    assert main(["debates2016"]) == 0
    out = capsys.readouterr().out
    assert "users                              2" in out
    assert "examples                           67" in out
    for label in ("profile items per example", "input tokens", "output tokens", "profile item tokens"):
        assert label in out


def test_cli_reports_bad_names_with_exit_code_2(capsys):
    assert main(["nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
