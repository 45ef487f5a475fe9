"""Contrastive decoding with one batched two-branch forward per step: DPS (preference heads ablated) and CAD.

At every step ``scores = (1 + γ_t)·ℓ_full − γ_t·ℓ_masked`` over the tokens the full branch finds plausible (``p_full ≥
α·max p_full``, others −inf). For DPS the masked branch is the same prompt with a head set ablated under an
``Ablation(mode, reference, positions)`` at every position (``positions="all"``) or only where it predicts generated
tokens (``"target"``: the last prompt token on; ``"generated"``: the generated tokens only); for CAD it is the prompt
without the profile. Both branches keep their own KV cache and run as one forward of ``2 × prompts`` rows ``[full...,
masked...]``; ``harness.intervene.ablation.ablate`` edits only the masked rows. When the ablation spares the prompt, the
masked branch's prompt KV equals the full branch's: the prompt runs once and its cache is duplicated for the masked rows
(``harness.intervene.prompt_cache``). The whole loop is one ``model.session`` on the caller's ``Backend``, so remotely
it is one request. With no second branch the same loop is plain greedy / sampled decoding (the baselines and StyleVector
use it).

Usage::

    out = decode(model, prompts, heads=HeadSet.parse("L3H1,L7H0"), contrast=Contrast(gamma=0.5),
                 max_new_tokens=64)
    out.texts
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import nnsight
import torch

from ..data.tokens import left_padded
from ..intervene.ablation import Ablation, ablate
from ..models.arch import block as decoder_block
from ..intervene.heads import HeadSet
from ..intervene.prompt_cache import batch_cache
from ..models.remote import LOCAL, Backend

SPACES = ("logits", "logprobs")
SCHEDULES = ("constant", "entropy")
DECODING_POSITIONS = ("all", "target", "generated")  # the ablation positions decoding supports

GENERATE_BATCH = 8  # prompts per decoding loop: generation methods, the framing choice and StyleVector's fit
DELTA_TOKENS = 12  # steps of the DPS study's Δ-logits example


@dataclass(frozen=True)
class Contrast:
    """How the two branches are combined: γ (constant or DeCoRe's entropy schedule), space, plausibility α.

    ``schedule="entropy"``: γ_t = gamma · H(p_full) (nats; divided by log|V| when ``normalize``), capped at ``cap``.
    ``space="logprobs"`` contrasts log-softmaxed branches instead of raw logits. ``alpha=0`` disables the mask.
    """

    gamma: float = 1.0
    schedule: str = "constant"
    cap: float | None = None
    normalize: bool = False
    space: str = "logits"
    alpha: float = 0.1

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Contrast.schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if self.space not in SPACES:
            raise ValueError(f"Contrast.space {self.space!r}: choose one of {', '.join(SPACES)}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"Contrast.alpha must be in [0, 1], got {self.alpha}")
        if self.cap is not None and self.cap < 0:
            raise ValueError(f"Contrast.cap must be >= 0, got {self.cap}")


@dataclass(frozen=True)
class Sampling:
    """Greedy (default) or seeded sampling with temperature and optional nucleus (top-p); stop tokens are barred for
    the first ``min_new_tokens`` steps (a chat model whose answer is prefilled with a full sentence otherwise often
    closes its turn at once)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float | None = None
    seed: int = 0
    min_new_tokens: int = 0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"Sampling.temperature must be > 0, got {self.temperature}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"Sampling.top_p must be in (0, 1], got {self.top_p}")
        if self.min_new_tokens < 0:
            raise ValueError(f"Sampling.min_new_tokens must be >= 0, got {self.min_new_tokens}")


@dataclass(frozen=True)
class Steering:
    """Add ``alpha · vectors[row]`` to the residual stream after block ``layer`` at every generated position."""

    layer: int
    vectors: torch.Tensor  # [rows, d_model]
    alpha: float


@dataclass
class Decoded:
    """Generated token ids (stop token excluded), texts, per-step γ_t and, when asked, top Δ-logit tokens."""

    token_ids: list[list[int]]
    texts: list[str]
    gammas: list[list[float]] = field(default_factory=list)  # [row][step]; empty without a second branch
    delta_top: dict[str, torch.Tensor] | None = None  # promoted/suppressed ids and values, [rows, steps, k]
    steps: int = 0  # decoding steps run (every row advances each step until all have stopped)


# ------------------------------------------------------------------------------------------ per-step maths


def plausibility_mask(full_logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """Boolean mask of tokens with ``p_full >= alpha * max p_full`` (computed in log space, exact for alpha=0)."""
    if alpha <= 0:
        return torch.ones_like(full_logits, dtype=torch.bool)
    logp = torch.log_softmax(full_logits.float(), dim=-1)
    return logp >= logp.max(dim=-1, keepdim=True).values + math.log(alpha)


def entropy_gamma(full_logits: torch.Tensor, *, scale: float = 1.0, cap: float | None = None,
                  normalize: bool = False) -> torch.Tensor:
    """DeCoRe's adaptive γ_t per row: ``scale · H(p_full)`` in nats (÷ log|V| if ``normalize``), at most ``cap``."""
    logp = torch.log_softmax(full_logits.float(), dim=-1)
    h = -(logp.exp() * logp).nan_to_num().sum(-1)
    if normalize:
        h = h / math.log(full_logits.shape[-1])
    g = scale * h
    return g.clamp(max=cap) if cap is not None else g


def in_space(logits: torch.Tensor, space: str) -> torch.Tensor:
    """A branch's scores in the contrast space: raw logits or log-probabilities (float32)."""
    return torch.log_softmax(logits.float(), dim=-1) if space == "logprobs" else logits.float()


def contrast_scores(full: torch.Tensor, masked: torch.Tensor, contrast: Contrast) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1+γ)·full − γ·masked`` on plausible tokens (−inf elsewhere), and the γ used per row."""
    if contrast.schedule == "entropy":
        gamma = entropy_gamma(full, scale=contrast.gamma, cap=contrast.cap, normalize=contrast.normalize)
    else:
        gamma = torch.full(full.shape[:-1], float(contrast.gamma), dtype=torch.float32, device=full.device)
    a, b = in_space(full, contrast.space), in_space(masked, contrast.space)
    g = gamma[..., None]
    scores = (1.0 + g) * a - g * b
    scores = scores.masked_fill(~plausibility_mask(full, contrast.alpha), float("-inf"))
    return scores, gamma


def next_tokens(scores: torch.Tensor, sampling: Sampling, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token per row: argmax, or a draw from softmax(scores / T) restricted to the top-p nucleus."""
    if not sampling.do_sample:
        return scores.argmax(dim=-1)
    scores = scores.float() / sampling.temperature
    if sampling.top_p is not None and sampling.top_p < 1.0:
        sorted_scores, order = scores.sort(dim=-1, descending=True)
        cum = sorted_scores.softmax(-1).cumsum(-1)
        drop_sorted = (cum - sorted_scores.softmax(-1)) >= sampling.top_p  # mass before the token already covers p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    probs = scores.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


# ------------------------------------------------------------------------------------------ the loop


def stop_ids(model: Any, extra: Sequence[int] = ()) -> list[int]:
    """The tokenizer's eos, the generation config's eos id(s) and ``extra``."""
    ids = set(int(i) for i in extra)
    eos = getattr(model.tokenizer, "eos_token_id", None)
    gen = getattr(getattr(model, "_module", None), "generation_config", None)
    for value in (eos, getattr(gen, "eos_token_id", None)):
        if value is not None:
            ids.update([int(value)] if isinstance(value, int) else [int(v) for v in value])
    return sorted(ids)


def forward_step(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, *,
                 cache: Any = None, heads: Sequence[HeadSet | str | None] | None = None,
                 steering: Steering | None = None, steer_from: int = 0, use_cache: bool = True,
                 ablation: Ablation = Ablation(), ablate_from: int = 0) -> tuple[torch.Tensor, Any]:
    """One traced forward of a batch: last-position logits ``[rows, V]`` and the updated KV cache.

    ``heads``: one head set (or None) per row, ablated with ``ablation``'s mode and reference from sequence index
    ``ablate_from`` of this forward's input on (0: every position; ``decode`` resolves the design's positions to it).
    ``steering`` is added from index ``steer_from`` on. Works in or outside a session, locally or remotely.
    """
    new_cache = None  # a trace hands back only saved names
    ablating = heads is not None and any(h is not None for h in heads) and ablate_from < input_ids.shape[1]
    with model.trace(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                     use_cache=use_cache, logits_to_keep=1):
        if ablating:
            ablate(model, list(heads), mode=ablation.mode, reference=ablation.reference,
                   at=slice(ablate_from, None) if ablate_from else None)
        if steering is not None:
            block = decoder_block(model, steering.layer)
            h = block.output
            at = torch.zeros(h.shape[1], dtype=h.dtype, device=h.device)
            at[steer_from:] = 1.0
            vec = steering.vectors.to(device=h.device, dtype=h.dtype)
            block.output = h + steering.alpha * vec[:, None, :] * at[None, :, None]
        logits = nnsight.save(model.output.logits[:, -1])
        if use_cache:
            new_cache = nnsight.save(model.output.cache)
    return logits, new_cache


def decode(model: Any, prompts: Sequence[str], *, second: Sequence[str] | None = None,
           heads: HeadSet | str | None = None, contrast: Contrast | None = None,
           sampling: Sampling = Sampling(), max_new_tokens: int = 64, stop_token_ids: Sequence[int] = (),
           steering: Steering | None = None, use_cache: bool = True, fused: bool = True, record_delta: int = 0,
           ablation: Ablation = Ablation(), backend: Backend = LOCAL) -> Decoded:
    """Decode ``prompts``; with ``heads`` (DPS) or ``second`` (CAD prompts) contrast a masked branch.

    ``heads``: ablated in the masked branch (same prompts unless ``second`` is given) under ``ablation`` (mode and
    reference) at its ``positions``: ``"all"`` (every position), ``"target"`` (the positions that predict generated
    tokens: the last prompt token and each generated one, as PCS's target positions predict the gold tokens) or
    ``"generated"`` (generated tokens only, so the first token is the full branch's); ``"profile"`` is refused. With
    ``"target"`` / ``"generated"`` the prompt but its last token runs once for both branches (fused and cached decoding;
    ``fused=False`` runs it per branch, the reference).
    ``contrast``: defaults to ``Contrast()`` when there is a second branch; ignored without one.
    ``use_cache=False`` re-runs the whole sequence each step (the reference the cache is tested against).
    ``fused=False`` runs the two branches as two forwards per step, each with its own cache (benchmark baseline).
    ``record_delta=k`` records per step the k tokens most promoted and suppressed by ``full − masked``.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    n = len(prompts)
    two = heads is not None or second is not None
    if second is not None and len(second) != n:
        raise ValueError(f"{len(second)} second-branch prompts for {n} prompts")
    if steering is not None and (two or steering.vectors.shape[0] != n):
        extra = " and a second branch" if two else ""
        raise ValueError(f"steering needs a single branch and one vector per prompt "
                         f"(got {tuple(steering.vectors.shape)} for {n} prompts{extra})")
    if record_delta and not two:
        raise ValueError("record_delta needs a second branch (heads or second prompts)")
    ablation.supported("decode", DECODING_POSITIONS)
    if ablation.positions != "all" and heads is None:
        raise ValueError(f"ablation positions {ablation.positions!r} need heads to ablate")
    contrast = contrast or Contrast()
    texts = list(prompts) + (list(second if second is not None else prompts) if two else [])
    ids, mask = left_padded(model.tokenizer, texts)
    rows = 2 * n if two else n
    row_heads = ([None] * n + [heads] * n) if heads is not None else None
    groups = [(0, rows)] if fused or not two else [(0, n), (n, rows)]
    stops = torch.tensor(stop_ids(model, stop_token_ids))
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else int(stops[0])
    prompt_len = ids.shape[1]
    first_ablated = {"all": 0, "target": prompt_len - 1, "generated": prompt_len}[ablation.positions]  # sequence index
    # resample ablation reads its source by absolute position, which a one-token step over the last prompt token
    # does not see (it takes the source mean): keep the shortcut to modes it cannot change
    share_prompt = (two and second is None and first_ablated > 0 and prompt_len > 1 and use_cache and fused
                    and ablation.mode != "resample")
    k = int(record_delta)

    with model.session(remote=backend.remote):
        generator = torch.Generator().manual_seed(sampling.seed) if sampling.do_sample else None
        caches = [None for _ in groups]
        seq, feed = ids, ids
        if share_prompt:  # the prompt but its last token, once for both branches: [n] rows -> [full; masked]
            # (the cache is bound to no name: a saved name in the session would travel back from NDIF)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            caches[0] = batch_cache(forward_step(model, ids[:n, :-1], mask[:n, :-1], pos[:n, :-1])[1], 2)
            feed = ids[:, -1:]
        chosen, gammas, promoted, suppressed = [], [], [], []
        done = torch.zeros(n, dtype=torch.bool)
        for step in range(max_new_tokens):
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            parts = []
            for g, (lo, hi) in enumerate(groups):
                steer_from = max(prompt_len - 1 - (seq.shape[1] - feed.shape[1]), 0)  # last prompt token on
                ablate_from = max(first_ablated - (seq.shape[1] - feed.shape[1]), 0)
                part, caches[g] = forward_step(model, feed[lo:hi], mask[lo:hi], pos[lo:hi, -feed.shape[1]:],
                                               cache=caches[g], heads=row_heads[lo:hi] if row_heads else None,
                                               steering=steering, steer_from=steer_from, use_cache=use_cache,
                                               ablation=ablation, ablate_from=ablate_from)
                parts.append(part)
            logits = torch.cat(parts).float().cpu()
            if two:
                scores, gamma = contrast_scores(logits[:n], logits[n:], contrast)
                gammas.append(gamma)
                if k:
                    delta = in_space(logits[:n], contrast.space) - in_space(logits[n:], contrast.space)
                    promoted.append(delta.topk(k, dim=-1))
                    suppressed.append((-delta).topk(k, dim=-1))
            else:
                scores = logits
            if step < sampling.min_new_tokens:  # no stop token yet: [rows, vocab] scores with the stops barred
                scores = scores.index_fill(-1, stops, float("-inf"))
            tok = next_tokens(scores, sampling, generator).masked_fill(done, pad)  # finished rows get padding
            chosen.append(tok)
            done = done | torch.isin(tok, stops)
            if bool(done.all()):
                break
            new = torch.cat([tok, tok])[:, None] if two else tok[:, None]
            seq = torch.cat([seq, new], dim=1)
            mask = torch.cat([mask, mask.new_ones(rows, 1)], dim=1)
            feed = new if use_cache else seq
        tokens = nnsight.save(torch.stack(chosen, 1))
        gamma_out = nnsight.save(torch.stack(gammas, 1) if gammas else torch.zeros(n, 0))
        delta_out = nnsight.save({
            "promoted_ids": torch.stack([t.indices for t in promoted], 1),
            "promoted": torch.stack([t.values for t in promoted], 1),
            "suppressed_ids": torch.stack([t.indices for t in suppressed], 1),
            "suppressed": -torch.stack([t.values for t in suppressed], 1),
        } if k else None)

    stop_set = set(stops.tolist())
    token_ids = []
    for row in tokens.tolist():
        cut = next((i for i, t in enumerate(row) if t in stop_set), len(row))
        token_ids.append(row[:cut])
    decoded = model.tokenizer.batch_decode(token_ids, skip_special_tokens=True)
    gammas_out = [g[: len(t) + 1] for g, t in zip(gamma_out.tolist(), token_ids)] if two else []
    return Decoded(token_ids, decoded, gammas_out, delta_out, steps=int(tokens.shape[1]))


# ------------------------------------------------------------------------------------------ inspectability


@dataclass(frozen=True)
class TokenDelta:
    """One generated token with γ_t and the tokens ``full − masked`` promoted and suppressed most."""

    step: int
    token: str
    gamma: float
    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]


def delta_logits_report(model: Any, prompt: str, heads: HeadSet | str | None = None, *, second: str | None = None,
                        k: int = 5, max_new_tokens: int = 20, contrast: Contrast = Contrast(),
                        sampling: Sampling = Sampling(), backend: Backend = LOCAL) -> list[TokenDelta]:
    """Decode one prompt with DPS (or CAD via ``second``) and say, per token, what the head set pushed up and down."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    out = decode(model, [prompt], second=[second] if second is not None else None, heads=heads, contrast=contrast,
                 sampling=sampling, max_new_tokens=max_new_tokens, record_delta=k, backend=backend)
    tok = model.tokenizer
    top = out.delta_top
    report = []
    n_steps = top["promoted"].shape[1]
    ids = out.token_ids[0]
    for t in range(n_steps):
        token = tok.decode([ids[t]]) if t < len(ids) else tok.decode([stop_ids(model)[0]])

        def pairs(kind: str) -> list[tuple[str, float]]:
            return [(tok.decode([int(i)]), float(v)) for i, v in zip(top[f"{kind}_ids"][0, t], top[kind][0, t])]

        gamma = out.gammas[0][t] if t < len(out.gammas[0]) else float("nan")
        report.append(TokenDelta(t, token, gamma, pairs("promoted"), pairs("suppressed")))
        if t >= len(ids):
            break
    return report


