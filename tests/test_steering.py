"""StyleVector: the per-user steering vector's construction, shape, layer, and its effect on decoding."""

import pytest
import torch

from harness.data import Example, ProfileItem
from harness.generation.decoding import Steering, decode
from harness.generation.steering import (StyleVectors, continuation_split, fit_style_vectors, last_token_activations,
                              select_style, steering_for)

ANNA = tuple(ProfileItem(t, position=i) for i, t in enumerate([
    "Honestly the soup was lukewarm but the bread, oh the bread, was heavenly and warm.",
    "I adore long walks by the sea when the wind howls and the gulls scream overhead.",
]))
BEN = (ProfileItem("Quarterly revenue increased by four percent, driven by strong enterprise demand.", position=0),)


def _examples():
    return [
        Example("a1", "anna", "Describe your weekend.", "The market smelled of bread and rain.", ANNA, "t", "train"),
        Example("b1", "ben", "Summarise the results.", "Revenue grew four percent year over year.", BEN, "t", "train"),
    ]


def test_continuation_split_takes_opening_words_as_input_and_the_rest_as_real_text():
    x, y = continuation_split(ProfileItem("one two three four five six", position=0), n_words=2)
    assert x.endswith("one two") and y == "three four five six"
    x, y = continuation_split(ProfileItem("one two three four", position=0), n_words=16)
    assert x.endswith("one two") and y == "three four"  # at most half of the words
    with pytest.raises(ValueError, match="position 3"):
        continuation_split(ProfileItem("single", position=3))


def test_last_token_activations_read_the_decoder_blocks_output(smollm):
    texts = ["A short one.", "A somewhat longer sentence than the first one."]  # left padding in play
    acts = last_token_activations(smollm, texts, [0, 5])
    with torch.no_grad():
        for i, text in enumerate(texts):
            hs = smollm._module(**smollm.tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states
            for layer in (0, 5):
                assert torch.allclose(acts[layer][i], hs[layer + 1][0, -1], atol=1e-4, rtol=0)


def test_style_vector_has_one_model_width_vector_per_user(smollm):
    fitted = fit_style_vectors(smollm, _examples(), [4, 9], max_new_tokens=4)
    d = smollm.config.hidden_size
    assert sorted(fitted) == [4, 9]
    for layer, style in fitted.items():
        assert style.layer == layer and sorted(style.vectors) == ["anna", "ben"]
        assert all(v.shape == (d,) and torch.isfinite(v).all() and v.norm() > 0 for v in style.vectors.values())
        assert style.n_items == {"anna": 2, "ben": 1}
    assert not torch.allclose(fitted[4].vectors["anna"], fitted[4].vectors["ben"])
    with pytest.raises(KeyError, match="carl"):
        fitted[4].for_users(["anna", "carl"])


def test_steering_with_alpha_zero_equals_plain_decoding_and_a_large_alpha_changes_it(smollm):
    prompts = ["Tell me about your weekend.", "Write a sentence about the sea."]
    d = smollm.config.hidden_size
    vectors = torch.randn(2, d, generator=torch.Generator().manual_seed(0))
    plain = decode(smollm, prompts, max_new_tokens=6)
    zero = decode(smollm, prompts, max_new_tokens=6, steering=Steering(6, vectors, 0.0))
    big = decode(smollm, prompts, max_new_tokens=6, steering=Steering(6, vectors, 8.0))
    assert zero.token_ids == plain.token_ids
    assert big.token_ids != plain.token_ids
    uncached = decode(smollm, prompts, max_new_tokens=6, steering=Steering(6, vectors, 8.0), use_cache=False)
    assert uncached.token_ids == big.token_ids  # added at the same (generated) positions with and without cache


def test_steering_for_stacks_each_prompts_user_vector():
    style = StyleVectors(3, {"u": torch.ones(4), "v": torch.zeros(4)})
    s = steering_for(style, ["v", "u", "v"], 2.0)
    assert s.layer == 3 and s.alpha == 2.0 and s.vectors.tolist() == [[0.0] * 4, [1.0] * 4, [0.0] * 4]


def test_select_style_scores_every_layer_alpha_pair_and_returns_the_best(smollm):
    fitted = fit_style_vectors(smollm, _examples(), [4], max_new_tokens=3)
    choice = select_style(smollm, _examples(), fitted, [0.0, 4.0], max_new_tokens=4)
    assert set(choice.scores) == {(4, 0.0), (4, 4.0)}
    assert choice.scores[(choice.layer, choice.alpha)] == max(choice.scores.values())


def test_steered_decoding_equals_hf_generate_with_a_hook_adding_the_vector_from_the_last_prompt_token(smollm):
    prompt, layer, alpha = "Write a sentence about the sea.", 6, 6.0
    vec = torch.randn(1, smollm.config.hidden_size, generator=torch.Generator().manual_seed(1))
    got = decode(smollm, [prompt], max_new_tokens=6, steering=Steering(layer, vec, alpha)).token_ids[0]

    def add_at_last_position(module, args, output):  # prefill: the last prompt token; then each new token
        out = output.clone()
        out[:, -1] += alpha * vec[0]
        return out

    hf = smollm._module
    handle = hf.model.layers[layer].register_forward_hook(add_at_last_position)
    try:
        enc = smollm.tokenizer(prompt, return_tensors="pt")
        want = hf.generate(**enc, max_new_tokens=6, do_sample=False)[0, enc.input_ids.shape[1]:].tolist()
    finally:
        handle.remove()
    eos = smollm.tokenizer.eos_token_id
    assert got == (want[: want.index(eos)] if eos in want else want)
