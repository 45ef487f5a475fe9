"""Architecture adapter: the one place that knows where each family keeps its attention output projection.

A head's contribution to the residual stream is ``W_O[:, slice_h] @ z_h``, where ``z_h`` is the head's slice of
the *input* of the output projection (``o_proj`` / ``c_proj`` / ``dense``). Every ablation in the harness edits that
input, so this module only has to say where the projection is and how wide each head's slice is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    """Where a model family keeps its layers and the attention output projection inside each layer."""

    layers: str  # dotted path from the top model to the list of blocks
    out_proj: str  # dotted path from a block to the attention output projection
    attention: str  # dotted path from a block to the attention module
    unembed: str = "lm_head"  # dotted path from the top model to the output (unembedding) projection


_LLAMA_LIKE = Family(layers="model.layers", out_proj="self_attn.o_proj", attention="self_attn")

FAMILIES: dict[str, Family] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "olmo2": _LLAMA_LIKE,
    "gpt2": Family(layers="transformer.h", out_proj="attn.c_proj", attention="attn"),
    "gpt_neox": Family(layers="gpt_neox.layers", out_proj="attention.dense", attention="attention"),
}


@dataclass(frozen=True)
class ModelShape:
    """Head geometry of a model: what a head set is validated against."""

    name: str
    n_layers: int
    n_heads: int
    head_dim: int
    n_kv_heads: int

    @property
    def n_total(self) -> int:
        return self.n_layers * self.n_heads

    @property
    def proj_in(self) -> int:
        """Width of the output projection's input (= n_heads * head_dim; not always the residual width)."""
        return self.n_heads * self.head_dim

    def __str__(self) -> str:
        return (f"{self.name}: {self.n_layers} layers x {self.n_heads} heads "
                f"(head_dim {self.head_dim}, {self.n_kv_heads} kv heads)")


def _first(config: Any, *names: str) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    raise ValueError(f"config of type {type(config).__name__} has none of {names}")


def _text_config(config: Any) -> Any:
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def family_of(config: Any) -> Family:
    """The adapter entry for ``config.model_type``; unknown families are a clear error."""
    model_type = _text_config(config).model_type
    if model_type not in FAMILIES:
        raise NotImplementedError(
            f"no architecture adapter for model_type {model_type!r}; known: {sorted(FAMILIES)}. "
            "Add a Family(layers=..., out_proj=..., attention=...) entry in harness/models/arch.py."
        )
    return FAMILIES[model_type]


def shape_of(config: Any, name: str | None = None) -> ModelShape:
    """Read the head geometry from a transformers config (works on the meta model NDIF clients hold)."""
    config = _text_config(config)
    family_of(config)
    n_heads = int(_first(config, "num_attention_heads", "n_head"))
    hidden = int(_first(config, "hidden_size", "n_embd"))
    head_dim = getattr(config, "head_dim", None) or hidden // n_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    return ModelShape(
        name=name or getattr(config, "_name_or_path", "") or config.model_type,
        n_layers=int(_first(config, "num_hidden_layers", "n_layer")),
        n_heads=n_heads,
        head_dim=int(head_dim),
        n_kv_heads=int(n_kv),
    )


def _walk(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def block(model: Any, layer: int) -> Any:
    """Transformer block ``layer`` (envoy or torch module)."""
    return _walk(model, family_of(model.config).layers)[layer]


def out_proj(model: Any, layer: int) -> Any:
    """The attention output projection of ``layer``: an nnsight envoy for an nnsight model, else the torch module."""
    family = family_of(model.config)
    return _walk(_walk(model, family.layers)[layer], family.out_proj)


def attention(model: Any, layer: int) -> Any:
    """The attention module of ``layer`` (envoy or torch module, like ``out_proj``)."""
    family = family_of(model.config)
    return _walk(_walk(model, family.layers)[layer], family.attention)


def unembed(model: Any) -> Any:
    """The output projection to the vocabulary (envoy or torch module)."""
    return _walk(model, family_of(model.config).unembed)
