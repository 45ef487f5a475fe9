"""``harness.allocator``: importing the harness backs large tensors with huge pages; the environment can refuse.

Each case runs in a fresh interpreter: PyTorch reads the setting once, at its first CPU allocation.
"""

import json
import os
import subprocess
import sys

import pytest

from harness.allocator import ENV, kernel_thp_mode

# Import the harness (as every study does, before it loads a model), then allocate, fill and free a 256 MB tensor
# three times and count the minor page faults: 4 KB pages fault 65,536 times a round, 2 MB pages 128.
PROBE = """
import json, os, resource
import torch
import harness
n = 64 * 2**20  # float32: 256 MB
total = 0.0
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    x = torch.ones(n); total += float(x.sum()); del x
print(json.dumps({"env": os.environ.get("THP_MEM_ALLOC_ENABLE"),
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, "sum": total}))
"""
PAGES = 3 * 256 * 2**20 // 4096  # 4 KB pages filled in the three rounds


def _probe(setting: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if setting is not None:
        env[ENV] = setting
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_importing_the_harness_backs_large_tensors_with_huge_pages():
    row = _probe(None)
    assert row["env"] == "1" and row["sum"] == 3 * 64 * 2**20
    if kernel_thp_mode() not in {"always", "madvise"}:  # a kernel setting, not an install: nothing to measure
        pytest.skip(f"this kernel's transparent huge pages are {kernel_thp_mode()!r}")
    assert row["faults"] < PAGES // 20, row  # ~640 with huge pages (and Python's own small allocations)


def test_an_explicit_setting_is_kept_and_zero_keeps_4kb_pages():
    row = _probe("0")
    assert row["env"] == "0" and row["sum"] == 3 * 64 * 2**20
    assert row["faults"] >= PAGES * 0.9, row


@pytest.mark.parametrize("text, mode", [("always [madvise] never\n", "madvise"), ("[always] madvise never", "always"),
                                        ("always madvise [never]", "never"), ("", None)])
def test_kernel_thp_mode_reads_the_bracketed_choice(tmp_path, monkeypatch, text, mode):
    from harness import allocator

    path = tmp_path / "enabled"
    path.write_text(text)
    monkeypatch.setattr(allocator, "THP_MODE", path)
    assert allocator.kernel_thp_mode() == mode
    monkeypatch.setattr(allocator, "THP_MODE", tmp_path / "absent")
    assert allocator.kernel_thp_mode() is None
