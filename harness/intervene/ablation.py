"""Head ablation, declared inside a tracing context the caller opened.

A head is ablated on its slice of the **input** of the attention output projection (``o_proj`` / ``c_proj`` /
``dense``): ``z[..., h*d:(h+1)*d]`` is replaced by zero, by the head's mean over a reference set, or by its value on
another example. Editing the projection's *output* instead would remove residual-stream dimensions, not a head.
In GQA models each query head owns its own slice of that input, so heads sharing a kv head are ablated independently.

Usage (local or remote, in a trace, a generate or a session)::

    with model.trace(prompt):
        ablate(model, HeadSet.parse("L3H1,L7H0"))
        logits = model.output.logits.save()

``heads`` may also be a list with one head set per batch row: that is how PCS puts many heads in one forward and how
DPS ablates only the masked half of its batch.

What PCS, the ablation study and DPS are told is an ``Ablation(mode, reference, positions)``: one design value with
one vocabulary of positions (``POSITIONS``); each of them resolves the positions it supports to the sequence index
``ablate(..., at=...)`` acts on, and refuses the others by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import nnsight
import torch

from ..models.arch import ModelShape, out_proj, shape_of
from ..models.remote import LOCAL, Backend
from .heads import HeadSet, as_headset

MODES = ("zero", "mean", "resample")
# Where an ablation acts, one vocabulary for scoring and decoding; each function supports some of these names.
POSITIONS = {
    "all": "every position",
    "target": "the positions that predict the scored tokens: the gold tokens when scoring, the generated ones when "
              "decoding (the last prompt token on)",
    "profile": "the profile block's tokens (scoring)",
    "generated": "the generated tokens only (decoding)",
}


@dataclass
class Reference:
    """Replacement activations for mean / resample ablation: per layer, the output projection's input.

    ``mode == "mean"``: ``values[layer]`` has shape ``[n_heads * head_dim]`` (each head's mean over the reference
    tokens). ``mode == "resample"``: shape ``[T_src, n_heads * head_dim]`` from one source example; a target
    position ``t`` takes the source's position ``t``, and positions past the source's end (and KV-cached decoding
    steps, whose absolute position a step does not see) take the source's mean over its positions.
    """

    mode: str
    values: dict[int, torch.Tensor]
    n_tokens: int
    source: str = ""
    meta: dict = field(default_factory=dict)

    def replacement(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Replacement broadcastable to ``x`` (``[B, T, D]``) for ``layer``."""
        if layer not in self.values:
            raise KeyError(f"reference activations ({self.mode}, {self.source}) have no layer {layer}")
        v = self.values[layer].to(device=x.device, dtype=x.dtype)
        if self.mode == "mean":
            return v
        t = x.shape[-2]
        if t == 1 or v.shape[0] == 0:
            return v.mean(0)
        if v.shape[0] >= t:
            return v[:t]
        return torch.cat([v, v.mean(0, keepdim=True).expand(t - v.shape[0], -1)], 0)


@dataclass(frozen=True)
class Ablation:
    """An ablation design, the one value PCS, the ablation study and DPS accept: what replaces an ablated head's slice
    (``mode``: zero, mean, resample), the reference activations mean and resample take it from, and where it acts
    (``positions``, a name of ``POSITIONS``)."""

    mode: str = "zero"
    reference: Reference | None = field(default=None, compare=False, repr=False)
    positions: str = "all"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown ablation mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown ablation positions {self.positions!r}; choose one of {', '.join(POSITIONS)}")

    def supported(self, by: str, positions: Sequence[str]) -> "Ablation":
        """This design when ``by`` can ablate at its positions (one of ``positions``); otherwise a ValueError that
        names the position and what ``by`` supports."""
        if self.positions not in positions:
            raise ValueError(f"{by} cannot ablate at positions {self.positions!r} "
                             f"({POSITIONS[self.positions]}): it supports {', '.join(positions)}")
        return self


def _per_row(heads: Any, shape: ModelShape) -> list[HeadSet] | HeadSet:
    if isinstance(heads, (HeadSet, str)):
        return as_headset(heads, shape)
    if isinstance(heads, Sequence) and heads and all(isinstance(h, (HeadSet, str, type(None))) for h in heads):
        return [as_headset(h or HeadSet(), shape) for h in heads]
    return as_headset(heads, shape)


def drop_masks(heads: HeadSet | list[HeadSet], shape: ModelShape) -> dict[int, torch.Tensor]:
    """Per layer, a 0/1 mask over the projection input marking the ablated slices.

    Shape ``[D]`` for one head set, ``[B, 1, D]`` for one head set per batch row. Only layers with at least one
    ablated head appear, in ascending order (the order the forward pass reaches them).
    """
    rows = [heads] if isinstance(heads, HeadSet) else heads
    layers = sorted({h.layer for hs in rows for h in hs})
    masks: dict[int, torch.Tensor] = {}
    d = shape.head_dim
    for layer in layers:
        m = torch.zeros(len(rows), shape.proj_in)
        for r, hs in enumerate(rows):
            for h in hs.by_layer().get(layer, ()):
                m[r, h * d:(h + 1) * d] = 1.0
        masks[layer] = m[0] if isinstance(heads, HeadSet) else m[:, None, :]
    return masks


