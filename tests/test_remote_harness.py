"""The harness core run remotely on the loopback NDIF stack equals the same call run locally.

Each test calls a harness entry point (ablate, head_means, capture, head_effects,
head_attributions, ablate_generation) once with `remote=` pointing at ndif 0.1.2's API
service and its CPU worker (tests/ndif_service.py), and once locally on the same tiny
random Llama, then compares the results and counts the requests the call sent. The
worker cannot import `harness`, so every call also checks that the harness's trace
bodies ship by value and run with torch, math and builtins only.
"""

from __future__ import annotations

import nnsight
import pytest
import torch

from harness.intervene.ablation import Ablation, ablate, ablate_generation, capture, head_means
from harness.intervene.heads import Head, HeadSet
from harness.data.tokens import encode
from harness.intervene.pcs import head_attributions, head_effects
from harness.models.remote import LOCAL, remote_job_counter
from ndif_service import missing_requirements

MISSING = missing_requirements()
pytestmark = [pytest.mark.remote, pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]

PROMPT = "Alice writes short, dry answers. Summarise her profile:"
REFERENCE_PROMPTS = ["Bob likes long stories about boats.", "Carol answers in lists."]
TARGET = " Terse and to the point."
HEADS = HeadSet.parse("L0H2,L1H0")
# Heads of both layers, so chunks start at layer 0 and layer 1 (prefix reuse skips block 0 for the second).
SCORED_HEADS = [Head(0, 1), Head(1, 0), Head(1, 3)]


@pytest.fixture(autouse=True)
def _restore_config(restore_nnsight_config):
    """Every test here leaves nnsight's host/key config as it found it."""


@pytest.fixture(scope="module")
def item(local):
    """One scoring input: the prompt followed by its gold target."""
    return encode(local.tokenizer, PROMPT, TARGET)


def ablated_logits(model, heads, remote, prompt=PROMPT, **kwargs) -> torch.Tensor:
    """Logits of one trace with `heads` ablated by the harness (`heads=None`: clean)."""
    with model.trace(prompt, remote=remote):
        if heads is not None:
            ablate(model, heads, **kwargs)
        logits = nnsight.save(model.output.logits)
    return logits


def test_zero_ablation_trace_remote_equals_local(client, local, remote):
    with remote_job_counter() as count:
        got = ablated_logits(client, HEADS, remote)
    assert count.requests == 1
    torch.testing.assert_close(got, ablated_logits(local, HEADS, False))
    assert not torch.allclose(got, ablated_logits(local, None, False)), "ablation had no effect"


def test_per_row_head_sets_remote_equal_local_and_leave_empty_rows_clean(client, local, remote):
    ids = local.tokenizer(PROMPT, return_tensors="pt").input_ids.expand(3, -1)
    rows = [HeadSet.parse("L1H0"), None, HeadSet.parse("L0H1,L1H3")]
    got = ablated_logits(client, rows, remote, prompt=ids)
    torch.testing.assert_close(got, ablated_logits(local, rows, False, prompt=ids))
    clean = ablated_logits(local, None, False, prompt=ids[:1])
    torch.testing.assert_close(got[1:2], clean)
    for r in (0, 2):
        torch.testing.assert_close(got[r:r + 1], ablated_logits(local, rows[r], False, prompt=ids[:1]))
        assert not torch.allclose(got[r:r + 1], clean)


@pytest.mark.parametrize("mode", ["mean", "resample"])
def test_reference_built_remotely_equals_local_and_ablates_the_same(client, local, remote, backend, mode):
    def reference(model, backend):
        if mode == "mean":
            return head_means(model, REFERENCE_PROMPTS, backend=backend)
        return capture(model, REFERENCE_PROMPTS[0], backend=backend)

    with remote_job_counter() as count:
        got = reference(client, backend)
    assert count.requests == 1, f"{mode} reference over {len(REFERENCE_PROMPTS)} prompts should be one session"
    want = reference(local, LOCAL)
    assert got.n_tokens == want.n_tokens > 0
    assert got.values.keys() == want.values.keys()
    for layer in want.values:
        torch.testing.assert_close(got.values[layer], want.values[layer])
    ablated = ablated_logits(client, HEADS, remote, mode=mode, reference=got)
    torch.testing.assert_close(ablated, ablated_logits(local, HEADS, False, mode=mode, reference=want))
    assert not torch.allclose(ablated, ablated_logits(local, HEADS, False)), f"{mode} ablation equals zero ablation"


