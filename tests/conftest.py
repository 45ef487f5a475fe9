"""Shared fixtures: the real local model is loaded once per test session (materialized once per machine)."""

from __future__ import annotations

import os
import warnings

import pytest

# The loopback NDIF stack and its tiny model are session fixtures shared by every remote test module
# (one redis/API/worker set per test session, not one per module).
from ndif_service import client, local, ndif_stack, restore_nnsight_config, tiny_llama_dir  # noqa: F401,E402

warnings.filterwarnings("ignore", category=DeprecationWarning)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm():
    """SmolLM2-135M-Instruct as an nnsight model (sdpa attention), shared by every test in the session."""
    from harness.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def smollm_eager():
    """The same weights with eager attention, for tests that read attention weights."""
    from harness.models import load_model

    return load_model("smollm2-135m", attn_implementation="eager")


@pytest.fixture(scope="session")
def tokenizer(smollm):
    """SmolLM2's tokenizer (a real BPE tokenizer that needs no hub)."""
    return smollm.tokenizer


@pytest.fixture(scope="session")
def tiny_models(tokenizer):
    """Randomly initialised tiny models of the five supported families, built from config classes (no download)."""
    import torch
    from nnsight import TransformersModel
    from transformers import (AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, Gemma3TextConfig, LlamaConfig,
                              MistralConfig, Qwen2Config)

    vocab = len(tokenizer)
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                  num_attention_heads=4, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    configs = {
        "llama": LlamaConfig(**common, num_key_value_heads=2),
        "qwen2": Qwen2Config(**common, num_key_value_heads=2),
        "mistral": MistralConfig(**common, num_key_value_heads=1),
        "gemma3_text": Gemma3TextConfig(**common, num_key_value_heads=1, head_dim=16),
        "gpt2": GPT2Config(vocab_size=vocab, n_embd=32, n_layer=3, n_head=4, n_positions=128,
                           bos_token_id=None, eos_token_id=None),
        "gpt_neox": GPTNeoXConfig(**common),
    }
    models = {}
    for name, config in configs.items():
        torch.manual_seed(0)
        hf = AutoModelForCausalLM.from_config(config).eval().requires_grad_(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            models[name] = TransformersModel(hf, tokenizer=tokenizer)
    return models


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A tiny random Llama saved as an HF folder with SmolLM2's tokenizer: studies load it by path, in seconds."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.eos_token_id)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
