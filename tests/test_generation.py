"""The one generation interface: which prompt each method reads, CAD/DPS/StyleVector wiring, head-set controls."""

import pytest
import torch

from harness.models.arch import shape_of
from harness.data import Example, Prompt, ProfileItem
from harness.generation.decoding import Contrast, decode
from harness.generation.methods import Generation, build_prompts, generate
from harness.intervene.heads import HeadSet
from harness.generation.steering import StyleVectors

HEADS = HeadSet.parse("L0-3H0-8")


def _prompt(with_profile: str, without_profile: str, user: str = "u1") -> Prompt:
    return Prompt(with_profile, without_profile, "gold", 1, "e1", user)


PROMPTS = [_prompt("Earlier: I love rainy days.\n\nWrite about the weather.", "Write about the weather."),
           _prompt("Earlier: Cats rule.\n\nMy favourite animal is", "My favourite animal is", "u2")]


def _example(n_items: int) -> Example:
    items = tuple(ProfileItem(f"item number {i} about gardening and tomatoes", position=i) for i in range(n_items))
    return Example("e1", "u1", "How do I grow tomatoes?", "Water them.", items, "t", "train")


def test_cad_with_identical_prompts_equals_greedy(smollm):
    same = [_prompt(p.with_profile, p.with_profile) for p in PROMPTS]
    cad = generate(smollm, same, Generation.cad(gamma=1.0), max_new_tokens=6)
    assert cad == generate(smollm, same, Generation("rag"), max_new_tokens=6)


def test_each_method_reads_its_own_prompt(smollm):
    kw = dict(max_new_tokens=5)
    assert generate(smollm, PROMPTS, Generation("no_profile"), **kw) == decode(
        smollm, [p.without_profile for p in PROMPTS], **kw).texts
    rag = generate(smollm, PROMPTS, Generation.rag(), **kw)
    assert rag == decode(smollm, [p.with_profile for p in PROMPTS], **kw).texts
    assert generate(smollm, PROMPTS, Generation("profile"), **kw) == rag
    dps = generate(smollm, PROMPTS, Generation.dps(HEADS, gamma=1.0, source="preference"), **kw)
    assert dps == decode(smollm, [p.with_profile for p in PROMPTS], heads=HEADS, contrast=Contrast(gamma=1.0),
                         **kw).texts
    assert dps != rag


def test_batch_size_does_not_change_the_outputs(smollm):
    method = Generation.cad(gamma=0.5)
    assert generate(smollm, PROMPTS, method, max_new_tokens=5, batch_size=1) == generate(
        smollm, PROMPTS, method, max_new_tokens=5, batch_size=2)


def test_stylevector_steers_with_each_users_vector(smollm):
    d = smollm.config.hidden_size
    style = StyleVectors(5, {"u1": torch.zeros(d), "u2": 20 * torch.ones(d)})
    out = generate(smollm, PROMPTS, Generation.stylevector(style, alpha=1.0), max_new_tokens=5)
    plain = generate(smollm, PROMPTS, Generation("no_profile"), max_new_tokens=5)
    assert out[0] == plain[0] and out[1] != plain[1]  # u1's zero vector leaves its row alone


def test_profile_prompts_hold_all_items_that_fit_and_rag_prompts_top_k(tokenizer):
    ex = _example(6)
    assert build_prompts(Generation("profile"), [ex], tokenizer)[0].n_profile_items == 6
    assert build_prompts(Generation.rag(k_profile=2), [ex], tokenizer)[0].n_profile_items == 2
    tight = build_prompts(Generation("profile"), [ex], tokenizer, max_prompt_tokens=90)[0]
    assert 1 <= tight.n_profile_items < 6 and tight.profile_positions[0] == 5  # most recent first


def test_generation_spec_rejects_incomplete_settings():
    with pytest.raises(ValueError, match="head set"):
        Generation("dps")
    with pytest.raises(ValueError, match="style vectors"):
        Generation("stylevector")
    with pytest.raises(ValueError, match="unknown generation"):
        Generation("beam")
    assert Generation.dps("L1H1", source="retrieval").name == "dps-retrieval"
    assert Generation.cad().name == "cad"
