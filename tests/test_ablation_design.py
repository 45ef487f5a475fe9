"""The two ablation designs: target-position ablation leaves the prompt untouched; mean references come from
discovery prompts only."""

import json

import nnsight
import pytest
import torch

from harness.intervene.ablation import ablate
from harness.models.arch import block, shape_of
from harness.intervene.heads import HeadSet
from harness.data.tokens import encode


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text"])
def test_target_positions_leave_every_prompt_position_bit_identical(tiny_models, tokenizer, family):
    model = tiny_models[family]
    item = encode(tokenizer, "The user writes about tomatoes and basil. Write a note:", " My tomatoes are ripe.")
    layers = range(shape_of(model.config).n_layers)
    heads = HeadSet.parse("L0H0-3,L1H1,L2H2")

    def hidden(ablated):
        out = []
        with model.trace(item.ids[None]):
            for layer in layers:  # in execution order: this layer's ablation, then its block's output
                if ablated:
                    ablate(model, HeadSet(h for h in heads if h.layer == layer), positions=item.target_positions)
                h = block(model, layer).output
                out.append(nnsight.save(h[0] if isinstance(h, tuple) else h))
        return [o.reshape(-1, o.shape[-2], o.shape[-1])[0] for o in out]  # [T, d] per layer

    clean, ablated = hidden(False), hidden(True)
    start = item.target_positions.start
    for c, a in zip(clean, ablated):
        assert torch.equal(c[:start], a[:start])  # bit-identical before the first target position
    assert not torch.equal(clean[-1][start:], ablated[-1][start:])  # and the ablation does act on the targets


def test_mean_reference_is_drawn_from_discovery_prompts_only(tiny_model_dir, tmp_path):
    from studies import pcs_ranking

    run = pcs_ranking.main(["--preset", "quick", "--model", tiny_model_dir, "--data", "conventions2012",
                            "--profile-docs", "any", "--n", "6", "--results", str(tmp_path),
                            "--max-prompt-tokens", "96", "--max-target-tokens", "8", "--k-heads", "1", "2",
                            "--n-boot", "50", "--retrieval-prompts", "1", "--induction-sequences", "2",
                            "--mode", "mean", "--positions", "target"])
    (path,) = (run.root / "artifacts").glob("mean_reference.*.json")
    ids = json.loads(path.read_text())["value"]["example_ids"]
    split = json.loads((run.root / "manifest.json").read_text())["split"]
    assert ids == split["discovery_ids"] and not set(ids) & set(split["evaluation_ids"])
