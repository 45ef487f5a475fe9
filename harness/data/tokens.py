"""Tokenization as the harness scores and decodes text (no special tokens but the tokenizer's own BOS): a prompt
followed by its gold target (``encode``), with the positions an ablation may act on, and a left-padded batch of prompts
to decode (``left_padded``)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import torch


# The ablation positions (``harness.intervene.ablation.POSITIONS``) a scored input resolves: it has no generated tokens.
SCORED_POSITIONS = ("all", "target", "profile")


@dataclass(frozen=True)
class TokenizedInput:
    """A tokenized input to score: prompt ids followed by the gold target ids."""

    ids: torch.Tensor  # [T] long
    n_target: int  # the last n_target ids are the gold output
    profile: tuple[int, int] = (0, 0)  # token span [start, stop) of the profile block in the prompt; empty: none

    @property
    def n_prompt(self) -> int:
        return int(self.ids.shape[0]) - self.n_target

    @property
    def target_positions(self) -> slice:
        """The positions whose logits predict the gold tokens: the last prompt token to the second-to-last gold one."""
        t = int(self.ids.shape[0])
        return slice(t - self.n_target - 1, t - 1)

    def positions(self, where: str) -> slice | None:
        """Where an ablation acts: None (``"all"``: every position), the target positions, or the profile block's
        tokens (``"profile"``; an empty slice for a prompt without a profile, so nothing is ablated)."""
        if where not in SCORED_POSITIONS:
            raise ValueError(f"a scored input cannot be ablated at positions {where!r}: it supports "
                             f"{', '.join(SCORED_POSITIONS)}")
        return {"all": None, "target": self.target_positions, "profile": slice(*self.profile)}[where]


_ADDS_BOS: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer puts its BOS first when it adds special tokens (asked once per tokenizer: the answer is
    needed for every prompt, and inside the prompt budget's search)."""
    try:
        return _ADDS_BOS[tokenizer]
    except KeyError:
        pass
    except TypeError:  # a tokenizer that cannot be weakly referenced: ask every time
        return tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [tokenizer.bos_token_id]
    adds = _ADDS_BOS[tokenizer] = tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [tokenizer.bos_token_id]
    return adds


def bos_prefix(tokenizer: Any, ids: Sequence[int]) -> list[int]:
    """``[bos]`` when the tokenizer starts every sequence with a BOS token of its own (Gemma, the base Llamas) and
    ``ids`` (tokenized without special tokens) do not start with it already, as a chat template that writes it out
    does; ``[]`` otherwise (SmolLM2's tokenizer adds none). Without its BOS, Gemma-3-270M's NLL of plain text triples
    and it answers no needle-in-a-haystack question (it repeats the question)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None or (len(ids) and ids[0] == bos):
        return []
    return [bos] if _adds_bos(tokenizer) else []


def scored_ids(tokenizer: Any, text: str) -> list[int]:
    """``text``'s token ids as the harness scores and decodes them: no special tokens but the tokenizer's own BOS
    (``bos_prefix``)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return bos_prefix(tokenizer, ids) + ids


def left_padded(tokenizer: Any, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask`` for a batch of prompts (causal decoding needs left padding),
    each tokenized as scoring tokenizes it (``scored_ids``): no special tokens but the tokenizer's own BOS, and none
    where a chat template already wrote it out (adding special tokens would give Llama-3.1 and Gemma chat prompts a
    second BOS)."""
    if not texts:
        raise ValueError("no prompts to decode")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t]
    if bad:
        raise ValueError(f"prompt {bad[0]} is {texts[bad[0]]!r}: every prompt must be a non-empty string")
    rows = [scored_ids(tokenizer, t) for t in texts]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None and len({len(r) for r in rows}) > 1:
        raise ValueError("the tokenizer has no pad or eos token to left-pad prompts of different lengths with")
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def encode(tokenizer: Any, prompt: str, target: str, *, max_target_tokens: int = 64,
           profile_span: tuple[int, int] | None = None) -> TokenizedInput:
    """Tokenize ``prompt`` + ``target`` (target truncated to ``max_target_tokens``) without special tokens but the
    tokenizer's own BOS (``bos_prefix``); ``profile_span`` (characters of the profile block in ``prompt``) becomes the
    token span of every token that overlaps it (a fast tokenizer's offsets)."""
    enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=profile_span is not None)
    bos = bos_prefix(tokenizer, enc.input_ids)
    p = enc.input_ids
    t = tokenizer(target, add_special_tokens=False).input_ids[:max_target_tokens]
    if not t:
        raise ValueError("empty gold target: nothing to score")
    if not p:
        raise ValueError("empty prompt")
    span = (0, 0)
    if profile_span is not None:
        lo, hi = profile_span
        inside = [i + len(bos) for i, (a, b) in enumerate(enc["offset_mapping"]) if a < hi and b > lo]
        span = (inside[0], inside[-1] + 1) if inside else (0, 0)
    return TokenizedInput(torch.tensor(bos + p + t, dtype=torch.long), len(t), span)
