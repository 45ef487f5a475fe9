"""Preference Contribution Score: how much the user's gold-output loss rises when one head is ablated.

``PCS(h) = E_x[L(M without h; x) - L(M; x)]`` with the profile in the prompt; the *profile-contrast* PCS subtracts
the same difference measured on the no-profile twin of the prompt, isolating what the head does with the profile.
L is the mean token NLL of the gold output. Per-example effects per prompt variant and the families built from
them (PCS, profile-contrast and user-specific PCS) are ``harness.scorers.ranking``'s ``ConditionEffects`` and head scorers.

Exact scores batch many heads into one forward (one head set per batch row) and reuse the clean computation below
the first ablated layer: an ablation at layer l cannot change layers < l, so those blocks are skipped and fed their
clean outputs. Attribution scores (AtP) approximate every head from one forward and one backward pass.
Everything runs inside one ``model.session`` on the caller's ``Backend``: one request per example remotely.

Every function takes the ablation design as one ``Ablation(mode, reference, positions)``; scoring supports the
positions ``all``, ``target`` and ``profile``. ``positions="target"`` ablates only at the target positions (those whose
logits predict the gold tokens). The
prompt below them is then the same for every head set, so it runs once and each batch of sets is one forward over
the gold tokens only, attending to the cached prompt (``harness.intervene.prompt_cache``); ``reuse_prompt=False`` re-runs the
whole sequence instead and gives the same losses.
"""

from __future__ import annotations

from typing import Any, Sequence

import nnsight
import torch

from ..data.tokens import SCORED_POSITIONS, TokenizedInput
from .ablation import Ablation, ablate
from ..models.arch import block, out_proj, shape_of, unembed
from ..models.remote import LOCAL, Backend
from .heads import Head, HeadSet, all_heads
from .prompt_cache import batch_cache, continuation, grouped_kv_attention, window_reference


# Head sets per forward (one per row). For positions="target", measured with benchmarks/target_ablation_speed.py
# (150 sets, 1024 + 64 tokens, 2 CPU cores): peak RSS while scoring, SmolLM2-135M 1.6 / 2.3 / 3.5 / 5.7 / 11.8 GB
# at 8 / 16 / 32 / 64 / 150 rows (~72 MB a row: the row's copy of the prompt KV plus its logits), Gemma-3-270M
# (262k vocabulary) 3.1 / 4.4 / 6.9 / 11.7 GB at 8 / 16 / 32 / 64; seconds per set flat from 8 to 32 rows on SmolLM2
# (0.09) and up from 32 on Gemma-3 (0.16 at 16, 0.18 at 32, 0.23 at 64). 16 is the fastest on both and leaves a
# 24 GB, 2-core machine most of its memory. (It was already the all-positions default.)
BATCH_SIZE = 16


def target_nll(logits: torch.Tensor, ids: torch.Tensor, n_target: int, *, per_token: bool = False) -> torch.Tensor:
    """Mean NLL of the last ``n_target`` tokens of ``ids`` under ``logits`` ([B, T, V]); one value per row
    (``per_token``: the [B, n_target] NLLs themselves, e.g. for a planted rule's marker tokens).

    ``logits`` may also cover only the ``n_target`` predicting positions ([B, n_target, V], see ``traced_nll``).
    """
    t = ids.shape[-1]
    pred = logits if logits.shape[1] == n_target else logits[:, t - n_target - 1: t - 1]
    pred = pred.to(torch.promote_types(pred.dtype, torch.float32)).log_softmax(-1)  # bf16/fp16 -> fp32, fp64 kept
    gold = ids[..., t - n_target:].to(pred.device).expand(pred.shape[0], -1)  # a hosted model's logits are on its GPU
    nll = -pred.gather(-1, gold[..., None]).squeeze(-1)  # [B, n_target]
    return nll if per_token else nll.mean(-1)


def traced_nll(model: Any, ids: torch.Tensor, n_target: int, *, offset: int = 0,
               per_token: bool = False) -> torch.Tensor:
    """Inside a trace: unembed only the positions that predict the target (saves the vocabulary projection of the
    whole prompt), and return the target's mean NLL per row.

    ``offset``: sequence index of the traced input's first token (a forward continuing a cached prompt).
    """
    head = unembed(model)
    t = ids.shape[-1]
    head.input = head.input[:, t - n_target - 1 - offset: t - 1 - offset]
    return target_nll(model.output.logits, ids, n_target, per_token=per_token)


