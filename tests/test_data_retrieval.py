import pytest

from harness.data.records import DataError, Example, ProfileItem
from harness.data.retrieval import select_profile

PROFILE = (
    ProfileItem("I adore my cast iron skillet for searing steak.", {}, 0),
    ProfileItem("The tax plan lowers rates for small businesses and the economy grows.", {}, 1),
    ProfileItem("Hiking boots need breaking in before a long trail.", {}, 2),
    ProfileItem("Sourdough starters need daily feeding.", {}, 3),
)
EXAMPLE = Example("ex", "u", "What will your tax plan do for the economy?", "It cuts taxes.", PROFILE, "t", "train")


def test_bm25_puts_the_obviously_relevant_item_first():
    assert select_profile(EXAMPLE, k=2)[0].position == 1


def test_bm25_uses_an_explicit_query_over_the_input():
    assert select_profile(EXAMPLE, "sourdough feeding", k=1)[0].position == 3


def test_bm25_with_no_overlap_falls_back_to_recency_order():
    assert [i.position for i in select_profile(EXAMPLE, "zzzz", k=4)] == [3, 2, 1, 0]


def test_recency_returns_highest_positions_first():
    assert [i.position for i in select_profile(EXAMPLE, k=2, retrieval="recency")] == [3, 2]


def test_random_is_seeded_and_depends_on_the_seed():
    def pick(seed):
        return tuple(i.position for i in select_profile(EXAMPLE, k=2, retrieval="random", seed=seed))

    picks = {seed: pick(seed) for seed in range(8)}
    assert picks[0] == pick(0)
    assert len(set(picks.values())) > 1


def test_k_larger_than_profile_returns_everything():
    assert len(select_profile(EXAMPLE, k=10)) == 4


def test_unknown_retrieval_and_bad_k_are_errors():
    with pytest.raises(DataError, match="unknown profile retrieval 'dense'"):
        select_profile(EXAMPLE, k=2, retrieval="dense")
    with pytest.raises(DataError, match="k must be >= 1"):
        select_profile(EXAMPLE, k=0)