@pytest.mark.parametrize("reuse_prefix", [True, False])
def test_head_effects_remote_equal_local_in_one_request(client, local, backend, ndif_stack, item, reuse_prefix):
    before = ndif_stack.executed_jobs()
    with remote_job_counter() as count:
        clean, deltas = head_effects(client, item, SCORED_HEADS, batch_size=2, reuse_prefix=reuse_prefix,
                                     backend=backend)
    assert count.requests == 1, "clean trace + every chunk of heads should travel as one session"
    assert ndif_stack.executed_jobs() - before == 1
    want_clean, want = head_effects(local, item, SCORED_HEADS, batch_size=2, reuse_prefix=reuse_prefix)
    assert clean == pytest.approx(want_clean, rel=1e-5)
    torch.testing.assert_close(deltas, want)
    assert deltas.shape == (len(SCORED_HEADS),) and deltas.abs().sum() > 0


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_head_attributions_remote_equal_local(client, local, backend, item, mode):
    reference = head_means(local, REFERENCE_PROMPTS) if mode == "mean" else None
    with remote_job_counter() as count:
        clean, deltas = head_attributions(client, item, ablation=Ablation(mode, reference), backend=backend)
    assert count.requests == 1
    want_clean, want = head_attributions(local, item, ablation=Ablation(mode, reference))
    assert clean == pytest.approx(want_clean, rel=1e-5)
    torch.testing.assert_close(deltas, want)
    assert deltas.shape == (2, 4) and deltas.abs().sum() > 0


def generated(model, heads, remote, steps: int = 3,
              ablation: Ablation = Ablation()) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step last-token logits and greedy tokens with `heads` ablated by ablate_generation.

    Nothing runs after an open step loop in its invoke (NDIF's rule), so the step logits and
    the tokens are read in invokes of their own.
    """
    with model.generate(max_new_tokens=steps, do_sample=False, remote=remote) as tracer:
        with tracer.invoke(PROMPT):
            if heads is not None:
                ablate_generation(model, tracer, heads, ablation)
        with tracer.invoke():
            step_logits = nnsight.save(list())
            for _ in tracer.all():
                step_logits.append(model.lm_head.output[0, -1])
        with tracer.invoke():
            tokens = nnsight.save(model.generator.output)
    return torch.stack(step_logits), tokens


@pytest.mark.filterwarnings("ignore:.*was never reached")  # the open step loops end this way
@pytest.mark.parametrize("positions", ["all", "generated"])
def test_ablate_generation_remote_equals_local(client, local, remote, positions):
    with remote_job_counter() as count:
        got_logits, got_tokens = generated(client, HEADS, remote, ablation=Ablation(positions=positions))
    assert count.requests == 1
    want_logits, want_tokens = generated(local, HEADS, False, ablation=Ablation(positions=positions))
    torch.testing.assert_close(got_logits, want_logits)
    assert torch.equal(got_tokens, want_tokens)
    clean_logits, _ = generated(local, None, False)
    assert got_logits.shape == clean_logits.shape == (3, len(local.tokenizer))
    # generated positions leave the prompt pass (step 0) clean; every ablated step differs from the clean run.
    if positions == "generated":
        torch.testing.assert_close(got_logits[0], clean_logits[0])
    for step in range(1 if positions == "generated" else 0, 3):
        assert not torch.allclose(got_logits[step], clean_logits[step]), f"step {step} was not ablated"


def test_ablation_study_step_remote_equals_local_in_one_request(client, local, backend, item):
    """The ablation study's unit of work: many multi-layer head sets scored on one input, one session."""
    from harness.intervene.pcs import ablated_losses

    sets = [HeadSet.parse("L0H1,L1H2"), HeadSet.parse("L1H0-3"), HeadSet(), HeadSet.parse("L0H0-3")]
    with remote_job_counter() as count:
        clean, losses = ablated_losses(client, item, sets, batch_size=3, backend=backend)
    assert count.requests == 1
    want_clean, want = ablated_losses(local, item, sets, batch_size=3)
    assert clean == pytest.approx(want_clean, rel=1e-5)
    torch.testing.assert_close(losses, want)
    assert losses[2] == pytest.approx(clean, rel=1e-5)  # the empty set is the clean model


def test_dps_decoding_remote_equals_local(client, local, backend):
    """DPS: both branches in one batched forward per step, the whole loop one session remotely."""
    from harness.generation.decoding import Contrast, decode

    kwargs = dict(heads=HEADS, contrast=Contrast(gamma=2.0, alpha=0.0), max_new_tokens=4, record_delta=3)
    with remote_job_counter() as count:
        got = decode(client, [PROMPT, REFERENCE_PROMPTS[0]], backend=backend, **kwargs)
    assert count.requests == 1
    want = decode(local, [PROMPT, REFERENCE_PROMPTS[0]], **kwargs)
    assert got.token_ids == want.token_ids
    torch.testing.assert_close(got.delta_top["promoted"], want.delta_top["promoted"])
