"""Where a meta-step's time goes: measured shares per kind of operation, layer and pass.

Runs ``benchmarks/meta_step.py``'s compiled meta-step of each workload x algorithm under
``jax.profiler`` and sums the time of every executed XLA operation (one trace event per
operation of the compiled program on XLA:CPU), labelled from the program's own metadata:

* kind: ``matmul`` (dot / library matmul fusions), ``conv`` (XLA's native convolution),
  ``slices`` (slices, pads, concatenations: the patches of the ``patches`` convolution, the
  max-pool's strided slices), ``copy`` (layout copies and transposes), ``elementwise`` (batch
  norm, ReLU, pooling's comparisons, reductions and the rest);
* layer: the model's submodule the operation comes from (``conv1``..``conv4``, ``head``);
* pass: ``fwd`` or ``bwd`` (under a transpose, i.e. the reverse pass).

With ``--peer torch`` it profiles learn2learn's step on the same shapes
(``benchmarks/peer_learn2learn.py``) with ``torch.profiler`` and labels aten operators by kind the
same way (convolution kernels, matmuls, batch norm, pooling, the optimiser), so that a row where
metajax is slower shows which kind of kernel is slower, in milliseconds of each.

    python benchmarks/profile_step.py --workloads table4-mini-5w5s --algos anil
    /work/peer/bin/python benchmarks/profile_step.py --workloads table4-mini-5w5s \\
        --algos anil,fomaml --conv-impl patches,hybrid --peer torch

Operations can overlap on several threads, so the operations' sum can exceed the wall time.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

import jax

from meta_step import WORKLOADS, prepare  # beside this file
from metajax.training.host_memory import HOST_ALLOCATORS, configure_host_allocator
from timing import median_seconds

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?\s([a-z][\w\-]*)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_CONTROL = {"while", "call", "conditional", "parameter", "tuple", "get-tuple-element",
            "constant", "bitcast"}
_SLICES = {"slice", "pad", "concatenate", "dynamic_slice", "dynamic_update_slice", "gather",
           "dynamic-slice", "dynamic-update-slice"}
_COPIES = {"copy", "transpose", "reshape", "broadcast_in_dim", "copy_p"}
_LAYERS = re.compile(r"/(conv\d+|head|block\d+|layer\d+|Dense_\d+|Conv_\d+)/")


def _kind(opcode: str, op_name: str, body: str) -> str:
    if opcode == "convolution" or " convolution(" in body:
        return "conv"
    if opcode == "dot" or " dot(" in body or "ynn" in body or "onednn" in body:
        return "matmul"
    last = op_name.rsplit("/", 1)[-1]
    if opcode in ("concatenate", "slice", "pad") or last in _SLICES:
        return "slices"
    if opcode in ("copy", "transpose") or last in _COPIES:
        return "copy"
    return "elementwise"


def label_instructions(hlo_text: str) -> dict:
    """``{instruction name: (kind, layer, pass)}`` of a compiled program's HLO text."""
    computations, current = {}, None
    for line in hlo_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
        if header:
            current = header.group(1)
            computations[current] = []
        elif current is not None:
            computations[current].append(line)
    labels = {}
    for lines in computations.values():
        for line in lines:
            match = _INSTRUCTION.match(line)
            if not match or match.group(2) in _CONTROL:
                continue
            name, opcode = match.groups()
            op_name = (_OP_NAME.search(line) or [None, ""])[1]
            called = _CALLS.search(line)
            body = "\n".join(computations.get(called.group(1), [])) if called else ""
            layer = (_LAYERS.search(op_name + "/") or [None, "other"])[1]
            direction = "bwd" if "transpose(" in op_name else "fwd"
            labels[name] = (_kind(opcode, op_name, body), layer, direction)
    return labels


