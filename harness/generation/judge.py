"""Pairwise LLM-as-judge: which of two methods' outputs is more like what this user would write.

Every pair is judged in both orders, (A, B) and (B, A); a method wins a pair only when the judge
prefers it in both orders, otherwise the pair is a tie. This cancels position bias instead of
reporting it as a win, and the rate at which the judge picks the same *position* twice is reported.
Backends share one interface (JudgeBackend.complete): any function (e.g. the harness's local or
NDIF generation, via CallableBackend) or an OpenAI-compatible chat endpoint (OpenAIChatBackend).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from scipy.stats import binomtest

from ..models.urls import checked_host_url

VERDICTS = ("A", "B", "tie", "invalid")

JUDGE_TEMPLATE = """\
You are evaluating personalised text generation. Below are excerpts of a user's past writing, an \
input, and two candidate outputs for that input. Decide which candidate is more like what this \
user would write: their topics, wording, tone and style.

### User's past writing
{profile}

### Input
{input}

### Candidate A
{candidate_a}

### Candidate B
{candidate_b}

Answer with exactly one word: A if Candidate A is more like this user's writing, B if Candidate B \
is, or tie if neither is. Answer:"""


def build_judge_prompt(
    profile: str | Sequence[str], input: str, candidate_a: str, candidate_b: str, max_profile_chars: int = 2000
) -> str:
    """Fill JUDGE_TEMPLATE; a profile given as items is joined, then cut to max_profile_chars."""
    text = profile if isinstance(profile, str) else "\n".join(f"- {item}" for item in profile)
    if len(text) > max_profile_chars:
        text = text[:max_profile_chars].rstrip() + " [...]"
    return JUDGE_TEMPLATE.format(
        profile=text.strip(), input=input.strip(), candidate_a=candidate_a.strip(), candidate_b=candidate_b.strip()
    )


_PREFIX = r"(?:candidate|output|response|option)"
_LABEL = r"(a\s+tie|tie|a|b)"  # "a tie" before "a": the article must not read as candidate A
_LEAD = re.compile(rf"({_PREFIX}\s+)?{_LABEL}\b", re.IGNORECASE)
_DECLARED = re.compile(
    rf"\b(?:answer|verdict|winner|choice|decision)\b\s*(?:is)?\s*[:=\-]?\s*(?:{_PREFIX}\s+)?{_LABEL}\b", re.IGNORECASE
)
_MENTION = re.compile(rf"\b{_PREFIX}\s+(a|b)\b", re.IGNORECASE)
_TIE_WORDS = re.compile(r"\b(tie|tied|neither|equally|equal|both)\b", re.IGNORECASE)
_BOTH_NAMED = re.compile(rf"({_PREFIX}\s+)?[ab]\s*(?:,|/|and|or|vs\.?)\s*({_PREFIX}\s+)?[ab]\b", re.IGNORECASE)


def _label(text: str) -> str:
    """Normalise a matched label ("a", "B", "a tie", "Tie") to "A", "B" or "tie"."""
    return "tie" if "tie" in text.lower() else text.upper()


def parse_verdict(response: str) -> str:
    """Map a judge's free-text answer to "A", "B", "tie", or "invalid" when it cannot be read."""
    text = re.sub(r"[*_`#\"'()\[\]]", " ", response or "").strip()
    if not text:
        return "invalid"
    if _BOTH_NAMED.match(text):  # "A or B", "Candidate A and Candidate B ...": no decision
        return "invalid"
    # 1. A declared answer anywhere ("... so my answer is: B"); the last one counts.
    declared = _DECLARED.findall(text)
    if declared:
        return _label(declared[-1])
    # 2. The answer leads: "A", "B.", "Tie", "Candidate b is ...". A bare lower-case "a" is an article.
    lead = _LEAD.match(text)
    if lead and (lead.group(1) or lead.group(2) in ("A", "B") or "tie" in lead.group(2).lower()):
        return _label(lead.group(2))
    # 3. Exactly one candidate named, or tie words and no candidate named.
    named = {m.upper() for m in _MENTION.findall(text)}
    if len(named) == 1:
        return named.pop()
    if not named and _TIE_WORDS.search(text):
        return "tie"
    return "invalid"


