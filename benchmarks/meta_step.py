"""Speed of meta-training and test-time adaptation, per workload x algorithm.

Prints a table and one JSON line per row: compile seconds, median seconds per meta-training
step, tasks per second, median seconds per test-time adaptation (10 inner steps, no outer
gradient, one task batch) and XLA's memory estimate of the compiled meta-step (arguments +
outputs + temporaries; CPU devices report no live peak).

    python benchmarks/meta_step.py                       # all workloads, maml/fomaml/anil
    python benchmarks/meta_step.py --workloads omniglot-20w1s --algos maml --conv-impl xla
    python benchmarks/meta_step.py --workloads omniglot-20w1s --algos maml --sweep inner-steps \
        --remat both        # cost and memory growth in inner steps, with and without remat
    python benchmarks/meta_step.py --workloads omniglot-20w1s --algos maml --sweep meta-batch

Data are random images of the real shapes (timing does not depend on pixel values).
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from metajax.algorithms import classification, make_algorithm
from metajax.data.episodes import sample_episode
from metajax.models import build_model, init_params
from metajax.training import create_train_state, make_eval_step, make_meta_step

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
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def bench(workload: str, algo: str, *, repeats: int, conv_impl: str, unroll,
          meta_batch: int | None = None, inner_steps: int | None = None,
          remat: bool = False, adapt: bool = True, timing: bool = True) -> dict:
    model_name, shape, ways, shots, queries, default_batch, default_steps, inner_lr = \
        WORKLOADS[workload]
    meta_batch = meta_batch or default_batch
    inner_steps = inner_steps or default_steps
    images = jax.random.randint(jax.random.PRNGKey(0), (ways * 4, shots + queries, *shape), 0, 256
                                ).astype(jnp.uint8)
    sample = functools.partial(sample_episode, ways=ways, shots=shots, queries=queries)
    model = build_model(model_name, ways, conv_impl=conv_impl)
    learner = make_algorithm(algo, model, classification(), inner_lr=inner_lr,
                             inner_steps=inner_steps, unroll=unroll,
                             **({"remat": True} if remat else {}))
    optimizer = optax.adam(1e-3)
    params = init_params(model, jax.random.PRNGKey(1), jnp.zeros((ways * shots, *shape)))
    state = create_train_state(learner, optimizer, params, jax.random.PRNGKey(2))

    meta_step = make_meta_step(learner, optimizer, sample, meta_batch)
    tic = time.perf_counter()
    compiled = meta_step.lower(state, images).compile()
    compile_s = time.perf_counter() - tic
    memory = compiled.memory_analysis()
    mem_mb = None if memory is None else (memory.argument_size_in_bytes + memory.output_size_in_bytes
                                          + memory.temp_size_in_bytes) / 2**20
    box = [state]

    def train_once():
        box[0], metrics = compiled(box[0], images)
        return metrics

    step_s = float("nan")
    if timing:
        train_once()
        step_s = _median_seconds(train_once, repeats)

    adapt_s = float("nan")
    if adapt and timing:
        eval_step = make_eval_step(learner, sample, 10)
        keys = jax.random.split(jax.random.PRNGKey(3), meta_batch)
        jax.block_until_ready(eval_step(box[0].params, images, keys))
        adapt_s = _median_seconds(lambda: eval_step(box[0].params, images, keys), repeats)
    return {"workload": workload, "algo": algo, "backend": jax.default_backend(),
            "conv_impl": conv_impl, "meta_batch": meta_batch, "inner_steps": inner_steps,
            "remat": remat, "unroll": unroll,
            "compile_s": round(compile_s, 2), "step_s": round(step_s, 4),
            "tasks_per_s": round(meta_batch / step_s, 2),
            "adapt10_s_per_batch": round(adapt_s, 4), "memory_mb": mem_mb and round(mem_mb, 1)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--algos", default="maml,fomaml,anil")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--conv-impl", default="patches", choices=("patches", "xla"))
    parser.add_argument("--unroll", default="true", choices=("true", "1"),
                        help="inner-loop scan unrolling: full (true) or rolled (1)")
    parser.add_argument("--remat", default="false", choices=("false", "true", "both"),
                        help="rematerialise inner steps in the outer backward pass")
    parser.add_argument("--sweep", default=None, choices=tuple(SWEEPS),
                        help="cost growth: vary meta-batch (1..64) or inner steps (1..10)")
    parser.add_argument("--compile-only", action="store_true",
                        help="compile time and memory only (XLA's analysis needs no run)")
    args = parser.parse_args(argv)
    unroll = True if args.unroll == "true" else 1
    remats = {"false": [False], "true": [True], "both": [False, True]}[args.remat]
    values = SWEEPS[args.sweep] if args.sweep else [None]
    rows = []
    header = (f"{'workload':<20}{'algo':<8}{'batch':>6}{'steps':>6}{'remat':>6}{'compile s':>10}"
              f"{'s/step':>9}{'tasks/s':>9}{'adapt10 s':>11}{'MB':>9}")
    print(header)
    for workload in args.workloads.split(","):
        for algo in args.algos.split(","):
            for value in values:
                for remat in remats:
                    overrides = {} if value is None else {
                        "meta_batch" if args.sweep == "meta-batch" else "inner_steps": value}
                    row = bench(workload, algo, repeats=args.repeats, conv_impl=args.conv_impl,
                                unroll=unroll, remat=remat, adapt=args.sweep is None,
                                timing=not args.compile_only, **overrides)
                    rows.append(row)
                    print(f"{workload:<20}{algo:<8}{row['meta_batch']:>6}{row['inner_steps']:>6}"
                          f"{'yes' if remat else 'no':>6}{row['compile_s']:>10.1f}"
                          f"{row['step_s']:>9.3f}{row['tasks_per_s']:>9.1f}"
                          f"{row['adapt10_s_per_batch']:>11.3f}"
                          f"{row['memory_mb'] or float('nan'):>9.1f}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
