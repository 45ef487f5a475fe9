"""Remote execution: the unmodified nnsight client against the real NDIF API service on loopback.

The integration tests (marked remote + slow) start redis-server, ndif 0.1.2's API service
(uvicorn), a moto object store and a CPU worker standing in for NDIF's model actor
(tests/ndif_service.py), and check that each remote trace equals the same trace run
locally on a tiny random Llama. The unmarked tests pin harness.models.remote's switch and
error handling without any service.
"""

from __future__ import annotations

import threading
import time

import httpx
import nnsight
import pytest
import torch
import websocket
from cloudpickle.cloudpickle import _PICKLE_BY_VALUE_MODULES
from nnsight.intervention.backends.remote import RemoteError
from nnsight.schema.config import CONFIG

from harness.models.remote import (
    LOCAL,
    Backend,
    JobCount,
    RemoteSetupError,
    RemoteUnavailableError,
    check_deployed,
    choose_backend,
    is_transient,
    register_harness,
    remote_job_counter,
    require_api_key,
    resolve_remote,
    run_with_retry,
)
from ndif_service import (
    TEST_API_KEY,
    client_model,
    free_port,
    missing_requirements,
)

PROMPT = "Alice writes short, dry answers. Summarise her profile:"
PROMPTS = [PROMPT, "Bob likes long stories about boats."]
HEAD_DIM = 16  # hidden 64 / 4 heads
N_HEADS = 4
MISSING = missing_requirements()


def integration(test):
    """Mark a test as needing the loopback NDIF stack: remote + slow, skipped when not installed."""
    for mark in (pytest.mark.remote, pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))):
        test = mark(test)
    return test


@pytest.fixture(autouse=True)
def _restore_config(restore_nnsight_config):
    """Every test here leaves nnsight's host/key config as it found it."""


@pytest.fixture
def remote(ndif_stack, monkeypatch):
    """`remote=True` resolved the way a study does it: NDIF_HOST + NDIF_API_KEY from the environment."""
    monkeypatch.setenv("NDIF_HOST", ndif_stack.api_url)
    monkeypatch.setenv("NDIF_API_KEY", TEST_API_KEY)
    require_api_key(True)
    return resolve_remote(True)


# -- trace bodies, each run once locally and once remotely -----------------------------


def ablated_logits(model, remote, head: int | None = 0):
    """Logits with one head of layer 1 zeroed at o_proj's input (None: no ablation)."""
    with model.trace(PROMPT, remote=remote):
        if head is not None:
            model.model.layers[1].self_attn.o_proj.input[:, :, head * HEAD_DIM:(head + 1) * HEAD_DIM] = 0
        logits = nnsight.save(model.output.logits)
    return logits


def head_sweep(model, remote):
    """Last-token logits for every (prompt, head) ablation, batched into one session."""
    with model.session(remote=remote):
        rows = nnsight.save(list())
        for prompt in PROMPTS:
            for head in range(N_HEADS):
                with model.trace(prompt):
                    model.model.layers[1].self_attn.o_proj.input[:, :, head * HEAD_DIM:(head + 1) * HEAD_DIM] = 0
                    rows.append(model.output.logits[0, -1])
    return torch.stack(rows)


def layer0_gradient(model, remote, mark: bool = True):
    """Gradient of the last token's log-partition w.r.t. layer 0's output (weights frozen)."""
    with model.trace(PROMPT, remote=remote):
        hidden = model.model.layers[0].output
        if mark:
            hidden.requires_grad_(True)
        loss = model.output.logits[0, -1].logsumexp(-1)
        with loss.backward():
            grad = nnsight.save(hidden.grad)
    return grad


def ablated_generation(model, remote, steps: int = 3):
    """Greedy generation with head 0 ablated at every step; sequence read in a second invoke."""
    with model.generate(max_new_tokens=steps, do_sample=False) as tracer:
        with tracer.invoke(PROMPT):
            step_logits = nnsight.save(list())
            for _ in tracer.all():
                model.model.layers[1].self_attn.o_proj.input[:, :, 0:HEAD_DIM] = 0
                step_logits.append(model.lm_head.output[0, -1])
        with tracer.invoke():
            tokens = nnsight.save(model.generator.output)
    return torch.stack(step_logits), tokens


