"""Provenance: the commit and package versions a run used, data and config hashes, and the command that reruns it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from .files import REPO, relative_path


PACKAGES = ("torch", "transformers", "nnsight", "numpy", "scipy", "statsmodels", "datasets", "bm25s", "rouge-score",
            "preference-heads-harness")


OUTPUT_PATHS = ("results", "paper/generated", "paper/main.pdf")  # what studies write into the checkout: not code


def git_commit() -> dict:
    """Commit hash of the harness checkout and whether the tree had uncommitted changes to anything but the outputs
    studies write into it (``OUTPUT_PATHS``: a study that rewrote ``results/summary.md`` leaves the code as
    committed, so the next study of a chain still runs from a clean commit)."""
    def run(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": run("rev-parse", "HEAD") or "unknown",
            "dirty": bool(run("status", "--porcelain", "--untracked-files=no", "--", ".",
                              *(f":(exclude){p}" for p in OUTPUT_PATHS)))}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def data_hash(examples: Iterable[Any]) -> str:
    """sha256 over the examples' ids, inputs, outputs and profiles: identifies the exact data a run used."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.example_id, ex.user_id, ex.input, ex.output, [p.text for p in ex.profile]]).encode())
    return h.hexdigest()


def hash_of(hashes: dict[str, str]) -> str:
    """One hash over named data hashes (order-free): the ``data_sha256`` of a run that reads other runs (their data
    hashes: ``harness.analysis.results.source_data``)."""
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def legacy_entry(old: dict) -> dict:
    """The provenance entry of a manifest written before provenance lists existed."""
    return {k: old.get(k) for k in ("commit", "dirty", "command", "started", "finished", "seconds")} | {
        "rows_computed": None}


def command_line() -> str:
    """The command that is running, as ``python -m <module> <args>`` with repository paths made relative."""
    args = [relative_path(a) for a in sys.argv[1:]]
    return " ".join(["python -m", _module_name(), *args])


def _module_name() -> str:
    return module_name(sys.modules.get("__main__"), fallback=sys.argv[0] if sys.argv else "?")


def module_name(module: Any, fallback: str = "?") -> str:
    """What ``python -m`` needs to run ``module``: its import name, also when it was started as a file path.

    ``python -m studies.x`` leaves the import name on ``__main__.__spec__``; ``python studies/x.py`` (or a runner that
    executes the file) leaves no spec, so the name comes from the file's path in the repository (``studies.x``), never
    the ``__main__`` that would not rerun.
    """
    spec = getattr(module, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return spec.name
    file = getattr(module, "__file__", None)
    if file:
        path = Path(file).resolve()
        if path.suffix == ".py" and path.is_relative_to(REPO):
            return ".".join(path.relative_to(REPO).with_suffix("").parts)
        return str(path)
    return fallback


def config_hash(numbers: dict[str, Any]) -> str:
    """A short, stable hash of a numbers config (canonical JSON, keys sorted)."""
    return hashlib.sha256(json.dumps(numbers, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``field: old -> new`` for every field that differs (a field missing on one side shows as <absent>)."""
    absent = "<absent>"
    return [f"{k}: {old.get(k, absent)!r} -> {new.get(k, absent)!r}"
            for k in sorted(set(old) | set(new)) if old.get(k, absent) != new.get(k, absent)]
