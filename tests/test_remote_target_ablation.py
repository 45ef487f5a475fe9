"""Target-position scoring and prompt-once DPS on the loopback NDIF service equal the same calls run locally.

The prompt's KV cache is made in one trace of a session and handed to the later traces of the same session, on
the server: one request per example and condition.
"""

from __future__ import annotations

import pytest
import torch

from harness.intervene.ablation import Ablation, capture
from harness.intervene.heads import HeadSet
from harness.intervene.pcs import ablated_losses, head_effects
from harness.data.tokens import encode
from harness.models.remote import remote_job_counter
from ndif_service import missing_requirements

MISSING = missing_requirements()
pytestmark = [pytest.mark.remote, pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]

PROMPT = "Alice writes short, dry answers. Summarise her profile:"
TARGET = " Terse and to the point."
SETS = [HeadSet.parse("L0H1,L1H2"), HeadSet.parse("L1H0-3"), HeadSet(), HeadSet.parse("L0H0-3")]


@pytest.fixture(autouse=True)
def _restore_config(restore_nnsight_config):
    """Every test here leaves nnsight's host/key config as it found it."""


@pytest.fixture(scope="module")
def item(local):
    return encode(local.tokenizer, PROMPT, TARGET)


@pytest.mark.parametrize("mode", ["zero", "resample"])
def test_target_position_losses_remote_equal_local_in_one_request(client, local, backend, ndif_stack, item, mode):
    reference = capture(local, "Bob likes long stories about boats and the sea.") if mode == "resample" else None
    before = ndif_stack.executed_jobs()
    with remote_job_counter() as count:
        clean, losses = ablated_losses(client, item, SETS, Ablation(mode, reference, "target"),
                                       batch_size=3, backend=backend)
    assert count.requests == 1, "prompt trace, clean trace and every batch should travel as one session"
    assert ndif_stack.executed_jobs() - before == 1
    want_clean, want = ablated_losses(local, item, SETS, Ablation(mode, reference, "target"),
                                      batch_size=3, reuse_prompt=False)
    assert clean == pytest.approx(want_clean, rel=1e-5)
    torch.testing.assert_close(losses, want)
    assert losses[2] == pytest.approx(clean, rel=1e-5) and (losses - clean).abs().max() > 0


def test_per_token_losses_remote_equal_local_in_one_request(client, local, backend, item):
    """The marker outcome's per-token NLLs travel back from the server in the same single request."""
    with remote_job_counter() as count:
        clean, losses = ablated_losses(client, item, SETS, Ablation(positions="target"), batch_size=3, per_token=True,
                                       backend=backend)
    assert count.requests == 1
    want_clean, want = ablated_losses(local, item, SETS, Ablation(positions="target"), batch_size=3, per_token=True)
    assert losses.shape == (len(SETS), item.n_target)
    torch.testing.assert_close(clean, want_clean)
    torch.testing.assert_close(losses, want)


def test_target_position_head_effects_remote_equal_local(client, local, backend, item):
    with remote_job_counter() as count:
        clean, deltas = head_effects(client, item, ablation=Ablation(positions="target"), backend=backend)
    assert count.requests == 1
    want_clean, want = head_effects(local, item, ablation=Ablation(positions="target"), reuse_prompt=False)
    assert clean == pytest.approx(want_clean, rel=1e-5)
    torch.testing.assert_close(deltas, want)


def test_prompt_once_dps_remote_equals_local_in_one_request(client, local, backend):
    from harness.generation.decoding import Contrast, decode

    kwargs = dict(heads=HeadSet.parse("L0H2,L1H0"), contrast=Contrast(gamma=2.0, alpha=0.0), max_new_tokens=4,
                  record_delta=3, ablation=Ablation(positions="target"))
    prompts = [PROMPT, "Bob likes long stories about boats."]
    with remote_job_counter() as count:
        got = decode(client, prompts, backend=backend, **kwargs)
    assert count.requests == 1
    want = decode(local, prompts, fused=False, **kwargs)
    assert got.token_ids == want.token_ids
    torch.testing.assert_close(got.delta_top["promoted"], want.delta_top["promoted"])
