"""One generation interface for every method the study compares: baselines, CAD, StyleVector and DPS.

    prompts = build_prompts(Generation.rag(k_profile=4), examples, model.tokenizer)
    texts = generate(model, prompts, Generation.dps(pref_heads, gamma=0.5, source="preference"), max_new_tokens=64)

Generation methods (``Generation.kind``):
``no_profile``  the input alone;                 ``profile``  all profile items that fit (most recent first);
``rag``         BM25 top-k profile items;         ``cad``      contrast the rag prompt with the no-profile prompt;
``stylevector`` no-profile prompt steered by the user's style vector;
``dps``         the rag prompt contrasted with itself under an ablated head set (preference heads; retrieval heads
                = DeCoRe; random layer-matched heads = the control).
All of them run through ``harness.generation.decoding.decode``, so decoding settings (greedy/sampling, stops) are shared.
``generate_ablated`` (the ablation study's generations) instead ablates one head set per row of one batched greedy
``generate``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..data import Example, Prompt, build_prompt
from .decoding import DECODING_POSITIONS, GENERATE_BATCH, Contrast, Sampling, decode
from ..intervene.ablation import GENERATION_POSITIONS, Ablation, ablate_generation
from ..intervene.heads import HeadSet
from ..models.remote import LOCAL, Backend
from .steering import StyleVectors, steering_for

GENERATIONS = ("no_profile", "profile", "rag", "cad", "stylevector", "dps")


@dataclass(frozen=True)
class Generation:
    """A generation method and its settings; ``name`` labels it in tables (e.g. ``dps-pcs``)."""

    kind: str
    contrast: Contrast = field(default_factory=Contrast)  # cad, dps
    heads: HeadSet | None = None  # dps
    source: str = ""  # dps: the head family the set came from (a registered head scorer, or random)
    style: StyleVectors | None = None  # stylevector
    alpha: float = 1.0  # stylevector scale
    k_profile: int = 4  # profile items retrieved for rag / cad / dps prompts
    ablation: Ablation = Ablation()  # dps: how the masked branch ablates the heads (positions all / target / generated)
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in GENERATIONS:
            raise ValueError(f"unknown generation {self.kind!r}; generations: {', '.join(GENERATIONS)}")
        if self.kind == "dps" and (self.heads is None or not len(self.heads)):
            raise ValueError("method dps needs a nonempty head set (heads=HeadSet.parse(...))")
        if self.kind == "stylevector" and self.style is None:
            raise ValueError("method stylevector needs fitted style vectors (style=fit_style_vectors(...)[layer])")
        if self.k_profile < 1:
            raise ValueError(f"k_profile must be >= 1, got {self.k_profile}")
        if self.kind == "dps":
            self.ablation.supported("method dps", DECODING_POSITIONS)

    @property
    def name(self) -> str:
        """Table label: ``label`` if set, else the kind (``dps-<source>`` for DPS)."""
        if self.label:
            return self.label
        return f"dps-{self.source}" if self.kind == "dps" and self.source else self.kind

    @property
    def key(self) -> str:
        """Everything that determines this method's texts (its checkpoint key), not just its table name."""
        style = f"style@L{self.style.layer}" if self.style is not None else ""
        # "<mode>@<positions>": the recorded checkpoint keys' form (a resumed run finds its rows under them)
        ablation = f"{self.ablation.mode}@{self.ablation.positions}" if self.kind == "dps" else ""
        return "|".join([self.name, self.kind, str(self.heads or ""), repr(self.contrast), f"k_profile={self.k_profile}",
                         style, f"alpha={self.alpha:g}", ablation])

    def labelled(self, label: str) -> "Generation":
        """The same method under another table name."""
        return dataclasses.replace(self, label=label)

    @classmethod
    def rag(cls, k_profile: int = 4) -> "Generation":
        return cls("rag", k_profile=k_profile)

    @classmethod
    def cad(cls, gamma: float = 1.0, k_profile: int = 4, **contrast: Any) -> "Generation":
        return cls("cad", contrast=Contrast(gamma=gamma, **contrast), k_profile=k_profile)

    @classmethod
    def dps(cls, heads: HeadSet | str, gamma: float = 1.0, *, source: str = "", k_profile: int = 4,
            **contrast: Any) -> "Generation":
        heads = HeadSet.parse(heads) if isinstance(heads, str) else heads
        return cls("dps", contrast=Contrast(gamma=gamma, **contrast), heads=heads, source=source, k_profile=k_profile)

    @classmethod
    def stylevector(cls, style: StyleVectors, alpha: float) -> "Generation":
        return cls("stylevector", style=style, alpha=alpha)


