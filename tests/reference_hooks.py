"""An independent head-ablation implementation with plain torch forward pre-hooks (no nnsight, no harness code).

It is the yardstick the harness's declarative ablation is tested against, and the baseline of the benchmarks.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


def _proj(hf_model, layer: int):
    """Attention output projection of ``layer``, found by name (deliberately not via harness.models.arch)."""
    for name, module in hf_model.named_modules():
        parts = name.split(".")
        if len(parts) >= 2 and parts[-1] in ("o_proj", "c_proj", "dense") and str(layer) in parts:
            if parts[-2] in ("self_attn", "attn", "attention") and parts[parts.index(str(layer)) - 1] in ("layers", "h"):
                return module
    raise KeyError(layer)


@contextmanager
def hooked_ablation(hf_model, heads: dict[int, list[int]], head_dim: int, replacement=None, positions=None):
    """Ablate {layer: [heads]} on the projection input; ``replacement[layer]`` is [D] or [T, D] (None = zero).

    ``positions``: a slice of the sequence axis to ablate (None = every position); a [T, D] replacement is read at
    the same positions.
    """
    handles = []
    at = slice(None) if positions is None else positions
    for layer, hs in heads.items():
        def pre(module, args, layer=layer, hs=hs):
            x = args[0].clone()
            for h in hs:
                sl = slice(h * head_dim, (h + 1) * head_dim)
                if replacement is None:
                    x[..., at, sl] = 0.0
                else:
                    r = replacement[layer]
                    r = r[: x.shape[-2]][at] if r.dim() == 2 else r
                    x[..., at, sl] = r[..., sl].to(x.dtype)
            return (x,) + tuple(args[1:])
        handles.append(_proj(hf_model, layer).register_forward_pre_hook(pre))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def logits(hf_model, tokenizer, text: str) -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return hf_model(**ids).logits
