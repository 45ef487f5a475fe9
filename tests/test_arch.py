"""The architecture adapter on all supported families (tiny random configs) and on the real local models."""

import pytest
import torch

from harness.intervene.ablation import ablate
from harness.models.arch import ModelShape, family_of, out_proj, shape_of
from harness.intervene.heads import HeadSet
from reference_hooks import hooked_ablation

EXPECTED_PROJ = {"llama": "o_proj", "qwen2": "o_proj", "mistral": "o_proj", "gemma3_text": "o_proj",
                 "gpt2": "c_proj", "gpt_neox": "dense"}


@pytest.mark.parametrize("family", sorted(EXPECTED_PROJ))
def test_adapter_finds_the_attention_output_projection(tiny_models, family):
    model = tiny_models[family]
    shape = shape_of(model.config)
    hf = model._module
    proj = out_proj(hf, 2)
    name = [n for n, m in hf.named_modules() if m is proj][0]
    assert name.endswith(EXPECTED_PROJ[family]) and ".2." in name
    in_features = proj.weight.shape[0] if family == "gpt2" else proj.in_features  # Conv1D stores W as [in, out]
    assert in_features == shape.proj_in == shape.n_heads * shape.head_dim
    assert shape.n_layers == 3 and shape.n_heads == 4


@pytest.mark.parametrize("family", sorted(EXPECTED_PROJ))
def test_adapter_finds_the_unembedding(tiny_models, family):
    from harness.models.arch import unembed

    hf = tiny_models[family]._module
    assert unembed(hf) is hf.get_output_embeddings()


def test_gqa_and_head_dim_are_read_from_config(tiny_models):
    assert shape_of(tiny_models["llama"].config).n_kv_heads == 2
    assert shape_of(tiny_models["mistral"].config).n_kv_heads == 1
    gemma = shape_of(tiny_models["gemma3_text"].config)
    assert gemma.head_dim == 16 and gemma.proj_in == 64  # wider than the residual (32): a slice of the input
    assert shape_of(tiny_models["gpt2"].config).n_kv_heads == 4


@pytest.mark.parametrize("family", sorted(EXPECTED_PROJ))
def test_harness_ablation_equals_hook_ablation_on_every_family(tiny_models, family):
    model = tiny_models[family]
    shape = shape_of(model.config)
    heads = HeadSet.parse("L0H1,L2H0,L2H3")
    text = "a small test sentence for ablation"
    with model.trace(text):
        ablate(model, heads)
        got = model.output.logits.save()
    ids = model.tokenizer(text, return_tensors="pt")
    with hooked_ablation(model._module, {0: [1], 2: [0, 3]}, shape.head_dim), torch.no_grad():
        want = model._module(**ids).logits
    with torch.no_grad():
        clean = model._module(**ids).logits
    assert torch.equal(got, want)
    assert not torch.allclose(got, clean)


def test_unknown_family_is_a_clear_error():
    class Cfg:
        model_type = "mamba"
    with pytest.raises(NotImplementedError, match="mamba"):
        family_of(Cfg())


def test_smollm2_shape(smollm):
    assert shape_of(smollm.config) == ModelShape(shape_of(smollm.config).name, 30, 9, 64, 3)


@pytest.mark.slow
def test_gemma3_materializes_and_has_its_shape():
    from harness.models.registry import load_model

    gemma = load_model("gemma3-270m")
    s = shape_of(gemma.config)
    assert (s.n_layers, s.n_heads, s.head_dim, s.n_kv_heads) == (18, 4, 256, 1)
    assert out_proj(gemma._module, 0).in_features == 1024
    with gemma.trace("The capital of France is"):
        ablate(gemma, HeadSet.parse("L5H0-3"))
        logits = gemma.output.logits.save()
    assert torch.isfinite(logits).all()
