"""Speed of meta-training and test-time adaptation, per workload x algorithm.

Prints a table and one JSON line per row: compile seconds, median seconds per meta-training
step, tasks per second, median seconds per test-time adaptation (10 inner steps, no outer
gradient, one task batch) and XLA's memory estimate of the compiled meta-step (arguments +
outputs + temporaries; CPU devices report no live peak), XLA's count of floating-point
operations in the compiled meta-step (taken from the vmapped step, ``--task-chunk 0``; XLA
counts a loop's body once), and the rate that count is done at. ``--roofline`` also
measures the machine's float32 matmul rate, the ceiling a convolution-bound step can approach;
with ``--peer`` the peer's rate is the same operation count over the peer's time (the same
algorithm on the same shapes does the same arithmetic), so the table shows how far either
framework is from the ceiling. Every configuration of a workload x algorithm (device counts,
task chunks) is compiled first and then timed in turns, so their ratios are side by side. The
closing lines compare ANIL with MAML per workload: training and adaptation speed-ups, and how
many times fewer operations (XLA's count of the vmapped adaptation) ANIL's adaptation does.

    python benchmarks/meta_step.py                       # all workloads, maml/fomaml/anil
    python benchmarks/meta_step.py --workloads omniglot-20w1s --algos maml --conv-impl xla
    python benchmarks/meta_step.py --workloads omniglot-20w1s --algos maml --sweep inner-steps \
        --remat both        # cost and memory growth in inner steps, with and without remat
    python benchmarks/meta_step.py --workloads omniglot-20w1s --algos maml --sweep meta-batch
    python benchmarks/meta_step.py --workloads omniglot-20w1s --algos maml --devices 1,4
        # task batch sharded over 1 and 4 devices in one run (forces 4 host devices on a CPU)
    python benchmarks/meta_step.py --workloads omniglot-20w1s --peer learn2learn
        # learn2learn on the same shapes in the same run, and metajax's speed ratio over it
    python benchmarks/meta_step.py --workloads omniglot-20w1s --algos maml --roofline
        # also the machine's matmul GFLOP/s: the ceiling for a convolution-bound meta-step

Data are random images of the real shapes (timing does not depend on pixel values).
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import sys
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metajax.algorithms import MetaLearner, classification, make_algorithm
from metajax.data.episodes import sample_episode
from metajax.models import build_model, init_params
from metajax.models.conv import (CONV_IMPLS, CONV_LIBRARIES, compiler_options,
                                 resolve_conv_impl, resolve_conv_library)
from metajax.training import (create_train_state, default_task_chunk, make_eval_step,
                               make_meta_step)
from metajax.training.host_memory import HOST_ALLOCATORS, configure_host_allocator
from metajax.training.sharding import replicate, task_mesh
from timing import interleaved_medians, median_seconds  # beside this file

# name: (model, image shape, ways, shots, queries, meta_batch, inner_steps, inner_lr)
WORKLOADS = {
    "omniglot-20w1s": ("conv4", (28, 28, 1), 20, 1, 5, 16, 5, 0.1),
    "miniimagenet-5w1s": ("conv4-pool", (84, 84, 3), 5, 1, 15, 4, 5, 0.01),
    # ANIL paper Table 4: task batch 1, target set 1.
    "table4-mini-5w1s": ("conv4-pool", (84, 84, 3), 5, 1, 1, 1, 5, 0.01),
    "table4-mini-5w5s": ("conv4-pool", (84, 84, 3), 5, 5, 1, 1, 5, 0.01),
}


SWEEPS = {"meta-batch": [1, 2, 4, 8, 16, 32, 64], "inner-steps": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}


def _median_seconds(fn, repeats: int) -> float:
    return median_seconds(lambda: jax.block_until_ready(fn()), repeats)


class Setup(NamedTuple):
    images: jax.Array       # (classes, examples per class, H, W, C) uint8: random, real shape
    sample: Callable        # sample(key, images) -> one episode of the workload's shape
    learner: MetaLearner
    params: dict
    meta_batch: int
    inner_steps: int


def setup(workload: str, algo: str, *, conv_impl: str = "patches", unroll=True,
          remat: bool = False, meta_batch: int | None = None,
          inner_steps: int | None = None) -> Setup:
    """Data, episode sampler, learner and initial params of ``workload`` for ``algo``."""
    model_name, shape, ways, shots, queries, default_batch, default_steps, inner_lr = \
        WORKLOADS[workload]
    images = jax.random.randint(jax.random.PRNGKey(0), (ways * 4, shots + queries, *shape), 0, 256
                                ).astype(jnp.uint8)
    model = build_model(model_name, ways, conv_impl=resolve_conv_impl(conv_impl, algo))
    inner_steps = inner_steps or default_steps
    learner = make_algorithm(algo, model, classification(), inner_lr=inner_lr,
                             inner_steps=inner_steps, unroll=unroll,
                             **({"remat": True} if remat else {}))
    return Setup(images=images,
                 sample=functools.partial(sample_episode, ways=ways, shots=shots, queries=queries),
                 learner=learner,
                 params=init_params(model, jax.random.PRNGKey(1), jnp.zeros((ways * shots, *shape))),
                 meta_batch=meta_batch or default_batch, inner_steps=inner_steps)


def prepare(workload: str, algo: str, *, conv_impl: str, unroll,
            meta_batch: int | None = None, inner_steps: int | None = None,
            remat: bool = False, adapt: bool = True, devices: int = 1,
            task_chunk: int | None = None, warm: bool = True,
            conv_library: str = "auto") -> tuple[dict, dict]:
    """Compiles one configuration's meta-step (and its 10-step adaptation with ``adapt``).

    Returns:
      ``(row, runners)``: the row's compile time, memory and XLA operation counts, and
      no-argument functions ``"step"`` (one meta-step) and, with ``adapt``, ``"adapt"``, each
      already run once with ``warm`` (``--compile-only`` runs nothing). ``conv_library``: see
      :func:`metajax.models.conv.compiler_options`.
    """
    task_chunk = default_task_chunk() if task_chunk is None else task_chunk
    conv_impl = resolve_conv_impl(conv_impl, algo, task_chunk=task_chunk)
    images, sample, learner, params, meta_batch, inner_steps = setup(
        workload, algo, conv_impl=conv_impl, unroll=unroll, remat=remat, meta_batch=meta_batch,
        inner_steps=inner_steps)
    optimizer = optax.adam(1e-3)
    state = create_train_state(learner, optimizer, params, jax.random.PRNGKey(2))

    mesh = None
    if devices > 1:
        mesh = task_mesh(jax.devices()[:devices])
        state, images = replicate(state, mesh), replicate(images, mesh)
    options = compiler_options(conv_library)
    meta_step = make_meta_step(learner, optimizer, sample, meta_batch, mesh=mesh,
                               task_chunk=task_chunk, compiler_options=options)
    tic = time.perf_counter()
    compiled = meta_step.lower(state, images).compile()
    compile_s = time.perf_counter() - tic
    cost = compiled.cost_analysis()
    # XLA counts a loop's body once, whatever its trip count: the count is only complete with
    # the inner loop unrolled and the task batch vmapped (chunk 0). main() gives other rows the
    # count of the same step vmapped: the arithmetic is the same.
    complete = cost and unroll is True and task_chunk == 0
    gflop = cost.get("flops", float("nan")) / 1e9 if complete else float("nan")
    memory = compiled.memory_analysis()
    mem_mb = None if memory is None else (memory.argument_size_in_bytes + memory.output_size_in_bytes
                                          + memory.temp_size_in_bytes) / 2**20
    box = [state]

    def train_once():
        box[0], metrics = compiled(box[0], images)
        return metrics

    train_once.compiled = compiled  # the program, for benchmarks/profile_step.py
    runners = {"step": train_once}
    adapt_gflop = float("nan")
    if adapt:
        keys = jax.random.split(jax.random.PRNGKey(3), meta_batch)
        eval_step = make_eval_step(learner, sample, 10, task_chunk=task_chunk,
                                   compiler_options=options).lower(params, {}, images, keys
                                                                   ).compile()
        runners["adapt"] = lambda: eval_step(box[0].params, {}, images, keys)
        if unroll is True:
            # XLA's count covers every task only with the adaptation vmapped (chunk 0).
            whole = eval_step if task_chunk == 0 else make_eval_step(
                learner, sample, 10, task_chunk=0, compiler_options=options).lower(
                    params, {}, images, keys).compile()
            adapt_cost = whole.cost_analysis()
            adapt_gflop = adapt_cost.get("flops", float("nan")) / 1e9 if adapt_cost else adapt_gflop
    for run in runners.values() if warm else ():
        jax.block_until_ready(run())
    row = {"workload": workload, "algo": algo, "backend": jax.default_backend(),
           "conv_impl": conv_impl, "conv_library": resolve_conv_library(conv_library),
           "meta_batch": meta_batch, "inner_steps": inner_steps,
           "remat": remat, "unroll": unroll, "devices": devices, "task_chunk": task_chunk,
           "compile_s": round(compile_s, 2), "gflop_per_step": round(gflop, 2),
           "adapt10_gflop": round(adapt_gflop, 3), "memory_mb": mem_mb and round(mem_mb, 1)}
    return row, runners


def time_rows(prepared: list[tuple[dict, dict]], repeats: int, *, timing: bool = True
              ) -> list[dict]:
    """Times prepared configurations side by side (interleaved) and completes their rows."""
    timed = {}
    for kind in ("step", "adapt") if timing else ():
        fns = {(i, kind): (lambda run=runners[kind]: jax.block_until_ready(run()))
               for i, (_, runners) in enumerate(prepared) if kind in runners}
        timed.update(interleaved_medians(fns, repeats) if fns else {})
    rows = []
    for i, (row, _) in enumerate(prepared):
        step_s = timed.get((i, "step"), float("nan"))
        adapt_s = timed.get((i, "adapt"), float("nan"))
        rows.append({**row, "step_s": round(step_s, 4),
                     "tasks_per_s": round(row["meta_batch"] / step_s, 2),
                     "gflops": round(row["gflop_per_step"] / step_s, 1),
                     "adapt10_s_per_batch": round(adapt_s, 4)})
    return rows


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """The machine's float32 matmul rate (GFLOP/s): the ceiling of convolution-bound code."""
    a = jax.random.normal(jax.random.PRNGKey(0), (size, size))
    b = jax.random.normal(jax.random.PRNGKey(1), (size, size))
    matmul = jax.jit(jnp.matmul)
    jax.block_until_ready(matmul(a, b))
    return 2 * size**3 / 1e9 / _median_seconds(lambda: matmul(a, b), repeats)


