"""StyleVector baseline: a per-user steering vector added to the residual stream while generating.

For each of a user's profile items the model gets an input ``x`` and we compare two continuations of it: the user's
real text ``y`` and the model's own generic (greedy, no profile) output ``ŷ``. The user's vector at layer ``l`` is
``mean_i h_l(x_i + y_i)[-1] − h_l(x_i + ŷ_i)[-1]`` (last-token output of decoder block ``l``); generation adds
``alpha ·`` it at every generated position (``harness.generation.decoding.Steering``). Profile items carry no input of their
own, so ``continuation_split`` makes one: the item's opening words are the input, the rest is the real text.
Layer and alpha are picked on discovery data by ``select_style`` (mean ROUGE-L against the gold outputs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import nnsight
import torch
from tqdm import tqdm

from ..data import Example, ProfileItem, build_prompt
from ..data.prompts import render_prompt
from ..data.tokens import left_padded
from ..models.arch import block
from ..models.remote import LOCAL, Backend
from .decoding import GENERATE_BATCH, Sampling, Steering, decode
from ..analysis.metrics import rouge_batch

CONTINUE_CUE = "Continue this text:\n"

STYLE_ITEMS = 4  # recent profile items per user a StyleVector is fitted on (fit_and_choose)


@dataclass
class StyleVectors:
    """One steering vector per user at one layer, and how many profile items each was averaged over."""

    layer: int
    vectors: dict[str, torch.Tensor]  # user_id -> [d_model]
    n_items: dict[str, int] = field(default_factory=dict)

    def for_users(self, user_ids: Sequence[str]) -> torch.Tensor:
        """Stack the vectors of ``user_ids`` (one row per prompt); a user without a vector is an error."""
        missing = sorted({u for u in user_ids if u not in self.vectors})
        if missing:
            raise KeyError(f"no style vector for user(s) {', '.join(missing[:5])} at layer {self.layer}: "
                           f"fit_style_vectors on examples of these users first")
        return torch.stack([self.vectors[u] for u in user_ids])


def continuation_split(item: ProfileItem, n_words: int = 16) -> tuple[str, str]:
    """(input, the user's real continuation) from a profile item: at most ``n_words``, at most half its words."""
    words = item.text.split()
    if len(words) < 2:
        raise ValueError(f"profile item at position {item.position} has {len(words)} word(s): too short to split "
                         "into an input and a continuation")
    cut = max(1, min(n_words, len(words) // 2))
    return CONTINUE_CUE + " ".join(words[:cut]), " ".join(words[cut:])


def last_token_activations(model: Any, texts: Sequence[str], layers: Sequence[int], *, batch_size: int = GENERATE_BATCH,
                           backend: Backend = LOCAL) -> dict[int, torch.Tensor]:
    """Output of decoder blocks ``layers`` at each text's last token: ``{layer: [len(texts), d_model]}``."""
    chunks: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(texts), batch_size):
        ids, mask = left_padded(model.tokenizer, texts[start:start + batch_size])
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with model.trace(input_ids=ids, attention_mask=mask, position_ids=pos, remote=backend.remote):
            saved = nnsight.save([block(model, layer).output[:, -1].detach() for layer in layers])
        for layer, value in zip(layers, saved):
            chunks[layer].append(value.float().cpu())
    return {layer: torch.cat(parts) for layer, parts in chunks.items()}


def fit_style_vectors(model: Any, examples: Sequence[Example], layers: Sequence[int], *, max_items: int = 8,
                      n_words: int = 16, max_new_tokens: int = 48, chat: bool = True, batch_size: int = GENERATE_BATCH,
                      backend: Backend = LOCAL) -> dict[int, StyleVectors]:
    """Per user (of ``examples``) and per layer, the mean last-token difference real − generic over recent items."""
    if not layers:
        raise ValueError("fit_style_vectors needs at least one layer")
    profiles: dict[str, tuple[ProfileItem, ...]] = {}
    for ex in examples:
        profiles.setdefault(ex.user_id, ex.profile)
    owners, prompts, reals = [], [], []
    for user, profile in profiles.items():
        recent = sorted(profile, key=lambda item: -item.position)[:max_items]
        for item in recent:
            if len(item.text.split()) < 2:
                continue
            x, y = continuation_split(item, n_words)
            owners.append(user)
            prompts.append(render_prompt([], x, model.tokenizer, chat))
            reals.append(y)
    if not prompts:
        raise ValueError("no usable profile items (all shorter than two words) to fit style vectors on")
    generic: list[str] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="StyleVector fit (generic continuations)",
                      unit="batch"):
        generic += decode(model, prompts[start:start + batch_size], max_new_tokens=max_new_tokens,
                          backend=backend).texts
    real_h = last_token_activations(model, [p + y for p, y in zip(prompts, reals)], layers,
                                    batch_size=batch_size, backend=backend)
    gen_h = last_token_activations(model, [p + y for p, y in zip(prompts, generic)], layers,
                                   batch_size=batch_size, backend=backend)
    out = {}
    for layer in layers:
        diff = real_h[layer] - gen_h[layer]
        vectors, counts = {}, {}
        for user in profiles:
            rows = [i for i, owner in enumerate(owners) if owner == user]
            if rows:
                vectors[user] = diff[rows].mean(0)
                counts[user] = len(rows)
        out[layer] = StyleVectors(layer, vectors, counts)
    return out


def steering_for(style: StyleVectors, user_ids: Sequence[str], alpha: float) -> Steering:
    """The decoder's steering spec for a batch of prompts by ``user_ids``."""
    return Steering(style.layer, style.for_users(user_ids), float(alpha))


@dataclass(frozen=True)
class StyleChoice:
    """The selected layer and alpha, with the mean ROUGE-L of every (layer, alpha) tried."""

    layer: int
    alpha: float
    scores: dict[tuple[int, float], float]


def select_style(model: Any, examples: Sequence[Example], vectors: dict[int, StyleVectors],
                 alphas: Sequence[float], *, max_new_tokens: int = 48, max_prompt_tokens: int = 512,
                 chat: bool = True, framing: str = "instruction", batch_size: int = GENERATE_BATCH,
                 sampling: Sampling = Sampling(), backend: Backend = LOCAL) -> StyleChoice:
    """Grid-search (layer, alpha) on discovery ``examples``: steer the no-profile prompt, keep the best ROUGE-L."""
    if not examples or not vectors or not alphas:
        raise ValueError("select_style needs discovery examples, fitted vectors and at least one alpha")
    prompts = [build_prompt(ex, model.tokenizer, max_prompt_tokens=max_prompt_tokens, chat=chat, framing=framing)
               for ex in examples]
    scores: dict[tuple[int, float], float] = {}
    grid = [(layer, style, alpha) for layer, style in sorted(vectors.items()) for alpha in alphas]
    for layer, style, alpha in tqdm(grid, desc="StyleVector grid (layer, alpha)", unit="setting"):
        texts: list[str] = []
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            texts += decode(model, [p.without_profile for p in chunk], max_new_tokens=max_new_tokens,
                            sampling=sampling, steering=steering_for(style, [p.user_id for p in chunk], alpha),
                            backend=backend).texts
        rows = rouge_batch(texts, [p.target for p in prompts])
        scores[(layer, float(alpha))] = sum(r["rougeL"] for r in rows) / len(rows)
    best = max(scores, key=lambda key: (scores[key], -abs(key[1])))  # ties: the weaker intervention
    return StyleChoice(best[0], best[1], scores)


def fit_and_choose(model: Any, fit_examples: Sequence[Example], discovery: Sequence[Example], layers: Sequence[int],
                   alphas: Sequence[float], *, max_new_tokens: int, max_prompt_tokens: int, chat: bool = True,
                   framing: str = "instruction", sampling: Sampling = Sampling(), backend: Backend = LOCAL) -> dict:
    """Fit style vectors at ``layers`` on ``fit_examples``' users and choose (layer, alpha) on ``discovery``: a
    JSON-able record (``layer``, ``alpha``, ``vectors`` of the chosen layer, ``grid_rougeL``), see ``chosen_style``."""
    vectors = fit_style_vectors(model, fit_examples, layers, max_items=STYLE_ITEMS, max_new_tokens=max_new_tokens,
                                chat=chat, backend=backend)
    choice = select_style(model, discovery, vectors, alphas, max_new_tokens=max_new_tokens,
                          max_prompt_tokens=max_prompt_tokens, chat=chat, framing=framing, sampling=sampling,
                          backend=backend)
    return {"layer": choice.layer, "alpha": choice.alpha,
            "vectors": {u: v.tolist() for u, v in vectors[choice.layer].vectors.items()},
            "grid_rougeL": {f"L{layer}/a{a:g}": v for (layer, a), v in choice.scores.items()}}


def chosen_style(record: dict) -> tuple[StyleVectors, float]:
    """The style vectors and alpha of a ``fit_and_choose`` record."""
    return StyleVectors(record["layer"], {u: torch.tensor(v) for u, v in record["vectors"].items()}), record["alpha"]