# ------------------------------------------------------------------------------------------- backends


class JudgeBackend(Protocol):
    """Anything that turns judge prompts into judge answers, one answer per prompt, in order."""

    name: str

    def complete(self, prompts: list[str]) -> list[str]: ...


class JudgeBackendError(RuntimeError):
    """The judge backend could not produce answers (bad configuration, endpoint down, bad reply)."""


class CallableBackend:
    """Wrap any function list[str] -> list[str] (e.g. local or NDIF generation) as a judge backend."""

    def __init__(self, fn: Callable[[list[str]], list[str]], name: str = "callable"):
        self.fn = fn
        self.name = name

    def complete(self, prompts: list[str]) -> list[str]:
        """Call the function once on all prompts and check it answered each one with a string."""
        answers = list(self.fn(list(prompts)))
        if len(answers) != len(prompts):
            raise JudgeBackendError(f"judge {self.name!r} returned {len(answers)} answers for {len(prompts)} prompts")
        for i, a in enumerate(answers):
            if not isinstance(a, str):
                raise JudgeBackendError(f"judge {self.name!r} answer {i} is {type(a).__name__}, not str")
        return answers


_TRANSIENT_HTTP = {408, 409, 429}  # plus every 5xx


class OpenAIChatBackend:
    """Judge through an OpenAI-compatible /chat/completions endpoint (stdlib HTTP, greedy, short answers)."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_tokens: int = 16,
        temperature: float = 0.0,
        concurrency: int = 4,
    ):
        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise JudgeBackendError("no judge endpoint: pass base_url or set OPENAI_BASE_URL")
        try:  # the endpoint receives the key and every prompt: https, or http on this machine only
            base_url = checked_host_url(base_url, "judge endpoint (base_url / OPENAI_BASE_URL)")
        except ValueError as err:
            raise JudgeBackendError(str(err)) from None
        key = os.environ.get(api_key_env)
        if not key:
            raise JudgeBackendError(
                f"environment variable {api_key_env} is not set: the judge endpoint needs an API key"
            )
        if max_retries < 0 or concurrency < 1:
            raise ValueError(f"max_retries must be >= 0 and concurrency >= 1, got {max_retries}, {concurrency}")
        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.name = f"openai:{model}"
        self._key = key  # never logged, never in errors or repr
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.concurrency = concurrency

    def __repr__(self) -> str:
        return f"OpenAIChatBackend(model={self.model!r}, url={self.url!r})"

    def complete(self, prompts: list[str]) -> list[str]:
        """Send each prompt as one user message; answers come back in prompt order."""
        if self.concurrency == 1 or len(prompts) <= 1:
            return [self._complete_one(p) for p in prompts]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._complete_one, prompts))

    def _complete_one(self, prompt: str) -> str:
        """POST one chat request, retrying transient failures with exponential backoff."""
        body = json.dumps(
            {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
            }
        ).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self._key}"}
        last_error = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode("utf-8", "replace")
                last_error = f"HTTP {e.code}: {detail}"
                if e.code in _TRANSIENT_HTTP or e.code >= 500:
                    continue
                raise JudgeBackendError(f"judge endpoint {self.url} refused the request: {last_error}") from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                last_error = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
                continue
            return self._parse_reply(payload)
        raise JudgeBackendError(
            f"judge endpoint {self.url} failed after {self.max_retries + 1} attempts; last error: {last_error}"
        )

    def _parse_reply(self, payload: bytes) -> str:
        """Extract choices[0].message.content from a chat-completions reply."""
        try:
            content = json.loads(payload)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeBackendError(
                f"judge endpoint {self.url} sent a reply that is not a chat completion: {payload[:200]!r}"
            ) from None
        return content or ""


# ------------------------------------------------------------------------------------------- judging


@dataclass(frozen=True)
class JudgeItem:
    """One comparison: method A's and method B's outputs for the same user and input."""

    profile: str | Sequence[str]
    input: str
    output_a: str
    output_b: str
    example_id: str
    user_id: str


@dataclass(frozen=True)
class ItemVerdict:
    """Both orders' parsed verdicts for one item, in method terms, and the combined verdict."""

    example_id: str
    user_id: str
    verdict_ab: str  # A/B/tie/invalid with method A shown first
    verdict_ba: str  # same, mapped back to method terms, with method B shown first
    verdict: str  # A (method A wins), B, tie, or invalid
    same_position: bool  # judge picked the same slot in both orders: position bias
    response_ab: str
    response_ba: str


