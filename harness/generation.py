"""One generation interface for every method the study compares: baselines, CAD, StyleVector and DPS.

    prompts = build_prompts(MethodSpec.rag(k=4), examples, model.tokenizer)
    texts = generate(model, prompts, MethodSpec.dps(pref_heads, gamma=0.5, source="preference"), max_new_tokens=64)

Methods (``MethodSpec.kind``):
``no_profile``  the input alone;                 ``profile``  all profile items that fit (most recent first);
``rag``         BM25 top-k profile items;         ``cad``      contrast the rag prompt with the no-profile prompt;
``stylevector`` no-profile prompt steered by the user's style vector;
``dps``         the rag prompt contrasted with itself under an ablated head set (preference heads; retrieval heads
                = DeCoRe; random layer-matched heads = the control).
All of them run through ``harness.decoding.decode``, so decoding settings (greedy/sampling, stops) are shared.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from .arch import ModelShape
from .data import Example, Prompt, build_prompt
from .decoding import Contrast, Sampling, decode
from .heads import Head, HeadSet
from .steering import StyleVectors, steering_for

METHODS = ("no_profile", "profile", "rag", "cad", "stylevector", "dps")
HEAD_SOURCES = ("preference", "retrieval", "random", "")


@dataclass(frozen=True)
class MethodSpec:
    """A generation method and its settings; ``name`` labels it in tables (e.g. ``dps-preference``)."""

    kind: str
    contrast: Contrast = field(default_factory=Contrast)  # cad, dps
    heads: HeadSet | None = None  # dps
    source: str = ""  # dps: where the head set came from (preference / retrieval / random)
    style: StyleVectors | None = None  # stylevector
    alpha: float = 1.0  # stylevector scale
    k: int = 4  # profile items retrieved for rag / cad / dps prompts
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in METHODS:
            raise ValueError(f"unknown method {self.kind!r}; methods: {', '.join(METHODS)}")
        if self.kind == "dps" and (self.heads is None or not len(self.heads)):
            raise ValueError("method dps needs a nonempty head set (heads=HeadSet.parse(...))")
        if self.kind == "stylevector" and self.style is None:
            raise ValueError("method stylevector needs fitted style vectors (style=fit_style_vectors(...)[layer])")
        if self.source not in HEAD_SOURCES:
            raise ValueError(f"unknown head source {self.source!r}; sources: {', '.join(HEAD_SOURCES[:-1])}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")

    @property
    def name(self) -> str:
        """Table label: ``label`` if set, else the kind (``dps-<source>`` for DPS)."""
        if self.label:
            return self.label
        return f"dps-{self.source}" if self.kind == "dps" and self.source else self.kind

    @classmethod
    def rag(cls, k: int = 4) -> "MethodSpec":
        return cls("rag", k=k)

    @classmethod
    def cad(cls, gamma: float = 1.0, k: int = 4, **contrast: Any) -> "MethodSpec":
        return cls("cad", contrast=Contrast(gamma=gamma, **contrast), k=k)

    @classmethod
    def dps(cls, heads: HeadSet | str, gamma: float = 1.0, *, source: str = "", k: int = 4,
            **contrast: Any) -> "MethodSpec":
        heads = HeadSet.parse(heads) if isinstance(heads, str) else heads
        return cls("dps", contrast=Contrast(gamma=gamma, **contrast), heads=heads, source=source, k=k)

    @classmethod
    def stylevector(cls, style: StyleVectors, alpha: float) -> "MethodSpec":
        return cls("stylevector", style=style, alpha=alpha)


def layer_matched_random(heads: HeadSet, shape: ModelShape, *, seed: int = 0,
                         exclude: HeadSet | None = None) -> HeadSet:
    """A random head set with the same number of heads per layer as ``heads``, avoiding ``exclude`` (default heads)."""
    exclude = heads if exclude is None else exclude
    rng = random.Random(f"layer-matched:{seed}:{heads}")
    chosen: list[Head] = []
    for layer, count in heads.layer_counts().items():
        pool = [Head(layer, h) for h in range(shape.n_heads) if Head(layer, h) not in exclude]
        if len(pool) < count:
            raise ValueError(f"layer {layer} has {len(pool)} heads outside the excluded set, "
                             f"{count} needed for a layer-matched random set")
        chosen += rng.sample(pool, count)
    return HeadSet(chosen)


def build_prompts(method: MethodSpec, examples: Sequence[Example], tokenizer: Any, *,
                  max_prompt_tokens: int = 512, chat: bool = True) -> list[Prompt]:
    """The prompts ``method`` reads: all items that fit (most recent first) for ``profile``, else BM25 top-k."""
    if method.kind == "profile":
        return [build_prompt(ex, tokenizer, max_prompt_tokens=max_prompt_tokens, k=len(ex.profile),
                             method="recency", chat=chat) for ex in examples]
    return [build_prompt(ex, tokenizer, max_prompt_tokens=max_prompt_tokens, k=method.k, method="bm25", chat=chat)
            for ex in examples]


def generate(model: Any, prompts: Sequence[Prompt], method: MethodSpec, *, max_new_tokens: int,
             sampling: Sampling = Sampling(), stop_token_ids: Sequence[int] = (), batch_size: int = 8,
             remote: bool | str = False) -> list[str]:
    """Generate one text per prompt with ``method``, ``batch_size`` prompts per decoding loop."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        for i, p in enumerate(chunk):
            if not isinstance(p, Prompt):
                raise TypeError(f"prompt {start + i} is a {type(p).__name__}, not a harness.data.Prompt")
        kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens, sampling=sampling, stop_token_ids=stop_token_ids,
                                  remote=remote)
        with_p = [p.with_profile for p in chunk]
        without_p = [p.without_profile for p in chunk]
        if method.kind == "no_profile":
            out = decode(model, without_p, **kw)
        elif method.kind in ("profile", "rag"):
            out = decode(model, with_p, **kw)
        elif method.kind == "cad":
            out = decode(model, with_p, second=without_p, contrast=method.contrast, **kw)
        elif method.kind == "stylevector":
            out = decode(model, without_p, steering=steering_for(method.style, [p.user_id for p in chunk],
                                                                  method.alpha), **kw)
        else:
            out = decode(model, with_p, heads=method.heads, contrast=method.contrast, **kw)
        texts += out.texts
    return texts
