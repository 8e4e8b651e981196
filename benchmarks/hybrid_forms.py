"""Side-by-side timing of the forms one of hybrid's maps can take, inside a whole meta-step.

``metajax.models.conv`` reads each of hybrid's maps from a module attribute when the map is
traced (``_hybrid_kernel_grad``, ``_hybrid_input_grad``). :func:`run` sets that attribute to each
form in turn, compiles every (workload, algo, form) meta-step first and then times them in turns
(``timing.interleaved_medians``), so the forms' ratios are side by side. Used by
``benchmarks/kernel_grad.py`` and ``benchmarks/input_grad.py``.
"""
from __future__ import annotations

import argparse
import json

import jax

import metajax.models.conv as conv
from meta_step import prepare  # beside this file
from metajax.training.host_memory import HOST_ALLOCATORS, configure_host_allocator
from timing import interleaved_medians


def add_arguments(parser: argparse.ArgumentParser, *, workloads: str, algos: str) -> None:
    """The flags both scripts take, with their own default workloads and algorithms."""
    parser.add_argument("--workloads", default=workloads)
    parser.add_argument("--algos", default=algos)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--host-allocator", default="system", choices=HOST_ALLOCATORS,
                        help="metajax.configure_host_allocator's mode")


def configure(args) -> None:
    """What must run before JAX's backend starts (the host allocator), printed."""
    print(f"# host allocator: {configure_host_allocator(args.host_allocator)}", flush=True)


def time_swapped_forms(attribute: str, forms: dict, workloads: list[str], algos: list[str],
                       repeats: int, min_seconds: float, describe) -> tuple[dict, dict]:
    """Median s/step of hybrid's meta-step with ``conv.<attribute>`` set to each form in turn.

    ``describe(hlo)`` says what each compiled step holds; it is printed as each compiles.

    Returns:
      ``({(workload, algo, form): seconds}, {(workload, algo, form): describe(its HLO)})``.
    """
    original = getattr(conv, attribute)
    fns, described = {}, {}
    try:
        for workload in workloads:
            for algo in algos:
                for name, form in forms.items():
                    setattr(conv, attribute, form)
                    _, runners = prepare(workload, algo, conv_impl="hybrid", unroll=True,
                                         adapt=False)
                    step = runners["step"]
                    described[(workload, algo, name)] = describe(step.compiled.as_text())
                    print(f"# {workload} {algo} {name}: {described[(workload, algo, name)]}",
                          flush=True)
                    fns[(workload, algo, name)] = lambda run=step: jax.block_until_ready(run())
    finally:
        setattr(conv, attribute, original)
    return interleaved_medians(fns, repeats, min_seconds=min_seconds), described


def run(attribute: str, forms: dict, args, describe, key: str) -> list[dict]:
    """Times ``forms`` of ``conv.<attribute>`` on ``args``' workloads x algos; prints the s/step
    table and the rows as one JSON line, each row holding ``describe``'s findings per form under
    ``key``. Returns the rows."""
    workloads, algos = args.workloads.split(","), args.algos.split(",")
    times, described = time_swapped_forms(attribute, forms, workloads, algos, args.repeats,
                                          args.min_seconds, describe)
    print(f"{'workload':<20}{'algo':<8}" + "".join(f"{name:>18}" for name in forms) + "  (s/step)")
    rows = []
    for workload in workloads:
        for algo in algos:
            print(f"{workload:<20}{algo:<8}" + "".join(
                f"{times[(workload, algo, name)]:18.3f}" for name in forms))
            rows.append({"workload": workload, "algo": algo,
                         key: {name: described[(workload, algo, name)] for name in forms},
                         **{f"{name}_s": round(times[(workload, algo, name)], 4)
                            for name in forms}})
    print(json.dumps(rows))
    return rows
