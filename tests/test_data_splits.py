import pytest

from harness.data.records import DataError, Example, ProfileItem
from harness.data.splits import assert_not_used_for_ranking, split_discovery_evaluation


def _examples(n_users=5, per_user=4):
    return [
        Example(f"e{u}-{i}", f"user{u}", "in", "out", (ProfileItem("p", {}, 0),), "t", "train")
        for u in range(n_users) for i in range(per_user)
    ]


def test_split_by_example_is_disjoint_and_complete():
    examples = _examples()
    split = split_discovery_evaluation(examples, eval_fraction=0.25, seed=3)
    assert len(split.evaluation) == 5 and len(split.discovery) == 15
    assert {e.example_id for e in split.discovery} | {e.example_id for e in split.evaluation} == {
        e.example_id for e in examples
    }
    split.check_disjoint()


def test_split_by_user_keeps_each_user_on_one_side():
    split = split_discovery_evaluation(_examples(), seed=1, by_user=True)
    assert not {e.user_id for e in split.discovery} & {e.user_id for e in split.evaluation}
    assert split.manifest()["by_user"] is True


def test_same_seed_same_split_regardless_of_input_order():
    examples = _examples()
    a = split_discovery_evaluation(examples, seed=7).manifest()
    b = split_discovery_evaluation(list(reversed(examples)), seed=7).manifest()
    assert sorted(a["evaluation_ids"]) == sorted(b["evaluation_ids"])
    c = split_discovery_evaluation(examples, seed=8).manifest()
    assert sorted(a["evaluation_ids"]) != sorted(c["evaluation_ids"])


def test_manifest_records_seed_sizes_and_ids():
    manifest = split_discovery_evaluation(_examples(), seed=2).manifest()
    assert manifest["seed"] == 2 and manifest["n_discovery"] + manifest["n_evaluation"] == 20
    assert len(manifest["evaluation_ids"]) == manifest["n_evaluation"]


def test_check_disjoint_catches_shared_examples():
    split = split_discovery_evaluation(_examples(), seed=0)
    broken = type(split)(split.discovery + split.evaluation[:1], split.evaluation, 0, 0.5, False)
    with pytest.raises(DataError, match="on both sides"):
        broken.check_disjoint()


def test_evaluation_example_used_for_ranking_is_an_error():
    assert_not_used_for_ranking(["a", "b"], ["c"])
    with pytest.raises(DataError, match="used for head ranking, e.g. \\['b'\\]"):
        assert_not_used_for_ranking(["a", "b"], ["b", "c"])


def test_bad_fraction_and_too_few_users_are_errors():
    with pytest.raises(DataError, match="eval_fraction"):
        split_discovery_evaluation(_examples(), eval_fraction=1.0)
    with pytest.raises(DataError, match="at least 2 users"):
        split_discovery_evaluation(_examples(n_users=1), by_user=True)
