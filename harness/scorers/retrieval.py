"""Retrieval heads (Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context Factuality").

A needle sentence is hidden in a haystack of real text; the model is asked a question whose answer is the needle's
*answer span* (Wu et al.'s ``real_needle``) and decodes greedily. At each decoding step a head **hits** when its
top-attended position (argmax of the attention row of the query that produces the step's token) lies in the answer
span and holds the token just generated: the head copied that token from the needle.

What Wu et al.'s ``retrieval_head_detection.py`` does, and what is kept here:

- the attention row used at step k is the one of the token fed at step k (the last prompt token for the first
  generated token), so every generated token is checked, including the first;
- each hit adds ``1 / len(span)``; the code counts every hit step, while the paper's definition
  (``|g_h ∩ k| / |k|``, g_h the *set* of tokens head h copy-pasted) counts each needle token once. Default here:
  the paper's set (``unique_positions=True``), which keeps a prompt's score in [0, 1]; ``False`` gives the code's
  count (a model that repeats the needle can exceed 1);
- a prompt counts only when the decoded answer recovers the needle: ROUGE-1 recall (stemmed) of the answer span
  against the response > 0.5. Wu et al. *skip* unrecovered prompts: a head's score is the mean over recovered
  prompts only (``head_counter`` is appended to only when ``score > 50``). ``RetrievalResult.scores`` follows that;
  ``per_prompt`` and ``recovered`` are kept so the zero-filled mean over all prompts is one line away;
- a head with score >= 0.1 is a retrieval head; decoding stops at EOS (Wu et al. also stop at a newline: here the
  response is cut after its first line of content, and steps after the cut are not scored).

Prompts are built locally and seeded: haystack paragraphs from the offline corpora (``harness.data``), synthetic
needles from a few fluent templates with random fillers, inserted at several depths; lengths are modest
(300-700 tokens) so a 135M model on CPU handles a dozen prompts in a few minutes.
"""

from __future__ import annotations

import logging
import random
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence

import torch
from rouge_score import rouge_scorer
from tqdm.auto import tqdm

from ..models.arch import shape_of
from ..intervene.heads import HeadSet
from ..intervene.heads import top_heads
from .induction import attention_weights, heads_above, require_attention_weights
from ..data.tokens import bos_prefix

log = logging.getLogger(__name__)

RETRIEVAL_THRESHOLD = 0.1  # Wu et al.: heads scoring >= 0.1 are retrieval heads
NEEDLE_LENGTHS = (300, 500, 700)  # needle-in-a-haystack prompt lengths in tokens, cycled
RETRIEVAL_TOKENS = 24  # tokens decoded per needle prompt
RECALL_THRESHOLD = 0.5  # Wu et al.: the answer recovers the needle when ROUGE-1 recall > 0.5

# ------------------------------------------------------------------------------------------------ needles

# (needle sentence, question, answer span); the answer span is a substring of the needle.
TEMPLATES: tuple[tuple[str, str, str], ...] = (
    ("The secret ingredient of the {town} {dish} is {spice} and {extra}.",
     "What is the secret ingredient of the {town} {dish}?", "{spice} and {extra}"),
    ("The best thing to do in {town} is to {activity} and then {activity2}.",
     "What is the best thing to do in {town}?", "{activity} and then {activity2}"),
    ("{name} keeps the spare key to the {building} under a {color} {object} next to the {spot}.",
     "Where does {name} keep the spare key to the {building}?", "under a {color} {object} next to the {spot}"),
    ("The lighthouse keeper of {town} spends every evening {hobby} with {companion}.",
     "How does the lighthouse keeper of {town} spend every evening?", "{hobby} with {companion}"),
    ("The password for the {town} library archive is {color} {animal} {number}.",
     "What is the password for the {town} library archive?", "{color} {animal} {number}"),
)

