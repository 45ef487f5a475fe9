"""Model registry and one-time GGUF materialization."""

import os
from pathlib import Path

import pytest
import torch

from harness.models.registry import known_models, load_model, resolve
from harness.models.provision import MARKER, SOURCES, load_gguf, materialize, smollm2_gguf


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError) as e:
        resolve("smollm3")
    assert "smollm2-135m" in str(e.value) and "gemma3-270m" in str(e.value)


def test_registry_names_the_two_offline_models():
    assert {"smollm2-135m", "gemma3-270m"} <= set(known_models())


def test_loaded_weights_are_frozen(smollm):
    assert not any(p.requires_grad for p in smollm._module.parameters())


def test_materialized_folder_is_plain_and_reused(smollm):
    folder = materialize(SOURCES["smollm2-135m"])
    assert (folder / MARKER).exists() and (folder / "model.safetensors").exists()
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert materialize(SOURCES["smollm2-135m"]) == folder  # second call does no work
    assert load_model("smollm2-135m") is smollm  # one copy per process


class Boom(RuntimeError):
    """The failure a test injects into materialization."""


class StubTokenizer:
    """Stands in for the GGUF's tokenizer: writes one file, or fails when told to."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def save_pretrained(self, folder) -> None:
        if self.fail:
            raise Boom("tokenizer could not be written")
        (Path(folder) / "tokenizer.json").write_text("{}")


def _tiny_source(tmp_path, monkeypatch, tokenizer: StubTokenizer):
    """A GGUF source whose 'dequantized' model is a tiny random Llama (no real GGUF is read)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import harness.models.provision as provision

    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1)
    monkeypatch.setattr(provision, "load_gguf", lambda path: (LlamaForCausalLM(cfg).eval(), tokenizer))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return provision.GGUFSource("tiny", lambda: gguf, "test")


@pytest.mark.parametrize("fail_at", ["tokenizer", "replace"])
def test_materialize_failing_after_the_weights_are_written_leaves_no_folder_and_no_temporary(
        tmp_path, monkeypatch, fail_at):
    import harness.models.provision as provision

    source = _tiny_source(tmp_path, monkeypatch, StubTokenizer(fail=fail_at == "tokenizer"))
    written = []
    real_replace = os.replace

    def replace(src, dst):
        written.extend(p.name for p in Path(src).iterdir())  # the temporary folder was complete up to here
        if fail_at == "replace":
            raise Boom("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(provision.os, "replace", replace)
    with pytest.raises(Boom):
        materialize(source)
    models = tmp_path / "cache" / "models"
    assert not (models / "tiny").exists()
    assert list(models.iterdir()) == []  # the temporary folder is gone too
    if fail_at == "replace":
        assert {"model.safetensors", "tokenizer.json", MARKER} <= set(written)


def test_materialize_renames_a_complete_folder_into_place(tmp_path, monkeypatch):
    folder = materialize(_tiny_source(tmp_path, monkeypatch, StubTokenizer()))
    assert folder == tmp_path / "cache" / "models" / "tiny"
    assert {"model.safetensors", "config.json", "tokenizer.json", MARKER} <= {p.name for p in folder.iterdir()}
    assert [p.name for p in folder.parent.iterdir()] == ["tiny"]


@pytest.mark.slow
def test_cached_folder_gives_the_same_logits_as_the_gguf(smollm):
    gguf_model, tok = load_gguf(smollm2_gguf())
    ids = tok("Personalization starts with the user's own words.", return_tensors="pt")
    with torch.no_grad():
        want = gguf_model(**ids).logits
        got = smollm._module(**ids).logits
    assert torch.equal(got, want)


def test_place_moves_weights_once_and_keeps_one_input_hook(tiny_models):
    """`place` (how tests/test_cuda.py puts a model on a GPU): placing again replaces its input hook rather than
    stacking a second, the module's weights land on the device, and the scores are unchanged (CPU here)."""
    import copy

    from nnsight import TransformersModel

    from harness.models.registry import place
    from harness.data.tokens import TokenizedInput
    from harness.intervene.pcs import token_nlls

    base = tiny_models["llama"]
    model = TransformersModel(copy.deepcopy(base._module), tokenizer=base.tokenizer)
    item = TokenizedInput(torch.arange(5, 37), n_target=8)
    before = token_nlls(model, item)
    hooks = len(model._module._forward_pre_hooks)
    place(model, "cpu")
    place(model, torch.device("cpu"))
    assert len(model._module._forward_pre_hooks) == hooks + 1
    assert {p.device.type for p in model._module.parameters()} == {"cpu"}
    assert torch.equal(token_nlls(model, item), before)