def token_label(text: str, width: int = 10) -> str:
    """A token as a plot label: control characters escaped (``repr``), and characters the plot font has no glyph for
    (CJK, emoji in DejaVu Sans) written as ``\\uXXXX`` instead of empty boxes; at most ``width`` characters."""
    from matplotlib import font_manager

    charmap = _font_charmap(font_manager.findfont(font_manager.FontProperties()))
    shown = ""
    for c in repr(text)[1:-1]:
        piece = c if ord(c) in charmap else (f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
        if shown and len(shown) + len(piece) > width:  # whole escapes only; the first piece always shows
            break
        shown += piece
    return shown


@functools.lru_cache(maxsize=4)
def _font_charmap(path: str) -> frozenset[int]:
    """The code points a font file has glyphs for (read once per file)."""
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(path).get_charmap())


def plot_delta_logits(report: list[TokenDelta], path: str, *, title: str = "DPS: Δ-logits (full − masked)") -> str:
    """Grid plot: one column per generated token, promoted tokens above and suppressed below, coloured by Δ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not report:
        raise ValueError("empty Δ-logits report: nothing to plot")
    k = len(report[0].promoted)
    grid = np.zeros((2 * k, len(report)))
    labels = [["" for _ in report] for _ in range(2 * k)]
    for j, step in enumerate(report):
        for i, (text, value) in enumerate(step.promoted):
            grid[i, j], labels[i][j] = value, text
        for i, (text, value) in enumerate(step.suppressed):
            grid[k + i, j], labels[k + i][j] = value, text
    lim = float(np.abs(grid).max()) or 1.0
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(report)), 0.45 * 2 * k + 1.6))
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(2 * k):
        for j in range(len(report)):
            ax.text(j, i, token_label(labels[i][j]), ha="center", va="center", fontsize=7)
    ax.axhline(k - 0.5, color="black", lw=1)
    ax.set_xticks(range(len(report)), [token_label(s.token) for s in report], rotation=60, fontsize=8)
    ax.set_yticks([k / 2 - 0.5, 1.5 * k - 0.5], ["promoted", "suppressed"])
    ax.set_xlabel("generated token")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="Δ (full − masked)")
    fig.tight_layout()
    from pathlib import Path

    from ..runs.files import save_figure

    save_figure(Path(path), fig)  # atomic: a run killed here leaves the old picture or the new one, never half
    return path