def token_nlls(model: Any, item: TokenizedInput, *, backend: Backend = LOCAL) -> torch.Tensor:
    """The clean model's NLL of each gold token, ``[n_target]`` (their mean is ``ablated_losses``' clean loss)."""
    ids = item.ids[None]  # [1, T]
    with model.trace(input_ids=ids, use_cache=False, remote=backend.remote):
        nll = nnsight.save(traced_nll(model, ids, item.n_target, per_token=True))
    return nll[0].detach().cpu()


def _expand_rows(value: Any, rows: int) -> Any:
    """Repeat a single-row block output (tensor or tuple whose first item is the hidden state) to ``rows`` rows."""
    if isinstance(value, torch.Tensor):
        return value.expand(rows, *value.shape[1:])
    return (value[0].expand(rows, *value[0].shape[1:]),) + tuple(value[1:])


def _device(model: Any) -> torch.device:
    """Where the model's weights are (``meta`` for an NDIF client)."""
    return next(model._module.parameters()).device


def lowest_layer(hs: HeadSet) -> int:
    """The lowest layer a head set ablates (its heads are sorted); an empty set ablates none: past every layer. The
    blocks below it are what ``ablated_losses`` skips, and ``harness.study.plan`` counts."""
    return hs.heads[0].layer if len(hs) else 10**9


def _scoring_inputs(feed: torch.Tensor, rows: int, prompt: Any, start: int) -> dict[str, Any]:
    """``model.trace`` keywords of one scoring forward of ``rows`` rows over ``feed`` (``[1, n]``): the whole sequence
    (``prompt`` None), or the tokens after a cached prompt of ``start`` tokens, each batch with its own cache."""
    ids = feed.expand(rows, -1)  # [rows, n]
    if prompt is None:
        return {"input_ids": ids, "use_cache": False}
    return {**continuation(ids, start), "cache": batch_cache(prompt, rows)}


def ablated_losses(model: Any, item: TokenizedInput, sets: Sequence[HeadSet], ablation: Ablation = Ablation(), *,
                   batch_size: int | None = BATCH_SIZE, reuse_prefix: bool = True, reuse_prompt: bool = True,
                   per_token: bool = False, backend: Backend = LOCAL) -> tuple[Any, torch.Tensor]:
    """Gold-output loss of one input with each head set ablated: ``(clean_loss, losses[len(sets)])``.

    ``per_token``: the gold tokens' NLLs instead of their mean, ``(clean[n_target], losses[len(sets), n_target])``
    (a planted rule's marker tokens are a subset of them; their means are the default's losses).

    ``ablation``: the mode, reference and positions of every set's ablation. Its ``positions``: ``"all"`` ablates every
    position; ``"target"`` only the positions that predict the gold tokens (``item.target_positions``); ``"profile"``
    only the profile block's tokens (``item.profile``). Sets are sorted by their first layer and batched ``batch_size``
    rows per forward (one set per row; None: ``BATCH_SIZE``). ``reuse_prefix`` skips the blocks below a batch's first
    ablated layer, feeding them their clean outputs. With ``"target"``, ``reuse_prompt`` runs the prompt below the
    target positions once and each batch over the gold tokens only; ``False`` re-runs the whole sequence (the reference
    it is tested against). All traces run in one ``model.session`` (one request remotely).
    """
    where = item.positions(ablation.supported("ablated_losses", SCORED_POSITIONS).positions)
    mode = ablation.mode  # the session body reads the mode and the (windowed) reference, not the whole design
    shape = shape_of(model.config)
    sets = [HeadSet(s).validate(shape) for s in sets]
    batch_size = batch_size or BATCH_SIZE
    order = sorted(range(len(sets)), key=lambda i: (lowest_layer(sets[i]), i))
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    firsts = [min(lowest_layer(sets[i]) for i in c) if reuse_prefix else 0 for c in chunks]
    firsts = [min(f, shape.n_layers) for f in firsts]
    ids = item.ids[None]  # [1, T]
    n_target = item.n_target
    per_set = (n_target,) if per_token else ()  # each set's loss: one mean, or one NLL per gold token
    target = item.target_positions
    cached = ablation.positions == "target" and reuse_prompt and target.start > 0
    start = target.start if cached else 0  # sequence index of each scoring forward's first token
    feed = ids[:, start:target.stop] if cached else ids  # [1, n_target] or [1, T]
    at = None if cached else where  # where the ablation acts within `feed` (a cached prompt: all of it)
    ref = window_reference(ablation.reference, target, ids.shape[1]) if cached else ablation.reference
    deepest = max(firsts, default=0)
    local_cpu = backend.kind == "local" and _device(model).type == "cpu"
    with grouped_kv_attention(cached and local_cpu), model.session(remote=backend.remote):
        prompt = None
        if cached:
            with model.trace(ids[:, :start], use_cache=True):
                prompt = model.output.cache
        with model.trace(**_scoring_inputs(feed, 1, prompt, start)):
            clean_out = [block(model, k).output for k in range(deepest)]
            clean = traced_nll(model, ids, n_target, offset=start, per_token=per_token)
        losses = []
        for chunk, first in zip(chunks, firsts):
            rows = len(chunk)
            with model.trace(**_scoring_inputs(feed, rows, prompt, start)):
                for k in range(first):
                    block(model, k).skip(_expand_rows(clean_out[k], rows))
                ablate(model, [sets[i] for i in chunk], mode=mode, reference=ref, at=at)
                losses.append(traced_nll(model, ids, n_target, offset=start, per_token=per_token))
        all_losses = nnsight.save(torch.cat(losses) if losses else torch.zeros(0, *per_set))
        clean_loss = nnsight.save(clean)
    out = torch.empty(len(sets), *per_set)
    out[[i for c in chunks for i in c]] = all_losses.detach().cpu().to(out.dtype)
    if per_token:
        return clean_loss[0].detach().cpu().to(out.dtype), out
    return float(clean_loss[0]), out


