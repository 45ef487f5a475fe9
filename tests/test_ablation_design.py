"""The ablation design: one ``Ablation(mode, reference, positions)`` value with one vocabulary of positions, which
PCS, the ablation study's measurement and DPS accept alike (each refusing by name the positions it cannot act on);
target-position ablation leaves the prompt untouched; mean references come from discovery prompts only."""

import dataclasses
import json
from types import SimpleNamespace
from typing import Any

import nnsight
import pytest
import torch

from harness.data import Prompt
from harness.data.tokens import SCORED_POSITIONS, TokenizedInput, encode
from harness.generation.decoding import DECODING_POSITIONS, decode
from harness.generation.methods import Generation, comparison_generations, generate, generate_ablated
from harness.generation.steering import StyleVectors
from harness.intervene.ablation import GENERATION_POSITIONS, POSITIONS, Ablation, ablate, ablate_generation, head_means
from harness.intervene.heads import HeadSet
from harness.intervene.pcs import ablated_losses, head_attributions, head_effects
from harness.models.arch import block, shape_of
from harness.models.remote import LOCAL
from harness.runs.checkpoints import Checkpoint
from harness.study.measure import NamedSet, ablation_losses

HEADS = HeadSet.parse("L0H1,L1H2")
ITEM = TokenizedInput(torch.arange(2, 14), 4, (1, 5))  # no model needed: designs are refused before any work


def _measurement_setup(ablation: Ablation, model=None, item=ITEM) -> SimpleNamespace:
    """The parts of a study's ``Setup`` that ``measure.ablation_losses`` reads: one evaluation example."""
    example = SimpleNamespace(example_id="e1", user_id="u1", planted=None)
    return SimpleNamespace(model=model, ablation=ablation, backend=LOCAL, split=SimpleNamespace(evaluation=[example]),
                           tokenized=lambda example_id, condition: item,
                           call=lambda fn, *args, what, **kwargs: fn(*args, **kwargs))


def _refusal(consumer: str, positions: str, supported: tuple[str, ...]) -> Any:
    """A ``pytest.raises`` for ``consumer`` refusing ``positions``, naming both and what it supports."""
    return pytest.raises(ValueError, match=f"{consumer} cannot ablate at positions {positions!r} .*: it supports "
                                           f"{', '.join(supported)}$")


def test_one_vocabulary_each_consumer_supports_a_named_part_of():
    assert set(SCORED_POSITIONS) | set(DECODING_POSITIONS) | set(GENERATION_POSITIONS) == set(POSITIONS)
    assert SCORED_POSITIONS == ("all", "target", "profile")
    assert DECODING_POSITIONS == ("all", "target", "generated")
    assert GENERATION_POSITIONS == ("all", "generated")


@pytest.mark.parametrize("field, value", [("mode", "noise"), ("positions", "prompt")])
def test_an_ablation_design_with_an_unknown_mode_or_position_is_refused_naming_it(field, value):
    with pytest.raises(ValueError, match=f"unknown ablation {field} {value!r}"):
        Ablation(**{field: value})


def test_pcs_refuses_generated_positions_before_any_work():
    design = Ablation(positions="generated")
    for score, kw in ((ablated_losses, {"sets": [HEADS]}), (head_effects, {}), (head_attributions, {})):
        with _refusal(score.__name__, "generated", SCORED_POSITIONS):
            score(None, ITEM, ablation=design, **kw)


def test_measurement_refuses_generated_positions_before_any_work():
    with _refusal("ablation_losses", "generated", SCORED_POSITIONS):
        ablation_losses(_measurement_setup(Ablation(positions="generated")), None, [], ["own"])


def test_dps_refuses_profile_positions_before_any_work():
    design = Ablation(positions="profile")
    with _refusal("decode", "profile", DECODING_POSITIONS):
        decode(None, ["a prompt"], heads=HEADS, ablation=design)
    with _refusal("method dps", "profile", DECODING_POSITIONS):
        Generation("dps", heads=HEADS, ablation=design)
    for target in ("target", "profile"):
        with _refusal("ablate_generation", target, GENERATION_POSITIONS):
            ablate_generation(None, None, HEADS, Ablation(positions=target))
        with _refusal("generate_ablated", target, GENERATION_POSITIONS):
            generate_ablated(None, "a prompt", [HEADS], max_new_tokens=2, ablation=Ablation(positions=target))


def test_the_dps_study_gives_every_dps_row_the_design_and_keys_rows_as_recorded():
    design = Ablation("mean", positions="target")
    specs = comparison_generations({"pcs": HEADS, "retrieval": HEADS}, "pcs", gamma=1.0, gammas=[0.5],
                                   k_profile=4, style=StyleVectors(0, {}), alpha=1.0, ablation=design)
    dps = [s for s in specs if s.kind == "dps"]
    assert len(dps) == 4 and all(s.ablation is design for s in dps)
    assert all(s.ablation == Ablation() for s in specs if s.kind != "dps")
    # the checkpoint key's form of the recorded DPS rows: "...|<mode>@<positions>"
    assert dps[0].key.endswith("|k_profile=4||alpha=1|mean@target")


@pytest.mark.parametrize("positions", ["all", "target"])
def test_one_design_reaches_pcs_measurement_and_dps_unchanged(tiny_models, tokenizer, monkeypatch, tmp_path,
                                                              positions):
    """The same ``Ablation`` object, handed to PCS, to the ablation study's measurement (as ``setup.ablation``) and to
    the DPS generation method, is what every ablation in their forwards applies: its mode and reference."""
    from harness.generation import decoding
    from harness.intervene import ablation as ablation_module, pcs

    model = tiny_models["llama"]
    design = Ablation("mean", head_means(model, ["A reference text about the weather."]), positions)
    seen = []

    def recording(model, heads, *, mode="zero", reference=None, at=None):
        seen.append((mode, reference))
        return ablation_module.ablate(model, heads, mode=mode, reference=reference, at=at)

    monkeypatch.setattr(pcs, "ablate", recording)
    monkeypatch.setattr(decoding, "ablate", recording)
    item = encode(tokenizer, "The user writes about tomatoes and basil. Write a note:", " My tomatoes are ripe.")
    sets = [HEADS, HeadSet.parse("L1H0")]

    _, losses = ablated_losses(model, item, sets, design)
    _, effects = head_effects(model, item, list(HEADS), design)
    run = SimpleNamespace(checkpoint=lambda name: Checkpoint(tmp_path / f"{name}.jsonl"))
    frame = ablation_losses(_measurement_setup(design, model, item), run,
                            [NamedSet(str(s), "x", len(s), s) for s in sets], ["own"])
    torch.testing.assert_close(torch.tensor(frame.loss_own.tolist()), losses, atol=1e-6, rtol=0)
    prompt = Prompt("The user writes about tomatoes. Write:", "Write:", "gold", 1, "e1", "u1")
    dps = dataclasses.replace(Generation.dps(HEADS), ablation=design)
    assert generate(model, [prompt], dps, max_new_tokens=2) == decode(
        model, [prompt.with_profile], heads=HEADS, ablation=design, max_new_tokens=2).texts
    assert seen and all(mode == "mean" and reference is design.reference for mode, reference in seen)
    assert effects.shape == (len(HEADS),)


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
                    ablate(model, HeadSet(h for h in heads if h.layer == layer), at=item.target_positions)
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
