"""Shared fixtures (the real local model is loaded once per test session, materialized once per machine) and the
suite's two rules: every test that loads a real model is `slow`, and a test skipped for a missing install fails
under CI=true (locally it prints one loud line saying what to install)."""

from __future__ import annotations

import os
import re
import warnings

import pytest

# The loopback NDIF stack and its tiny model are session fixtures shared by every remote test module
# (one redis/API/worker set per test session, not one per module).
from ndif_service import (backend, client, local, ndif_stack, remote, restore_nnsight_config,  # noqa: F401,E402
                          tiny_llama_dir)

warnings.filterwarnings("ignore", category=DeprecationWarning)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Fixtures that load a real model or tokenizer (SmolLM2, or a tiny model built with its tokenizer), or start the
# loopback NDIF stack: a test using any of them, directly or through another fixture, is marked slow mechanically.
MODEL_FIXTURES = frozenset({"smollm", "smollm_eager", "gemma", "tokenizer", "tiny_models", "tiny_model_dir",
                            "tiny_llama_dir", "client", "local", "ndif_stack"})
# A skip whose reason matches this names a missing install, not a condition of the test.
MISSING_INSTALL = re.compile(r"not installed|install_ndif\.sh|install\.sh")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark slow every test that uses a model-loading fixture (explicit marks cover tests that load one directly)."""
    for item in items:
        if MODEL_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _fast_tests_load_no_model(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the `slow` marker honest: a test without it that loads weights or a tokenizer from disk fails, saying so."""
    if request.node.get_closest_marker("slow") is not None:
        return
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    def refuse(cls, *args, **kwargs):
        raise RuntimeError(f"{request.node.nodeid} loads a real model ({cls.__name__}.from_pretrained) but is not "
                           "marked slow: add @pytest.mark.slow or use a model fixture (tests/conftest.py)")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(PreTrainedTokenizerBase, "from_pretrained", classmethod(refuse))


def _install_hint(reason: str) -> str:
    """The command that installs what a skip reason says is missing."""
    return "bash scripts/install_ndif.sh" if "install_ndif" in reason else "bash install.sh"


def _skip_reason(report: pytest.TestReport) -> str | None:
    """Why a test was skipped, when the report is a skip."""
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return None
    return str(report.longrepr[2]).removeprefix("Skipped: ")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Under CI=true a skip for a missing install is a failure: CI must run every test, remote ones included."""
    outcome = yield
    report = outcome.get_result()
    reason = _skip_reason(report)
    if reason and MISSING_INSTALL.search(reason):
        report.user_properties.append(("missing_install", reason))
        if _in_ci():
            report.outcome = "failed"
            report.longrepr = (f"skipped for a missing install, which fails the run under CI=true: {reason}\n"
                               f"install it with: {_install_hint(reason)}")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """One loud line per install command that would have run the tests skipped for a missing install."""
    missing: dict[str, list[str]] = {}
    reports = [r for key in ("skipped", "error", "failed") for r in terminalreporter.stats.get(key, [])]
    for report in reports:
        for name, reason in getattr(report, "user_properties", ()):
            if name == "missing_install":
                missing.setdefault(_install_hint(reason), []).append(reason)
    for hint, reasons in missing.items():
        verb = "FAILED" if _in_ci() else "SKIPPED"
        terminalreporter.write_line(f"{verb}: {len(reasons)} tests need a missing install ({reasons[0]}); "
                                    f"run `{hint}` to run them", red=True, bold=True)


@pytest.fixture(scope="session")
def smollm():
    """SmolLM2-135M-Instruct as an nnsight model (sdpa attention), shared by every test in the session."""
    from harness.models.registry import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def smollm_eager():
    """The same weights with eager attention, for tests that read attention weights."""
    from harness.models.registry import load_model

    return load_model("smollm2-135m", attn_implementation="eager")


@pytest.fixture(scope="session")
def gemma():
    """Gemma-3-270M (a base model: no chat template; 18 layers x 4 heads, 1 kv head, sliding-window attention) as an
    nnsight model (sdpa attention), shared by every test in the session."""
    from harness.models.registry import load_model

    return load_model("gemma3-270m")


@pytest.fixture(scope="session")
def tokenizer(smollm):
    """SmolLM2's tokenizer (a real BPE tokenizer that needs no hub)."""
    return smollm.tokenizer


@pytest.fixture(scope="session")
def tiny_models(tokenizer):
    """Randomly initialised tiny models of the six supported families, built from config classes (no download)."""
    import torch
    from nnsight import TransformersModel
    from tiny_configs import FAMILIES, tiny_config
    from transformers import AutoModelForCausalLM

    configs = {family: tiny_config(family, len(tokenizer)) for family in FAMILIES}
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