def _ensure_devices(count: int) -> None:
    """Re-executes this script with ``count`` forced host devices when a CPU has fewer.

    XLA reads the flag once, when the backend starts, so it cannot be set from inside the run.
    """
    if jax.device_count() >= count:
        return
    if jax.default_backend() != "cpu":
        raise SystemExit(f"--devices asks for {count} devices; this {jax.default_backend()} "
                         f"has {jax.device_count()}")
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        raise SystemExit(f"--devices asks for {count} devices but XLA_FLAGS gives "
                         f"{jax.device_count()}; raise --xla_force_host_platform_device_count")
    env = {**os.environ,
           "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={count}".strip()}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _peer_row(workload: str, algo: str, args) -> dict | None:
    """learn2learn on ``workload``'s shapes, or None (with the reason printed) when unavailable."""
    import peer_learn2learn  # beside this file; imports torch only when called

    reason = peer_learn2learn.available()
    if reason is not None:
        print(f"# peer learn2learn not run: {reason}", flush=True)
        return None
    return {"workload": workload, **peer_learn2learn.bench(
        *WORKLOADS[workload], algo, repeats=args.repeats, threads=args.torch_threads,
        device=_peer_device())}


def _peer_device() -> str:
    """The peer's torch device: the GPU when metajax runs on one, so both time the same chip."""
    return "cuda" if jax.default_backend() == "gpu" else "cpu"


