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
    pools = ("reshape", "per-use", "first-max")
    assert len(rows) == 1 and min(rows[0][f"{pool}_s"] for pool in pools) > 0


def _json_lines(script: str, *args: str) -> list:
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True,
                         text=True, timeout=600, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith(("{", "["))]


def test_profile_step_labels_the_time_of_a_meta_step_by_kind_and_layer():
    (row,) = _json_lines("profile_step.py", "--workloads", "table4-mini-5w1s", "--algos", "anil",
                         "--conv-impl", "patches", "--steps", "1")
    assert row["framework"] == "metajax" and row["wall_ms"] > 0
    # a patches convolution is matmuls and slices; the layers are the body's four blocks
    assert row["by_kind"]["matmul"] > 0 and row["by_kind"]["slices"] > 0
    assert {"conv1 fwd", "conv1 bwd", "conv4 fwd"} <= set(row["by_layer"])


def test_input_grad_benchmark_finds_the_swapped_convolutions_and_their_fix():
    (rows,) = _json_lines("input_grad.py", "--workloads", "omniglot-20w1s", "--algos", "anil",
                          "--repeats", "1", "--min-seconds", "0")
    (row,) = rows
    convs = row["convolutions"]
    # conv4's 2x2 cotangent: XLA swaps the lhs-dilated form's operands; hybrid's form does not
    assert convs["lhs-dilation"]["other_layouts"] and convs["lhs-dilation"]["lhs_dilate"] > 0
    assert convs["unswapped"]["other_layouts"] == {} and convs["unswapped"]["lhs_dilate"] > 0
    assert convs["zero-interleaved"] == {"lhs_dilate": 0, "other_layouts": {}}
    assert min(row[f"{name}_s"] for name in convs) > 0


def test_conv_block_benchmark_times_both_batch_norm_forms():
    (row,) = _json_lines("conv_block.py", "--blocks", "conv2", "--batches", "2", "--repeats", "1")
    assert set(row["ms"]) == {"patches/centred", "patches/folded"} and min(row["ms"].values()) > 0


def test_kernel_grad_benchmark_reads_the_layout_xla_compiled():
    (rows,) = _json_lines("kernel_grad.py", "--workloads", "table4-mini-5w1s", "--algos", "anil",
                          "--repeats", "1", "--min-seconds", "0")
    (row,) = rows
    # JAX's transpose rule stays in its own layout inside a step; the canonical form is Eigen's
    assert row["labels"]["jax-transpose"] == ["f01b_i01o->01bf"]
    assert row["labels"]["canonical"] == ["b01f_01io->b01f"] and row["labels"]["patches"] == []
    assert min(row[f"{name}_s"] for name in ("patches", "jax-transpose", "canonical")) > 0