def _trace_events(run, steps: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            for _ in range(steps):
                jax.block_until_ready(run())
        (path,) = glob.glob(os.path.join(directory, "**", "perfetto_trace.json.gz"),
                            recursive=True)
        with gzip.open(path) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    return [e for e in events if e.get("ph") == "X"]


def profile_metajax(workload: str, algo: str, conv_impl: str, steps: int, top: int = 8
                     ) -> dict:
    """Per-step milliseconds of a metajax meta-step by kind, layer x pass, and top operations."""
    row, runners = prepare(workload, algo, conv_impl=conv_impl, unroll=True, adapt=False)
    labels = label_instructions(runners["step"].compiled.as_text())
    wall = median_seconds(lambda: jax.block_until_ready(runners["step"]()), 5)
    by_kind, by_layer, by_op = (collections.Counter() for _ in range(3))
    for event in _trace_events(runners["step"], steps):
        label = labels.get(event["name"])
        if label is None:
            continue
        ms = event.get("dur", 0) / 1e3 / steps
        kind, layer, direction = label
        by_kind[kind] += ms
        by_layer[f"{layer} {direction}"] += ms
        by_op[f"{event['name']} ({kind}, {layer} {direction})"] += ms
    return {"framework": "metajax", "workload": workload, "algo": algo,
            "conv_impl": row["conv_impl"], "wall_ms": 1e3 * wall, "by_kind": by_kind,
            "by_layer": by_layer, "top": by_op.most_common(top)}


_TORCH_KINDS = (("conv", ("convolution", "conv2d", "mkldnn_conv")),
                ("matmul", ("addmm", "::mm", "bmm", "matmul", "linear")),
                ("pool", ("max_pool",)),
                ("batch norm", ("batch_norm",)),
                ("optimizer", ("_foreach", "adam")),
                ("copy", ("copy_", "contiguous", "clone", "to_copy", "_to_copy")))


def profile_torch(workload: str, algo: str, steps: int, threads: int | None, top: int = 8
                  ) -> dict:
    """learn2learn's step on ``workload``'s shapes under ``torch.profiler``: self time by kind."""
    import peer_learn2learn  # beside this file
    import torch

    step = peer_learn2learn.bench(*WORKLOADS[workload], algo, repeats=3, threads=threads,
                                  return_step=True)
    step()
    wall = median_seconds(step, 5)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    by_kind, by_op = collections.Counter(), collections.Counter()
    for event in prof.key_averages():
        ms = event.self_cpu_time_total / 1e3 / steps
        name = event.key
        kind = next((k for k, parts in _TORCH_KINDS if any(p in name for p in parts)),
                    "elementwise")
        by_kind[kind] += ms
        by_op[f"{name} ({kind})"] += ms
    return {"framework": "learn2learn", "workload": workload, "algo": algo, "conv_impl": "torch",
            "wall_ms": 1e3 * wall, "by_kind": by_kind, "by_layer": {},
            "top": by_op.most_common(top)}


KINDS = ("conv", "matmul", "slices", "copy", "elementwise", "pool", "batch norm", "optimizer")


def print_profile(p: dict) -> None:
    total = sum(p["by_kind"].values())
    kinds = "  ".join(f"{k} {p['by_kind'][k]:.1f}" for k in KINDS if p["by_kind"].get(k))
    print(f"{p['workload']:<18} {p['algo']:<6} {p['framework']:<11} {p['conv_impl']:<8} "
          f"wall {p['wall_ms']:8.1f} ms  ops {total:8.1f} ms  | {kinds}")
    if p["by_layer"]:
        layers = "  ".join(f"{k} {v:.1f}" for k, v in sorted(p["by_layer"].items()))
        print(f"    by layer, pass (ms): {layers}")
    for name, ms in p["top"]:
        print(f"    {ms:8.2f} ms  {name}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--algos", default="maml,fomaml,anil")
    parser.add_argument("--conv-impl", default="auto")
    parser.add_argument("--steps", type=int, default=5, help="meta-steps traced per row")
    parser.add_argument("--peer", default=None, choices=("torch",),
                        help="also profile learn2learn's step (torch.profiler)")
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument("--host-allocator", default="system", choices=HOST_ALLOCATORS,
                        help="as in benchmarks/meta_step.py (the CLI's default: system)")
    parser.add_argument("--top", type=int, default=8, help="operations listed per row")
    args = parser.parse_args(argv)
    print(f"# host allocator: {configure_host_allocator(args.host_allocator)}", flush=True)
    results = []
    for workload in args.workloads.split(","):
        for algo in args.algos.split(","):
            for conv_impl in args.conv_impl.split(","):
                results.append(profile_metajax(workload, algo, conv_impl, args.steps, args.top))
                print_profile(results[-1])
            if args.peer:
                results.append(profile_torch(workload, algo, args.steps, args.torch_threads,
                                             args.top))
                print_profile(results[-1])
            sys.stdout.flush()
    for p in results:
        print(json.dumps({**p, "by_kind": dict(p["by_kind"]), "by_layer": dict(p["by_layer"])}))


if __name__ == "__main__":
    main()