def fastest_row(rows: list[dict], workload: str, algo: str, *, adapted: bool = False
                ) -> dict | None:
    """metajax's fastest one-device row of ``workload`` x ``algo`` (e.g. over --task-chunk);
    with ``adapted`` only rows whose adaptation was timed. None when there is none."""
    candidates = [r for r in rows if r["workload"] == workload and r["algo"] == algo
                  and r["devices"] == 1 and not (adapted and math.isnan(r["adapt10_s_per_batch"]))]
    return max(candidates, key=lambda r: r["tasks_per_s"], default=None)


def anil_vs_maml(rows: list[dict], workload: str) -> dict | None:
    """How much faster ANIL trains and adapts than second-order MAML on ``workload`` (one device,
    each algorithm's fastest row), and how many times fewer operations its adaptation does."""
    maml = fastest_row(rows, workload, "maml", adapted=True)
    anil = fastest_row(rows, workload, "anil", adapted=True)
    if maml is None or anil is None:
        return None
    return {"workload": workload, "anil_vs_maml": True,
            "train_speedup": round(anil["tasks_per_s"] / maml["tasks_per_s"], 2),
            "adapt_speedup": round(maml["adapt10_s_per_batch"] / anil["adapt10_s_per_batch"], 2),
            "adapt_flop_ratio": round(maml["adapt10_gflop"] / anil["adapt10_gflop"], 2)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--algos", default="maml,fomaml,anil")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--conv-impl", default="auto",
                        help="comma-separated convolution implementations to time in turns, "
                             f"of auto,{','.join(CONV_IMPLS)}; auto: metajax's choice per "
                             "algorithm, backend and task chunk "
                             "(metajax.models.conv.default_conv_impl)")
    parser.add_argument("--conv-library", default="auto",
                        help="comma-separated libraries XLA:CPU runs native convolutions with, "
                             f"to time in turns, of auto,{','.join(CONV_LIBRARIES)}; auto: "
                             "metajax's choice (metajax.models.conv.compiler_options)")
    parser.add_argument("--unroll", default="true", choices=("true", "1"),
                        help="inner-loop scan unrolling: full (true) or rolled (1)")
    parser.add_argument("--remat", default="false", choices=("false", "true", "both"),
                        help="rematerialise inner steps in the outer backward pass")
    parser.add_argument("--sweep", default=None, choices=tuple(SWEEPS),
                        help="cost growth: vary meta-batch (1..64) or inner steps (1..10)")
    parser.add_argument("--compile-only", action="store_true",
                        help="compile time and memory only (XLA's analysis needs no run)")
    parser.add_argument("--devices", default="1",
                        help="comma-separated device counts to shard the task batch over, e.g. "
                             "1,4; a CPU with fewer devices is given forced host devices")
    parser.add_argument("--peer", default=None, choices=("learn2learn",),
                        help="also time learn2learn (torch) on the same shapes and print "
                             "metajax's tasks/s over the peer's")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads for the peer (default: torch's choice)")
    parser.add_argument("--task-chunk", default="auto",
                        help="tasks vmapped at a time, comma-separated to compare: 0 = the "
                             "whole meta-batch (vmap), 1 = a sequential map, auto = the "
                             "backend's default (1 on CPU, 0 elsewhere)")
    parser.add_argument("--roofline", action="store_true",
                        help="measure the machine's float32 matmul GFLOP/s (jax, and torch with "
                             "--peer) before the table")
    parser.add_argument("--host-allocator", default="system", choices=HOST_ALLOCATORS,
                        help="glibc's handling of freed memory for the whole process, the peer "
                             "included (metajax.training.host_memory; the CLI's default: system)")
    args = parser.parse_args(argv)
    host_allocator = configure_host_allocator(args.host_allocator)  # before JAX's backend starts
    print(f"# host allocator: {host_allocator}", flush=True)
    unroll = True if args.unroll == "true" else 1
    remats = {"false": [False], "true": [True], "both": [False, True]}[args.remat]
    device_counts = [int(n) for n in args.devices.split(",")]
    chunks = [None if c == "auto" else int(c) for c in args.task_chunk.split(",")]
    conv_impls = args.conv_impl.split(",")
    unknown = sorted(set(conv_impls) - {"auto", *CONV_IMPLS})
    if unknown:
        parser.error(f"--conv-impl {','.join(unknown)}: choose from auto,{','.join(CONV_IMPLS)}")
    conv_libraries = args.conv_library.split(",")
    unknown = sorted(set(conv_libraries) - {"auto", *CONV_LIBRARIES})
    if unknown:
        parser.error(f"--conv-library {','.join(unknown)}: choose from "
                     f"auto,{','.join(CONV_LIBRARIES)}")
    _ensure_devices(max(device_counts))
    values = SWEEPS[args.sweep] if args.sweep else [None]
    rows, peers, roofline = [], [], {}
    if args.roofline:
        roofline["jax_matmul_gflops"] = round(matmul_gflops(), 1)
        if args.peer:
            import peer_learn2learn
            if peer_learn2learn.available() is None:
                roofline["torch_matmul_gflops"] = round(
                    peer_learn2learn.matmul_gflops(threads=args.torch_threads,
                                                   device=_peer_device()), 1)
        print("# float32 2048x2048 matmul, GFLOP/s: " + ", ".join(
            f"{k.split('_')[0]} {v}" for k, v in roofline.items()), flush=True)
    header = (f"{'workload':<20}{'algo':<8}{'conv':>8}{'lib':>8}{'dev':>4}{'chunk':>6}{'batch':>6}{'steps':>6}{'remat':>6}"
              f"{'compile s':>10}{'s/step':>9}{'tasks/s':>9}{'adapt10 s':>11}{'MB':>9}"
              f"{'GFLOP':>8}{'GFLOP/s':>9}")
    print(header)
    for workload in args.workloads.split(","):
        for algo in args.algos.split(","):
            for value in values:
                for remat in remats:
                    overrides = {} if value is None else {
                        "meta_batch" if args.sweep == "meta-batch" else "inner_steps": value}
                    # Every device count x chunk x convolution of this configuration is compiled
                    # first and then timed in turns, so their ratios are measured side by side.
                    prepared = [prepare(workload, algo, conv_impl=conv_impl, unroll=unroll,
                                        remat=remat, devices=devices, task_chunk=chunk,
                                        adapt=args.sweep is None and devices == 1
                                        and not args.compile_only,
                                        warm=not args.compile_only, conv_library=library,
                                        **overrides)
                                for devices, chunk, conv_impl, library in itertools.product(
                                    device_counts, chunks, conv_impls, conv_libraries)]
                    for row in time_rows(prepared, args.repeats, timing=not args.compile_only):
                        same = [r for r in rows if r["task_chunk"] == 0 and all(
                            r[k] == row[k] for k in ("workload", "algo", "meta_batch", "conv_impl",
                                                     "conv_library", "inner_steps", "remat",
                                                     "unroll"))]
                        if row["task_chunk"] != 0 and same:
                            row["gflop_per_step"] = same[0]["gflop_per_step"]
                            row["gflops"] = round(row["gflop_per_step"] / row["step_s"], 1)
                        rows.append(row)
                        print(f"{workload:<20}{algo:<8}{row['conv_impl']:>8}"
                              f"{row['conv_library']:>8}{row['devices']:>4}"
                              f"{row['task_chunk']:>6}"
                              f"{row['meta_batch']:>6}"
                              f"{row['inner_steps']:>6}{'yes' if remat else 'no':>6}"
                              f"{row['compile_s']:>10.1f}{row['step_s']:>9.3f}"
                              f"{row['tasks_per_s']:>9.1f}{row['adapt10_s_per_batch']:>11.3f}"
                              f"{row['memory_mb'] or float('nan'):>9.1f}"
                              f"{row['gflop_per_step']:>8.1f}{row['gflops']:>9.1f}", flush=True)
            if args.peer:
                peer = _peer_row(workload, algo, args)
                if peer is not None:
                    ours = fastest_row(rows, workload, algo)
                    peer["metajax_speedup"] = round(ours["tasks_per_s"] / peer["tasks_per_s"], 2)
                    peer["metajax_adapt_speedup"] = round(
                        peer["adapt10_s_per_batch"] / ours["adapt10_s_per_batch"], 2)
                    # metajax's operation count, done in the peer's time.
                    peer["gflops"] = round(ours["gflop_per_step"] / peer["step_s"], 1)
                    peers.append(peer)
                    print(f"{'  learn2learn':<20}{algo:<8}{'':>8}{'':>8}{'':>4}{'':>6}{peer['meta_batch']:>6}"
                          f"{peer['inner_steps']:>6}{'':>6}{peer['first_step_s']:>10.1f}"
                          f"{peer['step_s']:>9.3f}{peer['tasks_per_s']:>9.1f}"
                          f"{peer['adapt10_s_per_batch']:>11.3f}{'':>9}{'':>8}"
                          f"{peer['gflops']:>9.1f}   metajax "
                          f"{peer['metajax_speedup']:.2f}x tasks/s, "
                          f"{peer['metajax_adapt_speedup']:.2f}x adaptation", flush=True)
    summaries = [s for s in map(functools.partial(anil_vs_maml, rows), args.workloads.split(","))
                 if s is not None]
    for s in summaries:
        print(f"# ANIL vs MAML, {s['workload']}: trains {s['train_speedup']:.1f}x faster; adapts "
              f"{s['adapt_speedup']:.1f}x faster and does {s['adapt_flop_ratio']:.1f}x fewer "
              f"FLOPs (the adaptation speed-up if both ran at the same FLOP rate)", flush=True)
    print(json.dumps(rows + peers + summaries + ([roofline] if roofline else [])))


if __name__ == "__main__":
    main()