def combine_orders(verdict_ab: str, verdict_ba: str) -> str:
    """Pair verdict from both orders (method terms): a win needs both to agree, else tie."""
    if "invalid" in (verdict_ab, verdict_ba):
        return "invalid"
    return verdict_ab if verdict_ab == verdict_ba else "tie"


def _swap(verdict: str) -> str:
    """Map a verdict on the swapped prompt (B shown as A) back to method terms."""
    return {"A": "B", "B": "A"}.get(verdict, verdict)


def _nan_to_none(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


@dataclass
class JudgeResult:
    """Per-item verdicts and the aggregate: wins of method A, Wilson CI, sign test, position bias."""

    method_a: str
    method_b: str
    judge: str
    items: list[ItemVerdict] = field(default_factory=list)

    def count(self, verdict: str) -> int:
        return sum(v.verdict == verdict for v in self.items)

    @property
    def wins(self) -> int:
        return self.count("A")

    @property
    def losses(self) -> int:
        return self.count("B")

    @property
    def ties(self) -> int:
        return self.count("tie")

    @property
    def invalid(self) -> int:
        return self.count("invalid")

    @property
    def decisive(self) -> int:
        return self.wins + self.losses

    @property
    def win_rate(self) -> float:
        """Share of decisive pairs (ties dropped) that method A wins; nan when none is decisive."""
        return self.wins / self.decisive if self.decisive else math.nan

    @property
    def win_rate_ci(self) -> tuple[float, float]:
        """Wilson 95% CI of win_rate."""
        if not self.decisive:
            return (math.nan, math.nan)
        ci = binomtest(self.wins, self.decisive).proportion_ci(confidence_level=0.95, method="wilson")
        return (float(ci.low), float(ci.high))

    @property
    def sign_test_p(self) -> float:
        """Two-sided sign test of wins vs losses (ties dropped); 1.0 when no pair is decisive."""
        return float(binomtest(self.wins, self.decisive, 0.5).pvalue) if self.decisive else 1.0

    @property
    def both_valid(self) -> list[ItemVerdict]:
        return [v for v in self.items if v.verdict != "invalid"]

    @property
    def order_agreement(self) -> float:
        """Share of items (both orders readable) where the two orders agree in method terms."""
        valid = self.both_valid
        return sum(v.verdict_ab == v.verdict_ba for v in valid) / len(valid) if valid else math.nan

    @property
    def position_bias_rate(self) -> float:
        """Share of items (both orders readable) where the judge chose the same slot both times."""
        valid = self.both_valid
        return sum(v.same_position for v in valid) / len(valid) if valid else math.nan

    def to_dict(self) -> dict:
        """JSON-ready summary plus per-item verdicts (nan written as null)."""
        low, high = self.win_rate_ci
        summary = {
            "method_a": self.method_a,
            "method_b": self.method_b,
            "judge": self.judge,
            "n": len(self.items),
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "invalid": self.invalid,
            "win_rate": self.win_rate,
            "win_rate_ci_low": low,
            "win_rate_ci_high": high,
            "sign_test_p": self.sign_test_p,
            "order_agreement": self.order_agreement,
            "position_bias_rate": self.position_bias_rate,
        }
        summary = {k: _nan_to_none(v) for k, v in summary.items()}
        summary["items"] = [asdict(v) for v in self.items]
        return summary


def _as_item(item: JudgeItem | Mapping, index: int) -> JudgeItem:
    """Accept a JudgeItem or a mapping with its fields; a missing field is named with its row."""
    if isinstance(item, JudgeItem):
        return item
    if not isinstance(item, Mapping):
        raise TypeError(f"judge item {index} must be a JudgeItem or a mapping, got {type(item).__name__}")
    missing = [f for f in JudgeItem.__dataclass_fields__ if f not in item]
    if missing:
        raise ValueError(f"judge item {index} lacks field(s) {', '.join(missing)}")
    return JudgeItem(**{f: item[f] for f in JudgeItem.__dataclass_fields__})


def judge_pairs(
    backend: JudgeBackend,
    items: Sequence[JudgeItem | Mapping],
    *,
    method_a: str,
    method_b: str,
    max_profile_chars: int = 2000,
) -> JudgeResult:
    """Judge every item in both orders with one backend call and aggregate method A vs method B."""
    rows = [_as_item(item, i) for i, item in enumerate(items)]
    prompts = []
    for r in rows:
        prompts.append(build_judge_prompt(r.profile, r.input, r.output_a, r.output_b, max_profile_chars))
        prompts.append(build_judge_prompt(r.profile, r.input, r.output_b, r.output_a, max_profile_chars))
    responses = backend.complete(prompts) if prompts else []
    if len(responses) != len(prompts):
        raise JudgeBackendError(f"judge returned {len(responses)} answers for {len(prompts)} prompts")
    result = JudgeResult(method_a, method_b, getattr(backend, "name", type(backend).__name__))
    for i, r in enumerate(rows):
        resp_ab, resp_ba = responses[2 * i], responses[2 * i + 1]
        raw_ab, raw_ba = parse_verdict(resp_ab), parse_verdict(resp_ba)
        v_ab, v_ba = raw_ab, _swap(raw_ba)
        result.items.append(
            ItemVerdict(
                example_id=str(r.example_id),
                user_id=str(r.user_id),
                verdict_ab=v_ab,
                verdict_ba=v_ba,
                verdict=combine_orders(v_ab, v_ba),
                same_position=raw_ab in ("A", "B") and raw_ab == raw_ba,
                response_ab=resp_ab,
                response_ba=resp_ba,
            )
        )
    return result


def judge_generations(setup: Any, judge: str, judge_model: str, examples: Sequence[Any], profiles: Sequence[Sequence[str]],
                      a: tuple[str, Sequence[str]], b: tuple[str, Sequence[str]]) -> dict:
    """Judge generation ``a = (name, texts)`` against ``b`` on ``examples`` with the study's model (``judge="local"``)
    or an OpenAI-compatible endpoint (``"openai"``); the result record as a dict."""
    from .decoding import decode

    def local(prompts: list[str]) -> list[str]:  # greedy short answers to raw judge prompts
        chat = [setup.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                    add_generation_prompt=True) for p in prompts]
        return [t for i in range(0, len(chat), 8)
                for t in decode(setup.model, chat[i:i + 8], max_new_tokens=8, backend=setup.backend).texts]

    backend = OpenAIChatBackend(judge_model) if judge == "openai" else CallableBackend(local, name="local model")
    items = [{"profile": "\n".join(p[:3]), "input": e.input, "output_a": x, "output_b": y,
              "example_id": e.example_id, "user_id": e.user_id}
             for e, p, x, y in zip(examples, profiles, a[1], b[1])]
    return judge_pairs(backend, items, method_a=a[0], method_b=b[0]).to_dict()
