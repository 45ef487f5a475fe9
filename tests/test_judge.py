"""Tests for harness.generation.judge: verdict parsing, both-order combination, statistics, and the HTTP backend."""

import json
import math
import socket

import pytest
from openai_stub_server import OpenAIStubServer

from harness.generation.judge import (
    CallableBackend,
    JudgeBackendError,
    JudgeItem,
    OpenAIChatBackend,
    build_judge_prompt,
    combine_orders,
    judge_pairs,
    parse_verdict,
)

MARKER = "zebra"
KEY = "sk-test-secret-123"


def marker_judge(prompt: str) -> str:
    """A consistent judge: prefers the candidate that contains MARKER, wherever it is shown."""
    a_part = prompt.split("### Candidate A")[1].split("### Candidate B")[0]
    b_part = prompt.split("### Candidate B")[1].split("Answer with exactly one word")[0]
    if (MARKER in a_part) == (MARKER in b_part):
        return "tie"
    return "Candidate A" if MARKER in a_part else "**B**"


def make_items(n_a: int, n_b: int, n_neither: int) -> list[JudgeItem]:
    """Items where method A's output has the marker n_a times, method B's n_b times, neither n_neither."""
    pairs = [(f"a {MARKER}", "b plain")] * n_a + [("a plain", f"b {MARKER}")] * n_b + [("a", "b")] * n_neither
    return [
        JudgeItem(
            profile=["I love hiking.", "Rainy days again."],
            input=f"write post {i}",
            output_a=a,
            output_b=b,
            example_id=f"ex{i}",
            user_id=f"u{i % 3}",
        )
        for i, (a, b) in enumerate(pairs)
    ]


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval by its closed form (independent of scipy)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.fixture(autouse=True)
def no_proxy_for_loopback(monkeypatch):
    """Reach the loopback stub directly even where an HTTP proxy is configured."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


@pytest.fixture
def stub():
    with OpenAIStubServer(marker_judge, api_key=KEY) as server:
        yield server


# ---------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "response, verdict",
    [
        ("A", "A"),
        ("B.", "B"),
        ("**B**", "B"),
        (" \n Tie\n", "tie"),
        ("A tie.", "tie"),
        ("Answer: B", "B"),
        ("The answer is a tie", "tie"),
        ("Candidate A is closer to the user.", "A"),
        ("a better match is Candidate B", "B"),
        ("Candidate A is fluent, but my answer is: B", "B"),
        ("Both are equally plausible.", "tie"),
        ("A or B", "invalid"),
        ("hmm", "invalid"),
        ("", "invalid"),
        ("Bob", "invalid"),
    ],
)
def test_parse_verdict_reads_free_text_answers(response, verdict):
    assert parse_verdict(response) == verdict


def test_combine_orders_wins_only_when_both_orders_agree():
    assert combine_orders("A", "A") == "A"
    assert combine_orders("B", "B") == "B"
    assert combine_orders("A", "B") == "tie"
    assert combine_orders("A", "tie") == "tie"
    assert combine_orders("A", "invalid") == "invalid"


def test_build_judge_prompt_truncates_the_profile():
    prompt = build_judge_prompt(["x" * 50, "y" * 50], "in", "out a", "out b", max_profile_chars=30)
    assert "x" * 28 in prompt and "yyy" not in prompt and "[...]" in prompt


# ------------------------------------------------------------------------------------- aggregation


def test_position_biased_judge_yields_ties_not_a_win():
    always_first = CallableBackend(lambda prompts: ["A"] * len(prompts), name="always-A")
    result = judge_pairs(always_first, make_items(4, 1, 1), method_a="dps", method_b="rag")
    assert (result.wins, result.losses, result.ties, result.invalid) == (0, 0, 6, 0)
    assert result.position_bias_rate == 1.0
    assert result.order_agreement == 0.0
    assert math.isnan(result.win_rate)
    assert result.sign_test_p == 1.0
    summary = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert summary["win_rate"] is None and summary["position_bias_rate"] == 1.0


def test_win_rate_ci_and_sign_test_match_reference_values():
    result = judge_pairs(
        CallableBackend(lambda ps: [marker_judge(p) for p in ps]), make_items(7, 3, 2), method_a="dps", method_b="rag"
    )
    assert (result.wins, result.losses, result.ties) == (7, 3, 2)
    assert result.win_rate == pytest.approx(0.7)
    assert result.win_rate_ci == pytest.approx(wilson(7, 10))
    # Exact two-sided sign test: 2 * P(X >= 7), X ~ Bin(10, 1/2) = 2 * 176 / 1024.
    assert result.sign_test_p == pytest.approx(352 / 1024)
    assert result.position_bias_rate == 0.0 and result.order_agreement == 1.0


def test_judge_asks_both_orders_for_every_pair():
    seen = []

    def record(prompts):
        seen.extend(prompts)
        return ["tie"] * len(prompts)

    judge_pairs(CallableBackend(record), make_items(1, 0, 0), method_a="m1", method_b="m2")
    first, second = seen
    assert first.index(f"a {MARKER}") < first.index("b plain")
    assert second.index("b plain") < second.index(f"a {MARKER}")


def test_unreadable_answers_are_counted_as_invalid():
    answers = iter(["A", "no idea", "A", "B"])
    backend = CallableBackend(lambda ps: [next(answers) for _ in ps])
    result = judge_pairs(backend, make_items(2, 0, 0), method_a="m1", method_b="m2")
    assert [v.verdict for v in result.items] == ["invalid", "A"]
    assert (result.invalid, result.wins) == (1, 1)


def test_item_missing_a_field_is_named():
    with pytest.raises(ValueError, match="judge item 0 lacks field"):
        judge_pairs(CallableBackend(lambda ps: ps), [{"profile": "p", "input": "i"}], method_a="a", method_b="b")


def test_callable_backend_rejects_wrong_answer_count():
    with pytest.raises(JudgeBackendError, match="returned 1 answers for 2 prompts"):
        CallableBackend(lambda ps: ["A"]).complete(["p1", "p2"])


# ----------------------------------------------------------------------------------- HTTP backend


def test_openai_backend_judges_through_a_chat_completions_server(stub, api_key):
    backend = OpenAIChatBackend("judge-model", base_url=stub.base_url, backoff_s=0.01)
    result = judge_pairs(backend, make_items(3, 1, 1), method_a="dps", method_b="rag")
    assert (result.wins, result.losses, result.ties) == (3, 1, 1)
    assert result.judge == "openai:judge-model"
    assert len(stub.requests) == 10 and all(r["authorized"] for r in stub.requests)
    body = stub.requests[0]["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0.0
    assert "I love hiking." in body["messages"][0]["content"]


def test_openai_backend_takes_base_url_from_environment(stub, api_key, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    assert OpenAIChatBackend("m").complete([build_judge_prompt("p", "i", MARKER, "x")]) == ["Candidate A"]


def test_openai_backend_retries_transient_503():
    with OpenAIStubServer(marker_judge, api_key=KEY, fail_first=2, fail_status=503) as server:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("OPENAI_API_KEY", KEY)
            backend = OpenAIChatBackend("m", base_url=server.base_url, backoff_s=0.01, max_retries=3)
            assert backend.complete([build_judge_prompt("p", "i", "x", MARKER)]) == ["**B**"]
        assert len(server.requests) == 3


def test_openai_backend_gives_up_after_retries_naming_the_endpoint(api_key):
    with OpenAIStubServer(marker_judge, api_key=KEY, fail_first=99, fail_status=500) as server:
        backend = OpenAIChatBackend("m", base_url=server.base_url, backoff_s=0.01, max_retries=2)
        with pytest.raises(JudgeBackendError, match=r"/v1/chat/completions failed after 3 attempts.*HTTP 500"):
            backend.complete(["p"])
        assert len(server.requests) == 3


def test_openai_backend_missing_key_fails_before_any_request(stub, monkeypatch):
    monkeypatch.delenv("JUDGE_KEY", raising=False)
    with pytest.raises(JudgeBackendError, match="environment variable JUDGE_KEY is not set"):
        OpenAIChatBackend("m", base_url=stub.base_url, api_key_env="JUDGE_KEY")
    assert stub.requests == []


def test_openai_backend_rejected_key_is_not_retried_nor_echoed(stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-456")
    backend = OpenAIChatBackend("m", base_url=stub.base_url, backoff_s=0.01)
    with pytest.raises(JudgeBackendError, match="refused the request: HTTP 401") as info:
        backend.complete(["p"])
    assert "sk-wrong-key-456" not in str(info.value) and "sk-wrong-key-456" not in repr(backend)
    assert len(stub.requests) == 1


def test_openai_backend_unreachable_endpoint_gives_clear_error(api_key):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    backend = OpenAIChatBackend("m", base_url=url, backoff_s=0.01, max_retries=1, timeout=5)
    with pytest.raises(JudgeBackendError, match=rf"127\.0\.0\.1:{port}/v1/chat/completions failed after 2 attempts"):
        backend.complete(["p"])


@pytest.mark.parametrize("url", ["http://judge.example.org/v1", "file:///tmp/v1", "https://k:secret@judge.example.org"])
def test_openai_backend_refuses_an_unsafe_endpoint_from_the_argument_or_environment(api_key, monkeypatch, url):
    with pytest.raises(JudgeBackendError, match="judge endpoint"):
        OpenAIChatBackend("m", base_url=url)
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    with pytest.raises(JudgeBackendError, match="judge endpoint"):
        OpenAIChatBackend("m")


def test_openai_backend_needs_a_base_url(api_key, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(JudgeBackendError, match="pass base_url or set OPENAI_BASE_URL"):
        OpenAIChatBackend("m")
