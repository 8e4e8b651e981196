"""Wall-clock timing shared by the benchmarks (metajax's and the peer's use the same rule)."""
from __future__ import annotations

import statistics
import time


def interleaved_medians(fns: dict, repeats: int, *, min_seconds: float = 1.0,
                        max_runs: int = 200) -> dict:
    """Median wall time of each ``fns[name]()``, which must return only when its work is done.

    The functions run in turns (one call each per round), so that a slow spell of a noisy
    machine hits every variant alike and their ratios are side by side. Rounds continue until
    each has run at least ``repeats`` times and, up to ``max_runs`` rounds, for at least
    ``min_seconds`` in all, so that a 20 ms call is not judged on three samples.
    """
    times = {name: [] for name in fns}

    def done(ts):
        return len(ts) >= repeats and (sum(ts) >= min_seconds or len(ts) >= max_runs)

    while not all(done(ts) for ts in times.values()):
        for name, fn in fns.items():
            tic = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - tic)
    return {name: statistics.median(ts) for name, ts in times.items()}


def median_seconds(fn, repeats: int, *, min_seconds: float = 1.0, max_runs: int = 200) -> float:
    """Median wall time of ``fn()`` alone: :func:`interleaved_medians` of one function."""
    return interleaved_medians({0: fn}, repeats, min_seconds=min_seconds, max_runs=max_runs)[0]