def ablate(model: Any, heads: HeadSet | str | list[HeadSet | None], *, mode: str = "zero",
           reference: Reference | None = None, at: Any = None) -> None:
    """Ablate ``heads`` in the forward pass being traced (call it inside ``model.trace`` / ``generate`` / invoke).

    ``heads``: a head set for every row, or a list with one head set per batch row (``None``/empty = untouched).
    ``mode``: ``"zero"``, ``"mean"`` or ``"resample"`` (the last two need ``reference``).
    ``at``: ``None`` for every position, else an index into the sequence axis (slice, list, bool mask): where an
    ``Ablation``'s positions fall in this forward's input.
    Call it before reading anything at or after the first ablated layer in the same invoke: nnsight visits modules
    in execution order.
    """
    if mode not in MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode != "zero":
        if reference is None:
            raise ValueError(f"{mode} ablation needs reference activations: build them with "
                             f"{'head_means(model, prompts)' if mode == 'mean' else 'capture(model, prompt)'}")
        if reference.mode != mode:
            raise ValueError(f"{mode} ablation was given a {reference.mode!r} reference")
    shape = shape_of(model.config)
    heads = _per_row(heads, shape)
    for layer, drop in drop_masks(heads, shape).items():
        proj = out_proj(model, layer)
        x = proj.input
        drop = drop.to(device=x.device, dtype=x.dtype)
        if at is not None:
            pos = torch.zeros(x.shape[-2], device=x.device, dtype=x.dtype)
            pos[at] = 1.0
            drop = drop * pos[:, None]
        if drop.dim() == 3 and drop.shape[0] != x.shape[0]:
            raise ValueError(f"{drop.shape[0]} per-row head sets for a batch of {x.shape[0]} rows at layer {layer}")
        keep = 1.0 - drop  # exact 0/1 factors: kept entries stay bit-identical, ablated ones equal the replacement
        if mode == "zero":
            proj.input = x * keep
        else:
            proj.input = x * keep + reference.replacement(layer, x) * drop


GENERATION_POSITIONS = ("all", "generated")


def ablate_generation(model: Any, tracer: Any, heads: Any, ablation: Ablation = Ablation()) -> None:
    """Ablate ``heads`` under ``ablation`` at every step of a ``generate`` (positions ``all``; ``generated``: skip the
    prompt pass, i.e. only the new tokens' positions).

    nnsight runs nothing after an open step loop in the same invoke: read results in a separate invoke.
    """
    ablation.supported("ablate_generation", GENERATION_POSITIONS)
    steps = tracer.iter[1:] if ablation.positions == "generated" else tracer.all()
    for _ in steps:
        ablate(model, heads, mode=ablation.mode, reference=ablation.reference)


def capture(model: Any, prompt: Any, *, layers: Sequence[int] | None = None, backend: Backend = LOCAL) -> Reference:
    """Record the output projections' inputs on ``prompt`` (one example) as a resample reference."""
    shape = shape_of(model.config)
    layers = list(range(shape.n_layers)) if layers is None else sorted(layers)
    with model.trace(prompt, remote=backend.remote):
        saved = nnsight.save([out_proj(model, layer).input[0].detach() for layer in layers])
    values = {layer: v.to("cpu", torch.float32) for layer, v in zip(layers, saved)}
    return Reference("resample", values, n_tokens=int(values[layers[0]].shape[0]), source=str(prompt)[:80])


def head_means(model: Any, prompts: Sequence[Any], *, layers: Sequence[int] | None = None,
               backend: Backend = LOCAL) -> Reference:
    """Each head's mean activation (output-projection input) over every token of ``prompts`` (one session)."""
    if not prompts:
        raise ValueError("mean ablation needs at least one reference prompt")
    shape = shape_of(model.config)
    layers = list(range(shape.n_layers)) if layers is None else sorted(layers)
    with model.session(remote=backend.remote):
        sums = [0.0 for _ in layers]
        count = 0
        for prompt in prompts:
            with model.trace(prompt):
                for i, layer in enumerate(layers):
                    x = out_proj(model, layer).input[0].detach()
                    sums[i] = sums[i] + x.sum(0)
                count = count + x.shape[0]
        means = nnsight.save(torch.stack(sums) / count)
        n_tokens = nnsight.save(count)
    values = {layer: means[i].to("cpu", torch.float32) for i, layer in enumerate(layers)}
    return Reference("mean", values, n_tokens=int(n_tokens), source=f"{len(prompts)} prompts")
