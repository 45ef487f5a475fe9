"""Side-by-side timing helpers: alternate the contenders so drift hits both equally, report medians."""

from __future__ import annotations

import statistics
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