# -- integration: remote equals local --------------------------------------------------


@integration
def test_head_ablation_trace_remote_equals_local(client, local, remote, ndif_stack, tiny_llama_dir):
    assert check_deployed(str(tiny_llama_dir), remote)["application_state"] == "RUNNING"
    with remote_job_counter() as count:
        remote_logits = ablated_logits(client, remote)
    assert count == JobCount(requests=1)
    torch.testing.assert_close(remote_logits, ablated_logits(local, False))
    assert not torch.allclose(remote_logits, ablated_logits(local, False, head=None)), "ablation had no effect"


@integration
def test_session_of_heads_times_examples_is_one_request(client, local, remote, ndif_stack):
    before = ndif_stack.executed_jobs()
    with remote_job_counter() as count:
        remote_rows = head_sweep(client, remote)
    assert count.requests == 1, f"{len(PROMPTS) * N_HEADS} traces should travel as one request"
    assert ndif_stack.executed_jobs() - before == 1
    torch.testing.assert_close(remote_rows, head_sweep(local, False))
    assert remote_rows.shape[0] == len(PROMPTS) * N_HEADS


@integration
def test_gradient_from_activation_marked_requires_grad_matches_local(client, local, remote):
    remote_grad = layer0_gradient(client, remote)
    torch.testing.assert_close(remote_grad, layer0_gradient(local, False))
    assert remote_grad.abs().sum() > 0


@integration
def test_gradient_without_requires_grad_fails_on_frozen_server_weights(client, remote):
    with pytest.raises(RemoteError, match="does not require grad"):
        layer0_gradient(client, remote, mark=False)


@integration
@pytest.mark.filterwarnings("ignore:.*was never reached")  # the open tracer.all() loop ends this way
def test_generate_with_all_steps_and_second_invoke_matches_local(client, local, remote):
    remote_steps, remote_tokens = ablated_generation(client, remote)
    local_steps, local_tokens = ablated_generation(local, False)
    assert remote_steps.shape[0] == 3
    torch.testing.assert_close(remote_steps, local_steps)
    assert torch.equal(remote_tokens, local_tokens)


@integration
def test_non_blocking_submission_polls_result_from_object_store(client, local, remote):
    with client.trace(PROMPT, remote=remote, blocking=False) as tracer:
        logits = nnsight.save(client.output.logits)
    backend = tracer.backend
    assert backend.job_id, "submission returned no job id"
    result, deadline = None, time.monotonic() + 60
    while result is None and time.monotonic() < deadline:
        result = backend()  # polls GET /response/{id}; downloads the staged result when COMPLETED
        time.sleep(0.2)
    assert result is not None, "non-blocking job did not complete within 60 s"
    torch.testing.assert_close(result["logits"], ablated_logits(local, False, head=None))


@integration
def test_harness_code_runs_remotely_only_when_registered(client, remote, ndif_stack):
    def body(model):
        with model.trace(PROMPT, remote=remote):
            counted = nnsight.save(JobCount(requests=model.output.logits.shape[1]))
        return counted

    nnsight.ndif.pull_env()  # its one-time auto-registration must not re-add harness below
    _PICKLE_BY_VALUE_MODULES.discard("harness")  # the worker hides `harness`, as NDIF lacks it
    # The worker fails to unpickle the request: the harness went by reference, and the worker cannot import it.
    hidden = r"ModuleNotFoundError: No module named 'harness' \(not installed on this NDIF worker\)"
    with pytest.raises(RemoteError, match=hidden):
        body(client)
    register_harness()
    assert body(client).requests > 0


# -- integration: failures --------------------------------------------------------------


@integration
def test_missing_api_key_fails_before_any_request(ndif_stack, monkeypatch):
    monkeypatch.setenv("NDIF_HOST", ndif_stack.api_url)
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    with remote_job_counter() as count, pytest.raises(RemoteSetupError, match="NDIF_API_KEY"):
        require_api_key(True)
    assert count.total == 0


