"""Back large CPU tensors with transparent huge pages, so a forward's activations cost 512x fewer page faults.

PyTorch on CPU has no caching allocator: every activation is a fresh allocation, and glibc serves each one above its
mmap threshold (at most 32 MB) with a fresh ``mmap``, returning it with ``munmap`` on free. The next forward then
faults each 4 KB page in again and the kernel zeroes it: an ablation forward over a batch of rows spends a tenth
(SmolLM2-135M) to half (Gemma-3-270M, all positions) of its CPU time in the kernel. PyTorch's
``THP_MEM_ALLOC_ENABLE=1`` aligns allocations of 2 MB and more to 2 MB and asks for huge pages
(``madvise(MADV_HUGEPAGE)``), one fault per 2 MB. ``benchmarks/allocator.py`` measures the effect side by side.

PyTorch reads the variable once, at its first CPU allocation, so it has to be set before any tensor exists:
``harness`` sets it on import (``os.environ.setdefault``: an explicit ``THP_MEM_ALLOC_ENABLE=0`` keeps PyTorch's
default). It needs the kernel's transparent huge pages in ``always`` or ``madvise`` mode; under ``never`` nothing
changes. (Raising glibc's mmap and trim thresholds instead removes the faults too, but posix_memalign's padding then
keeps a freed buffer from serving the next request of its size whenever a small block lands above it, and the heap
grows by a buffer a forward.)
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "THP_MEM_ALLOC_ENABLE"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def request_huge_pages() -> str:
    """Set ``THP_MEM_ALLOC_ENABLE=1`` unless the environment already says otherwise; returns the value in force."""
    return os.environ.setdefault(ENV, "1")


def kernel_thp_mode() -> str | None:
    """The kernel's transparent-huge-page mode (``always``, ``madvise`` or ``never``); None where it has none."""
    try:
        text = THP_MODE.read_text()
    except OSError:
        return None
    chosen = [w for w in text.split() if w.startswith("[")]
    return chosen[0].strip("[]") if chosen else None
