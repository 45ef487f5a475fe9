"""Side-by-side timing helpers: alternate the contenders so drift hits both equally, report medians."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable


def time_pair(a: Callable[[], object], b: Callable[[], object], *, repeats: int = 10, warmup: int = 2) -> tuple[float, float]:
    """Median seconds of ``a`` and ``b``, run alternately ``repeats`` times after ``warmup`` rounds."""
    for _ in range(warmup):
        a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        t0 = time.perf_counter(); a(); ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter(); b(); tb.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def child_json(module: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run ``python -m module *args`` in a fresh process (``env`` added to this one's environment) and return the JSON
    object on the last line it prints: a contender whose state is per process (peak RSS, an allocator setting)."""
    out = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}).stdout
    return json.loads(out.strip().splitlines()[-1])