@integration
def test_unreachable_host_names_job_and_host_after_retries(client, monkeypatch):
    host = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("NDIF_API_KEY", TEST_API_KEY)
    remote = resolve_remote(host)
    with pytest.raises(RemoteUnavailableError) as error:
        run_with_retry(lambda: ablated_logits(client, remote), attempts=2, backoff=0.01, what="ablation batch 3")
    message = str(error.value)
    assert "ablation batch 3" in message and host in message and "2 attempts" in message
    assert TEST_API_KEY not in message
    with pytest.raises(RemoteUnavailableError, match=host):
        check_deployed("any/model", host)


@integration
def test_server_side_error_is_remote_error_and_not_retried(client, remote, ndif_stack):
    def out_of_range():
        with client.trace(PROMPT, remote=remote):
            client.model.layers[1].self_attn.o_proj.input[:, :, 999] = 0
            logits = nnsight.save(client.output.logits)
        return logits

    before = ndif_stack.executed_jobs()
    with pytest.raises(RemoteError, match=r"(?s)head 999 job.*IndexError"):
        run_with_retry(out_of_range, attempts=3, backoff=0.01, what="head 999 job")
    assert ndif_stack.executed_jobs() - before == 1


@integration
def test_backend_unavailable_503_is_retried_until_it_returns(client, local, remote, ndif_stack):
    redis = ndif_stack._redis()
    redis.delete("ray:connected")  # the API now answers 503 "compute backend is reconnecting"
    threading.Timer(1.0, redis.set, args=("ray:connected", "1")).start()
    with remote_job_counter() as count:
        logits = run_with_retry(lambda: ablated_logits(client, remote), attempts=4, backoff=0.5, what="retry job")
    assert count.requests >= 2
    torch.testing.assert_close(logits, ablated_logits(local, False))


# -- unit: the switch and the error classification (no service) -------------------------


@pytest.mark.parametrize("value", [False, None, "false", "False", "", "off"])
def test_resolve_remote_false_values_run_locally(value):
    assert resolve_remote(value) is False


def test_resolve_remote_local_is_nnsight_serialization_check():
    assert resolve_remote("local") == "local"
    assert "harness" in _PICKLE_BY_VALUE_MODULES


def test_resolve_remote_true_uses_ndif_host_env(monkeypatch):
    monkeypatch.setenv("NDIF_HOST", "http://127.0.0.1:5999")
    assert resolve_remote(True) == resolve_remote("ndif") == "http://127.0.0.1:5999"
    assert CONFIG.API.HOST == "http://127.0.0.1:5999"


def test_resolved_remote_resolves_to_the_same_host(monkeypatch):
    monkeypatch.setenv("NDIF_HOST", "http://127.0.0.1:5999")
    resolved = resolve_remote(True)
    monkeypatch.delenv("NDIF_HOST")
    assert resolve_remote(resolved) == resolved


def test_resolve_remote_url_sets_host(monkeypatch):
    monkeypatch.delenv("NDIF_HOST", raising=False)
    assert resolve_remote("https://10.0.0.7:8001/") == "https://10.0.0.7:8001"
    assert CONFIG.API.HOST == "https://10.0.0.7:8001"


@pytest.mark.parametrize("url", ["http://10.0.0.7:8001", "file:///tmp/ndif", "ftp://api.ndif.us",
                                 "https://me:secret@api.ndif.us"])
def test_resolve_remote_refuses_an_unsafe_host_url_from_the_option_or_ndif_host(monkeypatch, url):
    host = CONFIG.API.HOST
    monkeypatch.delenv("NDIF_HOST", raising=False)
    with pytest.raises(RemoteSetupError, match="^remote ") as err:
        resolve_remote(url)
    monkeypatch.setenv("NDIF_HOST", url)
    with pytest.raises(RemoteSetupError, match=r"^\$NDIF_HOST "):
        resolve_remote(True)
    assert CONFIG.API.HOST == host and "secret" not in str(err.value)  # nothing was set, no password repeated


