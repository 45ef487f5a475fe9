"""Tiny random-weight model configs of the supported families, shared by ``conftest.tiny_models`` and
``test_cuda`` (which runs with ``--noconftest`` on the device machine, where the loopback NDIF packages are missing,
so it cannot use the fixture itself)."""

from __future__ import annotations

FAMILIES = ("llama", "qwen2", "mistral", "gemma3_text", "gpt2", "gpt_neox")


def tiny_config(family: str, vocab: int, *, width: int = 32, layers: int = 3, sliding_window: int | None = None,
                attn: str | None = None):
    """A ``family`` config with 4 heads, ``layers`` layers and hidden size ``width`` (kv heads: llama and qwen2 2,
    mistral and gemma3_text 1); ``sliding_window`` sets Gemma-3's window, ``attn`` the attention implementation."""
    from transformers import (GPT2Config, GPTNeoXConfig, Gemma3TextConfig, LlamaConfig, MistralConfig,
                              Qwen2Config)

    common = dict(vocab_size=vocab, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                  num_attention_heads=4, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if family == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_embd=width, n_layer=layers, n_head=4, n_positions=4 * width,
                         bos_token_id=None, eos_token_id=None)
    elif family == "gemma3_text":
        extra = {} if sliding_window is None else {"sliding_window": sliding_window}
        cfg = Gemma3TextConfig(**common, num_key_value_heads=1, head_dim=16, **extra)
    else:
        classes = {"llama": (LlamaConfig, 2), "qwen2": (Qwen2Config, 2), "mistral": (MistralConfig, 1),
                   "gpt_neox": (GPTNeoXConfig, None)}  # family -> (config class, kv heads; None: the class has none)
        if family not in classes:
            raise ValueError(f"no tiny config for family {family!r}; known: {', '.join(FAMILIES)}")
        cls, kv = classes[family]
        cfg = cls(**common, **({} if kv is None else {"num_key_value_heads": kv}))
    if attn is not None:
        cfg._attn_implementation = attn
    return cfg
