import pytest

from harness.models.arch import ModelShape
from harness.intervene.heads import Head, HeadSet, all_heads, as_headset

SHAPE = ModelShape("toy", n_layers=30, n_heads=9, head_dim=64, n_kv_heads=3)


def test_head_prints_and_parses_as_LxHy():
    assert str(Head(12, 3)) == "L12H3"
    assert Head.parse("l12h3") == Head(12, 3)


def test_headset_is_sorted_and_deduplicated_and_round_trips():
    hs = HeadSet.parse("L3H2, L1H0 L3H2,L1H0")
    assert str(hs) == "L1H0,L3H2"
    assert HeadSet.parse(str(hs)) == hs
    assert len(hs) == 2 and "L3H2" in hs and Head(3, 1) not in hs


def test_ranges_expand_inclusively():
    assert str(HeadSet.parse("L2H0-2")) == "L2H0,L2H1,L2H2"
    assert str(HeadSet.parse("L2-3H1")) == "L2H1,L3H1"
    assert len(HeadSet.parse("L4H*", SHAPE)) == 9


def test_star_needs_the_model_shape():
    with pytest.raises(ValueError, match="needs the model shape"):
        HeadSet.parse("L4H*")


def test_unknown_head_error_names_the_model_shape():
    with pytest.raises(ValueError) as e:
        HeadSet.parse("L40H2", SHAPE)
    msg = str(e.value)
    assert "L40H2" in msg and "30 layers" in msg and "9 heads" in msg


def test_head_index_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="L2H9"):
        as_headset("L2H9", SHAPE)


def test_garbage_is_rejected_with_the_token():
    with pytest.raises(ValueError, match="'layer3'"):
        HeadSet.parse("layer3")


def test_an_empty_head_spec_is_refused():
    for text in ("", "  ", ", ,"):
        with pytest.raises(ValueError, match="empty head spec"):
            HeadSet.parse(text)
    assert len(HeadSet()) == 0  # the empty set is still spelled explicitly


def test_by_layer_groups_in_forward_order_and_counts():
    hs = HeadSet.parse("L5H1,L2H0,L5H0")
    assert hs.by_layer() == {2: (0,), 5: (0, 1)}
    assert hs.layer_counts() == {2: 1, 5: 2}


def test_set_algebra_and_all_heads():
    a, b = HeadSet.parse("L1H1,L2H2"), HeadSet.parse("L2H2,L3H3")
    assert str(a | b) == "L1H1,L2H2,L3H3" and str(a & b) == "L2H2"
    assert len(all_heads(SHAPE)) == 270


def test_random_headset_matches_layer_counts_and_is_seeded():
    import random

    from harness.intervene.heads import random_headset

    like = HeadSet.parse("L1H0,L1H3,L7H2")
    a = random_headset(SHAPE, random.Random(3), like=like)
    b = random_headset(SHAPE, random.Random(3), like=like)
    assert a == b and a.layer_counts() == like.layer_counts()
    disjoint = random_headset(SHAPE, random.Random(4), like=like, exclude=like)
    assert not (disjoint & like)
    uniform = random_headset(SHAPE, random.Random(5), k=12)
    assert len(uniform) == 12


def test_random_headset_takes_a_seed_and_names_a_layer_too_small_for_the_match():
    from harness.intervene.heads import random_headset

    like = HeadSet.parse("L3H1,L3H4,L10H0")
    drawn = random_headset(SHAPE, 7, like=like, exclude=like)
    assert drawn == random_headset(SHAPE, 7, like=like, exclude=like)
    assert drawn.layer_counts() == like.layer_counts() and not (drawn & like)
    with pytest.raises(ValueError, match="layer 3"):
        random_headset(SHAPE, 0, like=HeadSet.parse(f"L3H0-{SHAPE.n_heads - 1}"), exclude=HeadSet.parse("L3H0"))


GEMMA_LIKE = ModelShape("gemma-like", n_layers=18, n_heads=4, head_dim=256, n_kv_heads=1)