FILLERS: dict[str, tuple[str, ...]] = {
    "town": ("Harborview", "Millbrook", "Ashford Bay", "Cedar Falls", "Port Elena", "Willowmere", "Stonehaven",
             "Larkspur", "Redcliff", "Oakhollow"),
    "dish": ("fish soup", "bean stew", "apple pie", "noodle broth", "corn bread", "lamb curry"),
    "spice": ("smoked paprika", "crushed juniper", "toasted cumin", "wild fennel seed", "black cardamom",
              "dried lavender"),
    "extra": ("lemon zest", "a splash of cider", "roasted garlic", "fresh mint leaves", "a spoon of honey",
              "grated ginger"),
    "activity": ("walk along the old canal", "eat a warm pretzel on the pier", "climb the clock tower",
                 "rent a rowboat on the lake", "visit the glass museum", "watch the ferries at dawn"),
    "activity2": ("drink cocoa in the market square", "listen to the brass band in the park",
                  "buy fresh figs at the night market", "read in the botanical garden",
                  "watch the sunset from the hill", "dance at the harbor festival"),
    "name": ("Margaret", "Tobias", "Priya", "Eleanor", "Mateo", "Ingrid", "Samuel", "Yuki"),
    "building": ("boathouse", "bakery", "garden shed", "chapel", "workshop", "greenhouse"),
    "color": ("green", "blue", "yellow", "purple", "orange", "silver"),
    "object": ("flower pot", "watering can", "garden gnome", "clay jar", "wooden crate", "iron bucket"),
    "spot": ("back door", "old oak tree", "mailbox", "stone fountain", "cellar stairs", "red bench"),
    "hobby": ("painting seagulls", "playing the violin", "carving little boats", "writing letters",
              "knitting wool scarves", "reading old maps"),
    "companion": ("his grey cat", "a retired sailor", "her two nephews", "the village doctor", "a loyal sheepdog",
                  "his younger sister"),
    "animal": ("otter", "falcon", "badger", "heron", "lynx", "tortoise"),
    "number": ("4127", "9382", "5604", "7719", "2846", "6053"),
}


@dataclass(frozen=True)
class NeedlePrompt:
    """One needle-in-a-haystack prompt; ``span`` is the answer span's [start, end) token range in ``input_ids``."""

    text: str
    input_ids: torch.Tensor
    needle: str
    question: str
    answer: str
    span: tuple[int, int]
    depth: float

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[-1])


def make_needle(rng: random.Random, template: int) -> tuple[str, str, str]:
    """A random (needle, question, answer) from template ``template`` (filled with ``rng``)."""
    needle, question, answer = TEMPLATES[template % len(TEMPLATES)]
    slots = {name: rng.choice(options) for name, options in FILLERS.items()}
    return needle.format(**slots), question.format(**slots), answer.format(**slots)


@lru_cache(maxsize=4)
def _haystack_paragraphs(corpus: str) -> tuple[str, ...]:
    """Distinct paragraphs (gold outputs and profile items) of an offline corpus, in corpus order."""
    from ..data import load_examples

    seen: dict[str, None] = {}
    for ex in load_examples(corpus, profile_docs="any"):  # every paragraph the loader found
        for text in (ex.output, *(item.text for item in ex.profile)):
            seen.setdefault(" ".join(text.split()), None)
    return tuple(seen)


def render_prompt(tokenizer: Any, context: str, question: str) -> str:
    """The full prompt text: chat template when the tokenizer has one, else Wu et al.'s plain format."""
    ask = f"Based on the text above, answer the question with the exact words from the text. Question: {question}"
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": f"{context}\n\n{ask}"}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{context}\n\n{ask}\nAnswer:"