@pytest.mark.parametrize("value, kind, remote, runs_here", [
    ("false", "local", False, True), (False, "local", False, True), ("local", "check", "local", True),
    ("http://127.0.0.1:5999", "ndif", "http://127.0.0.1:5999", False)])
def test_the_backend_a_remote_value_names_carries_nnsights_remote_value(value, kind, remote, runs_here):
    backend = choose_backend(value)
    assert (backend.kind, backend.remote, backend.runs_here) == (kind, remote, runs_here)
    assert resolve_remote(value) == backend.remote and (backend is LOCAL) == (kind == "local")


def test_an_ndif_backend_needs_its_host_and_only_it_has_one():
    for kind, host in (("ndif", None), ("local", "http://127.0.0.1:5999"), ("somewhere", None)):
        with pytest.raises(RemoteSetupError):
            Backend(kind, host)


def test_only_an_ndif_backend_retries_a_unit_of_work():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("refused")
        return "done"

    with pytest.raises(httpx.ConnectError):
        Backend("check").call(flaky, what="unit")
    assert Backend("ndif", "http://127.0.0.1:9").call(flaky, what="unit") == "done" and len(calls) == 2


def test_a_study_chooses_its_backend_once_and_every_trace_gets_that_one(tiny_model_dir, tmp_path, monkeypatch):
    """``start`` chooses the backend from ``--remote`` once; the setup carries it to every function that opens a
    trace (here the signal study's framing generations and clean losses, through nnsight's serialization check)."""
    from harness.study import experiment, signal as signal_module
    from studies import signal

    chosen, seen = [], []

    def choose_once(value):
        chosen.append(choose_backend(value))
        return chosen[-1]

    def recording(fn):
        def wrapper(*args, backend, **kwargs):
            seen.append(backend)
            return fn(*args, backend=backend, **kwargs)
        return wrapper

    monkeypatch.setattr(experiment, "choose_backend", choose_once)
    monkeypatch.setattr(experiment, "generate", recording(experiment.generate))
    monkeypatch.setattr(signal_module, "token_nlls", recording(signal_module.token_nlls))
    signal.main(["--preset", "quick", "--model", tiny_model_dir, "--data", "conventions2012", "--profile-docs", "any",
                 "--n", "6", "--results", str(tmp_path), "--max-prompt-tokens", "96", "--max-target-tokens", "8",
                 "--n-boot", "50", "--remote", "local"])
    assert len(chosen) == 1 and chosen[0].kind == "check"
    assert len(seen) > 2 and all(backend is chosen[0] for backend in seen)


def test_resolve_remote_rejects_unknown_value():
    with pytest.raises(RemoteSetupError, match="banana"):
        resolve_remote("banana")


def test_require_api_key_ignores_local_runs(monkeypatch):
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    require_api_key(False)
    require_api_key("local")
    with pytest.raises(RemoteSetupError, match="NDIF_API_KEY"):
        require_api_key("http://127.0.0.1:1")


def test_failed_intervention_is_not_transient_but_5xx_and_dropped_socket_are():
    request = httpx.Request("POST", "http://h/request")
    unavailable = httpx.HTTPStatusError("503", request=request, response=httpx.Response(503, request=request))
    forbidden = httpx.HTTPStatusError("403", request=request, response=httpx.Response(403, request=request))
    wrapped_503, wrapped_403 = RemoteError("Failed to send request"), RemoteError("Failed to send request")
    wrapped_503.__cause__, wrapped_403.__cause__ = unavailable, forbidden
    assert not is_transient(RemoteError("IndexError: index 999 is out of bounds"))
    assert is_transient(wrapped_503) and not is_transient(wrapped_403)
    assert is_transient(ConnectionRefusedError()) and is_transient(websocket.WebSocketConnectionClosedException())
    assert not is_transient(ValueError("bad input"))


def test_run_with_retry_backs_off_then_succeeds(monkeypatch):
    sleeps, calls = [], []
    monkeypatch.setattr(time, "sleep", sleeps.append)

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset by peer")
        return "done"

    assert run_with_retry(flaky, attempts=3, backoff=2.0) == "done"
    assert sleeps == [2.0, 4.0]
