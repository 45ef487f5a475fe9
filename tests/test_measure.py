"""The ablation study's head sets (measure.comparison_sets): nulls that never hold the named heads."""

import torch

from harness.models.arch import ModelShape
from harness.study.measure import comparison_sets
from harness.scorers.ranking import Ranking

GEMMA_LIKE = ModelShape("gemma-like", n_layers=18, n_heads=4, head_dim=256, n_kv_heads=1)


def ranking_filling_layer_5() -> Ranking:
    """Two families whose top-10 hold every head of layer 5 (Gemma-3 has only 4 heads per layer)."""
    maps = {f: torch.rand(GEMMA_LIKE.n_layers, GEMMA_LIKE.n_heads, generator=torch.Generator().manual_seed(i))
            for i, f in enumerate(("specific_pcs", "retrieval"))}
    for m in maps.values():
        m[5] += 10
    return Ranking.from_maps(maps, [3, 10], [], {})


def sets(exclude_named: bool) -> list:
    return comparison_sets(ranking_filling_layer_5(), GEMMA_LIKE, ["specific_pcs", "retrieval"], [3, 10],
                           n_random=40, n_random_other=5, n_unmatched=2, seed=0, exclude_named=exclude_named)


def test_matched_random_sets_contain_none_of_their_named_sets_heads():
    drawn = sets(exclude_named=True)
    named = {s.name.split("@")[0] + f"@{s.k}": s.heads for s in drawn if s.family in ("specific_pcs", "retrieval")}
    matched = [s for s in drawn if s.family == "random_matched"]
    assert len(matched) == 2 * (40 + 5)
    for s in matched:
        own = named[f"{s.matched_to}@{s.k}"]
        assert not (s.heads & own) and len(s.heads) == len(own), s.name
        short = any(2 * n > GEMMA_LIKE.n_heads for n in own.layer_counts().values())  # fewer free heads than named
        assert (s.moved != "") == short and (not short or "L5-" in s.moved), (s.name, s.moved)


def test_without_the_option_matched_sets_may_share_named_heads_and_keep_layer_counts():
    drawn = sets(exclude_named=False)
    named = {f"{s.family}@{s.k}": s.heads for s in drawn if s.family in ("specific_pcs", "retrieval")}
    matched = [s for s in drawn if s.family == "random_matched"]
    assert all(s.heads.layer_counts() == named[f"{s.matched_to}@{s.k}"].layer_counts() for s in matched)
    assert any(s.heads & named[f"{s.matched_to}@{s.k}"] for s in matched)  # layer 5 is all named heads


def test_copy_heads_that_mostly_overlap_are_measured_once_as_their_union_with_their_own_null():
    from harness.study.measure import copy_head_unions

    ranking = ranking_filling_layer_5()  # both families' top-10 hold layer 5: they share at least 4 heads
    maps = {**ranking.maps, "induction": ranking.maps["retrieval"] + 0.001 * torch.arange(72.0).reshape(18, 4)}
    ranking = Ranking.from_maps(maps, [3, 10], [], {})
    unions = copy_head_unions(ranking, 10, members=("retrieval", "induction"), min_overlap=0.5)
    assert unions == {"copy_heads": ("retrieval", "induction")}
    drawn = comparison_sets(ranking, GEMMA_LIKE, ["specific_pcs", "copy_heads"], [3, 10], n_random=3,
                            n_random_other=2, n_unmatched=1, seed=0, unions=unions)
    copy = next(s for s in drawn if s.name == "copy_heads@10")
    assert copy.heads == ranking.top("retrieval", 10) | ranking.top("induction", 10)
    assert {s.matched_to for s in drawn if s.family == "random_matched"} == {"specific_pcs", "copy_heads"}
    apart = Ranking.from_maps({**maps, "induction": -maps["retrieval"]}, [10], [], {})  # disjoint top-10
    assert copy_head_unions(apart, 10, members=("retrieval", "induction"), min_overlap=0.5) == {}
    assert copy_head_unions(apart, 10, members=("retrieval", "absent"), min_overlap=0.5) == {}