def test_a_layer_the_excluded_set_fills_borrows_its_share_from_the_nearest_layers_and_says_so():
    from harness.intervene.heads import moved_heads, random_headset

    like = HeadSet.parse("L5H0-3,L6H0-2,L9H1")  # layer 5 full, layer 6 has one free head left
    drawn = random_headset(GEMMA_LIKE, 3, like=like, exclude=like, borrow=True)
    assert not (drawn & like) and len(drawn) == len(like)
    counts = drawn.layer_counts()
    # every layer's own free heads first (L6: one); then L5's four from its nearest layer with free heads (L4 before
    # L6, which has none left), and L6's two short from L7 (L5 has none)
    assert counts == {4: 4, 6: 1, 7: 2, 9: 1}
    assert moved_heads(like, drawn) == "L5-4,L6-2,L4+4,L7+2"
    assert moved_heads(like, random_headset(GEMMA_LIKE, 3, like=like)) == ""


def test_a_borrowed_shortfall_spreads_to_both_sides_lower_layer_first():
    from harness.intervene.heads import random_headset

    like = HeadSet.parse("L1H0-3,L2H0-3,L3H0-3")
    exclude = like | HeadSet.parse("L0H0-2")
    counts = random_headset(GEMMA_LIKE, 0, like=like, exclude=exclude, borrow=True).layer_counts()
    # L1: L0's one free head, then L4's (L2, L3 are excluded); L2: L4's last, then L5; L3: L5's last, then L6
    assert counts == {0: 1, 4: 4, 5: 4, 6: 3}


def test_borrowing_leaves_a_draw_without_a_shortfall_unchanged_and_too_few_heads_is_an_error():
    from harness.intervene.heads import random_headset

    like = HeadSet.parse("L3H1,L7H0")
    assert random_headset(GEMMA_LIKE, 11, like=like, exclude=like, borrow=True) == \
        random_headset(GEMMA_LIKE, 11, like=like, exclude=like)
    tiny = ModelShape("tiny", n_layers=2, n_heads=2, head_dim=8, n_kv_heads=1)
    with pytest.raises(ValueError, match="too few drawable heads"):
        random_headset(tiny, 0, like=HeadSet.parse("L0H0-1,L1H0"), exclude=HeadSet.parse("L0H0-1,L1H0"), borrow=True)


def test_copy_heads_merge_into_their_union_at_half_overlap():
    from harness.intervene.heads import copy_heads

    retrieval, induction = HeadSet.parse("L1H0-4"), HeadSet.parse("L1H2-4,L2H0-1")  # 3 of 5 shared
    merged = copy_heads(retrieval, induction, min_overlap=0.5)
    assert merged.merged and merged.overlap == pytest.approx(0.6) and str(merged.shared) == "L1H2,L1H3,L1H4"
    assert merged.union == retrieval | induction and len(merged.union) == 7
    apart = copy_heads(retrieval, HeadSet.parse("L1H4,L3H0-3"), min_overlap=0.5)
    assert not apart.merged and apart.overlap == pytest.approx(0.2)
    assert copy_heads(HeadSet.parse("L0H0,L0H1"), HeadSet.parse("L0H1,L5H5"), min_overlap=0.5).merged  # exactly half
    with pytest.raises(ValueError, match="non-empty"):
        copy_heads(HeadSet(), retrieval)


def test_top_heads_orders_by_score_then_position_and_skips_excluded():
    import torch

    from harness.intervene.heads import top_heads

    scores = torch.tensor([[0.1, 0.5, 0.5], [0.5, -1.0, 0.2]])
    assert top_heads(scores, 3) == HeadSet.parse("L0H1,L0H2,L1H0")
    assert top_heads(scores, 2, exclude=HeadSet.parse("L0H1")) == HeadSet.parse("L0H2,L1H0")
    assert top_heads(scores, 0) == HeadSet()


def test_top_heads_refuses_more_heads_than_the_map_has():
    import torch

    from harness.intervene.heads import top_heads

    scores = torch.zeros(2, 3)
    assert len(top_heads(scores, 6)) == 6
    with pytest.raises(ValueError, match=r"k must be in 0\.\.6 .*got 7"):
        top_heads(scores, 7)