def build_prompts(generation: Generation, examples: Sequence[Example], tokenizer: Any, *,
                  max_prompt_tokens: int = 512, chat: bool = True, framing: str = "instruction") -> list[Prompt]:
    """The prompts ``generation`` reads: all items that fit (most recent first) for ``profile``, else BM25 top-k."""
    if generation.kind == "profile":
        return [build_prompt(ex, tokenizer, max_prompt_tokens=max_prompt_tokens, k=len(ex.profile),
                             retrieval="recency", chat=chat, framing=framing) for ex in examples]
    return [build_prompt(ex, tokenizer, max_prompt_tokens=max_prompt_tokens, k=generation.k_profile,
                         retrieval="bm25", chat=chat, framing=framing) for ex in examples]


def generate(model: Any, prompts: Sequence[Prompt], generation: Generation, *, max_new_tokens: int,
             sampling: Sampling = Sampling(), stop_token_ids: Sequence[int] = (), batch_size: int = GENERATE_BATCH,
             backend: Backend = LOCAL) -> list[str]:
    """Generate one text per prompt with ``generation``, ``batch_size`` prompts per decoding loop."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        for i, p in enumerate(chunk):
            if not isinstance(p, Prompt):
                raise TypeError(f"prompt {start + i} is a {type(p).__name__}, not a harness.data.Prompt")
        kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens, sampling=sampling, stop_token_ids=stop_token_ids,
                                  backend=backend)
        with_p = [p.with_profile for p in chunk]
        without_p = [p.without_profile for p in chunk]
        if generation.kind == "no_profile":
            out = decode(model, without_p, **kw)
        elif generation.kind in ("profile", "rag"):
            out = decode(model, with_p, **kw)
        elif generation.kind == "cad":
            out = decode(model, with_p, second=without_p, contrast=generation.contrast, **kw)
        elif generation.kind == "stylevector":
            out = decode(model, without_p, steering=steering_for(generation.style, [p.user_id for p in chunk],
                                                                  generation.alpha), **kw)
        else:
            out = decode(model, with_p, heads=generation.heads, contrast=generation.contrast,
                         ablation=generation.ablation, **kw)
        texts += out.texts
    return texts


def generate_ablated(model: Any, prompt: str, head_sets: Sequence[HeadSet | None], *, max_new_tokens: int,
                     min_new_tokens: int = 0, ablation: Ablation = Ablation(),
                     backend: Backend = LOCAL) -> list[str]:
    """Greedy continuations of one prompt, one per head set ablated under ``ablation`` (positions all or generated;
    None = unablated), all sets as rows of one batched ``generate``; no stop token before ``min_new_tokens``."""
    import torch

    from ..data.tokens import scored_ids

    ablation.supported("generate_ablated", GENERATION_POSITIONS)  # before any work
    tok = model.tokenizer
    ids = torch.tensor([scored_ids(tok, prompt)])  # [1, T]; the tokenizer's own BOS (Gemma's), as scoring has it
    rows = len(head_sets)
    with model.generate(max_new_tokens=max_new_tokens, min_new_tokens=min(min_new_tokens, max_new_tokens),
                        do_sample=False, pad_token_id=tok.eos_token_id, remote=backend.remote) as tracer:
        with tracer.invoke({"input_ids": ids.expand(rows, -1),
                            "attention_mask": torch.ones(rows, ids.shape[1], dtype=torch.long)}):
            ablate_generation(model, tracer, [hs if hs is not None else HeadSet() for hs in head_sets], ablation)
        with tracer.invoke():
            out = tracer.result.save()
    return tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)


def comparison_generations(heads: dict[str, HeadSet], primary: str, *, gamma: float, gammas: Sequence[float],
                           k_profile: int, style: StyleVectors, alpha: float, ablation: Ablation = Ablation()
                           ) -> list[Generation]:
    """The DPS study's methods: the baselines, DPS with each family's ``heads`` (``dps-<family>``), and a γ sweep
    of DPS with the ``primary`` family's heads (``dps-<primary>-g<γ>``); ``ablation`` is how every DPS row ablates
    its heads."""
    specs = [Generation("no_profile"), Generation("profile"), Generation.rag(k_profile=k_profile),
             Generation.cad(gamma=gamma, k_profile=k_profile), Generation.stylevector(style, alpha)]
    dps = [Generation.dps(hs, gamma, source=family, k_profile=k_profile) for family, hs in heads.items()]
    if "retrieval" in heads:  # DeCoRe: retrieval heads masked, gamma scaled by the full branch's normalized entropy
        dps.append(Generation.dps(heads["retrieval"], gamma, source="retrieval", k_profile=k_profile,
                                  schedule="entropy", normalize=True).labelled("decore"))
    dps += [Generation.dps(heads[primary], g, source=primary, k_profile=k_profile).labelled(f"dps-{primary}-g{g:g}")
            for g in gammas if g != gamma]
    return specs + [dataclasses.replace(s, ablation=ablation) for s in dps]