def _token_span(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """[first, last+1) of the tokens whose character range overlaps [start, end)."""
    hit = [i for i, (a, b) in enumerate(offsets) if a < end and b > start and b > a]
    if not hit:
        raise ValueError(f"no token covers characters {start}..{end}")
    return hit[0], hit[-1] + 1


def needle_prompts(tokenizer: Any, n: int = 12, *, corpus: str = "conventions2012",
                   lengths: Sequence[int] = NEEDLE_LENGTHS, depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
                   seed: int = 0) -> list[NeedlePrompt]:
    """``n`` seeded needle-in-a-haystack prompts, cycling over templates, prompt lengths (max tokens) and depths."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not lengths or min(lengths) < 100:
        raise ValueError(f"lengths must be token counts >= 100, got {tuple(lengths)}")
    bad = [d for d in depths if not 0.0 <= d <= 1.0]
    if not depths or bad:
        raise ValueError(f"depths must be fractions in [0, 1], got {tuple(depths)}")
    rng = random.Random(seed)
    paragraphs = list(_haystack_paragraphs(corpus))
    rng.shuffle(paragraphs)
    sizes: dict[int, int] = {}

    def size(j: int) -> int:  # tokens of paragraph j, +1 for the line break joining paragraphs
        if j not in sizes:
            sizes[j] = len(tokenizer(paragraphs[j], add_special_tokens=False)["input_ids"]) + 1
        return sizes[j]

    prompts, cursor = [], 0
    for i in range(n):
        needle, question, answer = make_needle(rng, i)
        length, depth = lengths[i % len(lengths)], depths[i % len(depths)]
        budget = length - len(tokenizer(render_prompt(tokenizer, needle, question), add_special_tokens=False)["input_ids"])
        hay: list[str] = []
        n_tok = 0
        while not hay or n_tok + size(cursor % len(paragraphs)) <= budget:
            if len(hay) == len(paragraphs):
                raise ValueError(f"corpus {corpus} has too little text for a {length}-token prompt")
            n_tok += size(cursor % len(paragraphs))
            hay.append(paragraphs[cursor % len(paragraphs)])
            cursor += 1
        hay.insert(round(depth * len(hay)), needle)
        text = render_prompt(tokenizer, "\n".join(hay), question)
        char_start = text.index(needle) + needle.index(answer)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        bos = bos_prefix(tokenizer, enc["input_ids"])  # Gemma answers no needle question without its BOS
        first, stop = _token_span(enc["offset_mapping"], char_start, char_start + len(answer))
        span = (first + len(bos), stop + len(bos))
        prompts.append(NeedlePrompt(text=text, input_ids=torch.tensor(bos + enc["input_ids"]), needle=needle,
                                    question=question, answer=answer, span=span, depth=float(depth)))
    return prompts


# ------------------------------------------------------------------------------------------------ scoring


def retrieval_hits(top_positions: torch.Tensor, generated: torch.Tensor, prompt_ids: torch.Tensor,
                   span: tuple[int, int], *, unique_positions: bool = True) -> torch.Tensor:
    """Per-head hit fraction of one decoded answer: hits / span length, ``[n_layers, n_heads]``.

    ``top_positions`` ``[S, L, H]``: argmax key position of each head's attention row at each of S decoding steps;
    ``generated`` ``[S]``: the token produced at each step; ``prompt_ids`` ``[T]``; ``span`` = [start, end) of
    the answer span in the prompt. A hit: top position inside the span holding the generated token.
    ``unique_positions`` counts each needle position at most once per head (the paper's set definition).
    """
    start, end = span
    if not 0 <= start < end <= prompt_ids.shape[-1]:
        raise ValueError(f"span {span} is not a non-empty range inside the {prompt_ids.shape[-1]}-token prompt")
    if top_positions.dim() != 3 or top_positions.shape[0] != generated.shape[0]:
        raise ValueError(f"top_positions {tuple(top_positions.shape)} must be [steps, layers, heads] with one step "
                         f"per generated token ({generated.shape[0]})")
    width = end - start
    in_span = (top_positions >= start) & (top_positions < end)
    offset = (top_positions - start).clamp(0, width - 1)
    hit = in_span & (prompt_ids[start:end][offset] == generated[:, None, None])
    if unique_positions:
        hit_at = torch.nn.functional.one_hot(offset, width).bool() & hit[..., None]  # [S, L, H, width]
        return hit_at.any(0).sum(-1).float() / width
    return hit.sum(0).float() / width


@lru_cache(maxsize=1)
def _rouge1() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)


def needle_recall(answer: str, response: str) -> float:
    """ROUGE-1 recall (stemmed) of the needle's answer span in a response, as Wu et al. score recovery."""
    return float(_rouge1().score(answer, response)["rouge1"].recall) if response.strip() else 0.0


def first_line_steps(tokenizer: Any, generated: Sequence[int]) -> int:
    """How many generated tokens make up the response up to its first line break after some content."""
    text = ""
    for k, tok in enumerate(generated):
        piece = tokenizer.decode([tok], skip_special_tokens=True)
        if text.strip() and "\n" in piece:
            return k + 1
        text += piece
    return len(generated)


@dataclass
class RetrievalResult:
    """Per-head retrieval scores (Wu et al.): mean hit fraction over the prompts whose answer recovered the needle."""

    per_prompt: torch.Tensor  # [n_prompts, n_layers, n_heads] hit fraction of each prompt
    recovered: torch.Tensor  # [n_prompts] bool: ROUGE-1 recall > threshold_recall
    recall: list[float]
    responses: list[str]
    prompts: list[NeedlePrompt] = field(repr=False)
    generated: list[torch.Tensor] = field(default_factory=list, repr=False)  # per prompt: [S] scored token ids
    top_positions: list[torch.Tensor] = field(default_factory=list, repr=False)  # per prompt: [S, L, H] argmax keys

    @property
    def scores(self) -> torch.Tensor:
        """``[n_layers, n_heads]``: mean over recovered prompts (zeros when none recovered)."""
        if not bool(self.recovered.any()):
            return torch.zeros(self.per_prompt.shape[1:])
        return self.per_prompt[self.recovered].mean(0)

    def heads(self, threshold: float = RETRIEVAL_THRESHOLD) -> HeadSet:
        """Retrieval heads: score >= threshold (0.1 in Wu et al.)."""
        return heads_above(self.scores, threshold)

    def top_k(self, k: int) -> HeadSet:
        """The k heads with the highest retrieval score."""
        return top_heads(self.scores, k)


def _decode_with_attention(model: Any, prompt: NeedlePrompt, n_layers: int,
                           max_new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decode; returns generated ids ``[S]`` and each head's argmax key position per step ``[S, L, H]``."""
    ids = prompt.input_ids[None]
    steps: list[torch.Tensor] = []
    with warnings.catch_warnings():
        # the open all() loop ends when decoding stops (EOS); nnsight warns about that by design
        warnings.filterwarnings("ignore", message=".*was never reached.*")
        with model.generate(max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=model.tokenizer.eos_token_id) as tracer:
            with tracer.invoke({"input_ids": ids, "attention_mask": torch.ones_like(ids)}):
                for _ in tracer.all():
                    steps.append(torch.stack([attention_weights(model, layer)[0, :, -1, :].argmax(-1)
                                              for layer in range(n_layers)]))
            with tracer.invoke():
                output = tracer.result.save()
    generated = output[0, ids.shape[1]:].cpu()
    top = torch.stack(steps).cpu()
    if top.shape[0] != generated.shape[0]:
        raise RuntimeError(f"read attention at {top.shape[0]} steps for {generated.shape[0]} generated tokens")
    return generated, top


@torch.no_grad()
def retrieval_scores(model: Any, prompts: Sequence[NeedlePrompt], *, max_new_tokens: int = 32,
                     threshold_recall: float = RECALL_THRESHOLD, unique_positions: bool = True,
                     progress: bool = True) -> RetrievalResult:
    """Greedy-decode every prompt, reading each head's top-attended position per step, and score heads."""
    require_attention_weights(model, "retrieval_scores")
    if not prompts:
        raise ValueError("retrieval_scores needs at least one prompt (see needle_prompts)")
    shape = shape_of(model.config)
    tokenizer = model.tokenizer
    per_prompt, recall, responses, generated_ids, top_positions = [], [], [], [], []
    for prompt in tqdm(prompts, desc="retrieval heads", disable=not progress):
        generated, top = _decode_with_attention(model, prompt, shape.n_layers, max_new_tokens)
        keep = first_line_steps(tokenizer, generated.tolist())
        generated, top = generated[:keep], top[:keep]
        generated_ids.append(generated)
        top_positions.append(top)
        response = tokenizer.decode(generated, skip_special_tokens=True).strip()
        responses.append(response)
        recall.append(needle_recall(prompt.answer, response))
        per_prompt.append(retrieval_hits(top, generated, prompt.input_ids, prompt.span,
                                         unique_positions=unique_positions))
    recovered = torch.tensor([r > threshold_recall for r in recall])
    if not bool(recovered.any()):
        log.warning("no prompt recovered its needle (ROUGE-1 recall > %.2f): retrieval scores are all zero",
                    threshold_recall)
    return RetrievalResult(per_prompt=torch.stack(per_prompt), recovered=recovered, recall=recall,
                           responses=responses, prompts=list(prompts), generated=generated_ids,
                           top_positions=top_positions)