def head_effects(model: Any, item: TokenizedInput, heads: Sequence[Head] | HeadSet | None = None,
                 ablation: Ablation = Ablation(), *, batch_size: int | None = None, reuse_prefix: bool = True,
                 reuse_prompt: bool = True, backend: Backend = LOCAL) -> tuple[float, torch.Tensor]:
    """Exact per-head loss increase on one input: returns ``(clean_loss, deltas)``, deltas aligned with ``heads``.

    ``batch_size`` heads share a forward (default: one layer's heads); ``ablation`` and the reuse switches are those
    of ``ablated_losses``.
    """
    ablation.supported("head_effects", SCORED_POSITIONS)
    shape = shape_of(model.config)
    heads = list(all_heads(shape)) if heads is None else [h if isinstance(h, Head) else Head(*h) for h in heads]
    clean, losses = ablated_losses(model, item, [HeadSet([h]) for h in heads], ablation,
                                   batch_size=batch_size or shape.n_heads,
                                   reuse_prefix=reuse_prefix, reuse_prompt=reuse_prompt, backend=backend)
    return clean, losses - clean


def head_attributions(model: Any, item: TokenizedInput, ablation: Ablation = Ablation(), *,
                      backend: Backend = LOCAL) -> tuple[float, torch.Tensor]:
    """Attribution-patching estimate of every head's loss increase from one forward + one backward pass.

    ``delta_h ~= sum_t (r_h,t - z_h,t) . dL/dz_h,t`` with z the head's slice of the output projection's input and r
    its replacement (``ablation.mode``: 0, mean, resample); t runs over ``ablation.positions``: every position, the
    ``item.target_positions`` with ``"target"`` (the estimate of ``head_effects`` under the same design), or the
    profile block's tokens with ``"profile"``. Weights are frozen (as on
    NDIF): the gradient comes from the activations, marked ``requires_grad_(True)`` inside the trace (the first
    layer's; later ones then carry the graph). Returns ``(clean_loss, deltas[n_layers, n_heads])``.
    """
    where = item.positions(ablation.supported("head_attributions", SCORED_POSITIONS).positions)
    mode, reference = ablation.mode, ablation.reference  # what the trace body reads
    shape = shape_of(model.config)
    ids = item.ids[None]  # [1, T]
    at = slice(None) if where is None else where
    with torch.enable_grad(), model.trace(ids, use_cache=False, remote=backend.remote):  # callers may run under no_grad
        zs = []
        for layer in range(shape.n_layers):
            z = out_proj(model, layer).input
            if not z.requires_grad:  # frozen weights: the first head activations start the graph
                z.requires_grad_(True)
            zs.append(z)
        loss = traced_nll(model, ids, item.n_target)
        grads = []
        with loss.sum().backward():
            for z in reversed(zs):
                grads.append(z.grad)
        est = []
        for layer, (z, g) in enumerate(zip(zs, reversed(grads))):
            r = torch.zeros_like(z) if mode == "zero" else reference.replacement(layer, z)
            contrib = ((r - z.detach()) * g)[0, at]  # [t, n_heads * head_dim]
            est.append(contrib.reshape(-1, shape.n_heads, shape.head_dim).sum(dim=(0, 2)))
        deltas = nnsight.save(torch.stack(est))
        clean_loss = nnsight.save(loss.detach())
    return float(clean_loss[0]), deltas.detach().cpu()


