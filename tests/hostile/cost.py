"""Cost growth of one function over one input shape: linear or not, measured within one run."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

# 8x the input may cost at most 8 x 1.25 the time: quadratic work would cost 64x.
FACTOR = 8
SLACK = 1.25


def best_of(fn: Callable[[Any], object], arg: Any, repeats: int = 3) -> float:
    """The fastest of a few runs, in CPU seconds of this thread: the work itself, not the time
    other processes took the CPU from it (a wall clock measured the neighbours too: on 2 cores
    shared by parallel suites a 1x run could take 3x its cost, and a linear shape looked
    quadratic)."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.thread_time()
        fn(arg)
        best = min(best, time.thread_time() - start)
    return best


def growth(fn: Callable[[Any], object], make: Callable[[int], Any], n: int) -> tuple[float, float]:
    """(CPU seconds at size n, at size FACTOR * n), each the best of three."""
    small, large = make(n), make(FACTOR * n)
    fn(small)  # warm caches and imports outside the measurement
    return best_of(fn, small), best_of(fn, large)


def assert_linear(
    fn: Callable[[Any], object], make: Callable[[int], Any], n: int, *, attempts: int = 5
) -> tuple[float, float]:
    """Fail unless the cost of fn(make(8n)) is within 8 x 1.25 of fn(make(n)).

    A noisy neighbour can slow one measurement, never make quadratic work look linear, so a
    ratio over the limit is measured again (up to `attempts` times) before the test fails.
    """
    ratios = []
    for _ in range(attempts):
        small, large = growth(fn, make, n)
        ratio = large / max(small, 1e-9)
        if ratio <= FACTOR * SLACK:
            return small, large
        ratios.append(round(ratio, 1))
    raise AssertionError(
        f"{getattr(make, '__name__', make)}: {FACTOR}x the input cost {ratios}x the time "
        f"(limit {FACTOR * SLACK}x; {small * 1000:.1f} ms -> {large * 1000:.1f} ms)"
    )
