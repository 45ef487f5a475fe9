"""Run a prompt once, keep its KV cache, and continue it in many batch rows at once.

Causal attention means an edit at position t cannot reach positions < t. So when an ablation acts only from some
position on (PCS at the target positions, DPS at the positions that predict generated tokens), every row of a batch
shares the clean prompt below that position: it is computed once, its cache is reused by each batch, and the batch's
forward runs over the remaining tokens only. Their own keys and values are computed under the ablation, which is
what a full forward ablating those positions computes.

Usage (inside a session the caller opened; see ``harness.intervene.pcs.ablated_losses``)::

    with model.trace(ids[:, :start], use_cache=True):
        prompt = model.output.cache
    with model.trace(**continuation(ids[:, start:].expand(rows, -1), start), cache=batch_cache(prompt, rows)):
        ablate(model, sets)
"""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from .ablation import Reference

# Cache layers whose ``update`` rebinds ``keys``/``values`` to new tensors (``torch.cat``) instead of writing into
# them: for these a batch may share the prompt's tensors as expanded views. Others (static layers write in place)
# get real copies.
_FUNCTIONAL_LAYERS = ("DynamicLayer", "DynamicSlidingWindowLayer")


def _batch_tensor(x: torch.Tensor, repeats: int, share: bool) -> torch.Tensor:
    """``[B, H, S, D]`` -> ``[repeats * B, H, S, D]`` as ``[x; x; ...]``: a stride-0 view when B == 1 and ``share``."""
    if share and x.shape[0] == 1:
        return x.expand(repeats, *x.shape[1:])
    return x.repeat(repeats, *([1] * (x.dim() - 1)))


def batch_cache(cache: Any, repeats: int) -> Any:
    """A fresh cache holding ``repeats`` stacked copies of ``cache``'s batch (``[rows; rows; ...]``).

    ``cache`` itself is left untouched, so one prompt cache serves any number of batches (a forward mutates the
    cache object it is given). A single-row prompt is shared as an expanded view, not copied, wherever the layer
    type allows it; the forward's own ``torch.cat`` then materialises each layer once. Sliding-window layers keep
    their window and token count, so the continuation sees the same keys as a full forward.
    """
    new = copy.copy(cache)
    new.layers = []
    for layer in cache.layers:
        twin = copy.copy(layer)
        if getattr(layer, "is_initialized", False) and layer.keys is not None:
            share = type(layer).__name__ in _FUNCTIONAL_LAYERS
            twin.keys = _batch_tensor(layer.keys, repeats, share)
            twin.values = _batch_tensor(layer.values, repeats, share)
        new.layers.append(twin)
    return new


def continuation(ids: torch.Tensor, start: int) -> dict[str, Any]:
    """``model.trace`` keywords for a forward over ``ids`` (``[B, n]``) continuing a cached prompt of ``start`` tokens.

    Positions continue from ``start``. The attention mask covers the cached tokens too: nnsight 0.8.1 would
    otherwise add a mask of the input's width whenever the cache is passed as ``cache=`` (transformers 5's name),
    and the model would stop attending to the prompt.
    """
    rows, n = ids.shape
    return {"input_ids": ids,
            "attention_mask": torch.ones(rows, start + n, dtype=torch.long),
            "position_ids": torch.arange(start, start + n)[None].expand(rows, -1),
            "use_cache": True}


def window_reference(reference: Reference | None, positions: slice, length: int) -> Reference | None:
    """The reference a forward over only ``positions`` of a ``length``-token sequence needs.

    Mean references are position-free and come back unchanged. A resample reference's position ``t`` must come from
    the source's position ``t``, so its values are cut to the window of what a full forward would have used.
    """
    if reference is None or reference.mode != "resample":
        return reference
    values = {}
    for layer, v in reference.values.items():  # v: [T_src, D]
        full = reference.replacement(layer, v.new_empty(length, v.shape[-1]))  # [length, D]
        values[layer] = full[positions]  # [n, D]
    return Reference(reference.mode, values, reference.n_tokens, reference.source, dict(reference.meta))


@contextmanager
def grouped_kv_attention(enabled: bool = True) -> Iterator[None]:
    """Within the block, let transformers' sdpa attend grouped query heads to their shared kv heads in place
    (``enable_gqa``) even under an attention mask, instead of first copying each kv head per query head.

    A forward continuing a cached prompt always has a mask (its queries end the sequence), and transformers then
    copies the keys and values of the whole prompt per query head, per row: on CPU that copy was a third of
    target-position scoring's time (SmolLM2, 1024 + 64 tokens; same losses). transformers keeps the copy because
    CUDA's masked grouped kernel is the slow math one, so pass ``enabled`` only for local CPU runs. Not thread-safe:
    it sets transformers' ``TRANSFORMERS_SDPA_FORCE_GQA`` switch for the process while the block runs.
    """
    key = "TRANSFORMERS_SDPA_FORCE_GQA"
    before = os.environ.get(key)
    if enabled:
        os.environ[key] = "1"
    try:
        yield
    finally:
        if enabled:
            if before is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = before
