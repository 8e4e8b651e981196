"""The benchmark scripts run end to end and print what the README quotes (smoke runs: one
small workload, one repeat; the figures themselves are measured by hand, never asserted)."""
import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> list:
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True,
                         text=True, timeout=600, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_meta_step_benchmark_times_both_algorithms_and_compares_them():
    rows = _run("meta_step.py", "--workloads", "table4-mini-5w1s", "--algos", "maml,anil",
                "--repeats", "1")
    timed = {r["algo"]: r for r in rows if "step_s" in r and "peer" not in r}
    assert set(timed) == {"maml", "anil"}
    for row in timed.values():
        assert row["step_s"] > 0 and row["adapt10_s_per_batch"] > 0 and row["compile_s"] > 0
    # XLA's count: ANIL's adaptation (one body pass per set) does far fewer operations.
    assert timed["maml"]["adapt10_gflop"] > 5 * timed["anil"]["adapt10_gflop"] > 0
    summary = [r for r in rows if r.get("anil_vs_maml")]
    assert len(summary) == 1 and summary[0]["adapt_flop_ratio"] > 5


def test_max_pool_benchmark_compares_both_formulations():
    rows = _run("max_pool.py", "--workloads", "table4-mini-5w1s", "--algos", "anil",
                "--kinds", "eval", "--min-seconds", "0.1")
    assert len(rows) == 1 and rows[0]["reshape_s"] > 0 and rows[0]["per-use_s"] > 0
