"""Wall-clock timing shared by the benchmarks (metajax's and the peer's use the same rule)."""
from __future__ import annotations

import statistics
import time


def median_seconds(fn, repeats: int, *, min_seconds: float = 1.0, max_runs: int = 200) -> float:
    """Median wall time of ``fn()``, which must return only when its work is done.

    Runs it at least ``repeats`` times, and more (up to ``max_runs``) until ``min_seconds`` have
    passed, so that a 20 ms call is not judged on three samples of a noisy machine.
    """
    times = []
    while len(times) < repeats or (sum(times) < min_seconds and len(times) < max_runs):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)
