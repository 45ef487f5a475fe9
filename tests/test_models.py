"""Model registry and one-time GGUF materialization."""

import pytest
import torch

from harness.models import known_models, load_model, resolve
from harness.provision import MARKER, SOURCES, load_gguf, materialize, smollm2_gguf


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


def test_materialize_into_empty_cache_writes_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))

    class Boom(RuntimeError):
        pass

    def failing_locate():
        raise Boom()

    from harness.provision import GGUFSource

    with pytest.raises(Boom):
        materialize(GGUFSource("broken", failing_locate, "test"))
    assert not (tmp_path / "models" / "broken").exists()


@pytest.mark.slow
def test_cached_folder_gives_the_same_logits_as_the_gguf(smollm):
    gguf_model, tok = load_gguf(smollm2_gguf())
    ids = tok("Personalization starts with the user's own words.", return_tensors="pt")
    with torch.no_grad():
        want = gguf_model(**ids).logits
        got = smollm._module(**ids).logits
    assert torch.equal(got, want)
