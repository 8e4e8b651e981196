"""Convolution implementations side by side: Conv4 body ops and whole meta-steps, per impl.

For each body (Omniglot's stride-2 Conv4, MiniImageNet's max-pool Conv4; one task's support +
query images through shared weights) and each ``conv_impl``: median seconds of the forward pass,
of the gradient w.r.t. the input alone (input-gradient convolutions only) and of the gradient
w.r.t. the four kernels alone (kernel-gradient convolutions, plus the input-gradients of
layers 2-4 that carry the cotangent down). Then, per workload x algorithm, the meta-step of
``benchmarks/meta_step.py`` (CPU default task mapping) with each impl. Every variant of a
table is compiled first and then timed in turns (medians), so their ratios are side by side.

    python benchmarks/conv_impl.py                         # bodies + meta-steps
    python benchmarks/conv_impl.py --step-impls patches,hybrid --workloads omniglot-20w1s
    python benchmarks/conv_impl.py --body-share table4-mini-5w5s:anil --skip-ops
        # that meta-step against one forward (+ kernel-gradient) of the body on its task's images
"""
from __future__ import annotations

import argparse
import functools
import json

import jax
import jax.numpy as jnp

from metajax.models.conv import CONV_IMPLS, conv3x3
from metajax.models.layers import batch_norm, max_pool_2x2
from meta_step import WORKLOADS, prepare, time_rows  # beside this file
from timing import interleaved_medians

# name: (downsample, hidden, images per task (support + query), image shape)
BODIES = {
    "omniglot conv4 (stride)": ("stride", 64, 20 * (1 + 5), (28, 28, 1)),
    "miniimagenet conv4 (pool)": ("pool", 32, 5 * (1 + 15), (84, 84, 3)),
}


def body(kernels, x, *, downsample: str, impl: str):
    """Conv4's body with shared ``kernels``: conv -> batch norm -> ReLU -> stride/pool, x4."""
    for kernel in kernels:
        y = conv3x3(x, kernel, stride=2 if downsample == "stride" else 1, impl=impl)
        x = jax.nn.relu(batch_norm(y, 1.0, 0.0))
        if downsample == "pool":
            x = max_pool_2x2(x)
    return x


def body_ops(name: str, impls, repeats: int) -> dict:
    """Median seconds of forward / input-grad / kernel-grad of body ``name`` per impl."""
    downsample, hidden, images, shape = BODIES[name]
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    x = jax.random.normal(keys[0], (images, *shape))
    chans = [shape[-1]] + [hidden] * 4
    kernels = [0.1 * jax.random.normal(k, (3, 3, a, b)) for k, a, b in
               zip(keys[1:], chans[:-1], chans[1:])]
    fns = {}
    for impl in impls:
        def loss(ks, x, impl=impl):
            return jnp.sum(body(ks, x, downsample=downsample, impl=impl) ** 2)
        ops = {"forward": jax.jit(loss),
               "input-grad": jax.jit(jax.grad(loss, argnums=1)),
               "kernel-grad": jax.jit(jax.grad(loss, argnums=0))}
        for op, fn in ops.items():
            jax.block_until_ready(fn(kernels, x))  # compile
            fns[(op, impl)] = lambda fn=fn: jax.block_until_ready(fn(kernels, x))
    return interleaved_medians(fns, repeats)


def body_share(workload: str, algo: str, impls, repeats: int) -> dict:
    """Median seconds of ``workload``'s ``algo`` meta-step and of one forward, and one forward +
    kernel-gradient, of its body (shared weights) on one task's support + query images."""
    model, shape, ways, shots, queries, *_ = WORKLOADS[workload]
    downsample, hidden = ("stride", 64) if model == "conv4" else ("pool", 32)
    x = jax.random.normal(jax.random.PRNGKey(0), (ways * (shots + queries), *shape))
    chans = [shape[-1]] + [hidden] * 4
    kernels = [0.1 * jax.random.normal(jax.random.PRNGKey(i), (3, 3, a, b))
               for i, (a, b) in enumerate(zip(chans[:-1], chans[1:]))]
    fns = {}
    for impl in impls:
        _, runners = prepare(workload, algo, conv_impl=impl, unroll=True, adapt=False)
        fns[("step", impl)] = lambda run=runners["step"]: jax.block_until_ready(run())
        loss = functools.partial(lambda ks, x, impl: jnp.sum(
            body(ks, x, downsample=downsample, impl=impl) ** 2), impl=impl)
        for op, fn in (("body forward", jax.jit(loss)),
                       ("body forward+kernel-grad", jax.jit(jax.grad(loss)))):
            jax.block_until_ready(fn(kernels, x))
            fns[(op, impl)] = lambda fn=fn: jax.block_until_ready(fn(kernels, x))
    return interleaved_medians(fns, repeats)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--op-impls", default=",".join(CONV_IMPLS),
                        help="impls of the body-op table")
    parser.add_argument("--step-impls", default="patches,hybrid",
                        help="impls of the meta-step table ('xla' takes ~1 min a step on "
                             "MiniImageNet ANIL)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--algos", default="maml,fomaml,anil")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-ops", action="store_true")
    parser.add_argument("--body-share", default=None, metavar="WORKLOAD:ALGO",
                        help="time that meta-step against its body's forward (+ kernel-gradient) "
                             "on one task's images, per --step-impls, instead of the step table")
    args = parser.parse_args(argv)
    results = []
    op_impls = args.op_impls.split(",")
    if not args.skip_ops:
        print(f"{'body':<28}{'op':<13}" + "".join(f"{i:>10}" for i in op_impls) + "   (s)")
        for name in BODIES:
            timed = body_ops(name, op_impls, args.repeats)
            for op in ("forward", "input-grad", "kernel-grad"):
                print(f"{name:<28}{op:<13}" + "".join(f"{timed[(op, i)]:>10.4f}"
                                                     for i in op_impls), flush=True)
                results.append({"body": name, "op": op,
                                **{i: round(timed[(op, i)], 4) for i in op_impls}})
    step_impls = args.step_impls.split(",")
    if args.body_share:
        workload, algo = args.body_share.split(":")
        timed = body_share(workload, algo, step_impls, args.repeats)
        for (op, impl), seconds in timed.items():
            print(f"{workload} {algo} {impl:<8} {op:<26}{seconds:>9.4f} s", flush=True)
        print(json.dumps([{"workload": workload, "algo": algo, "impl": impl, "op": op,
                           "s": round(seconds, 4)} for (op, impl), seconds in timed.items()]))
        return
    print(f"{'workload':<20}{'algo':<8}" + "".join(f"{i + ' s/step':>16}" for i in step_impls)
          + "".join(f"{i + ' compile':>16}" for i in step_impls))
    for workload in args.workloads.split(","):
        for algo in args.algos.split(","):
            prepared = [prepare(workload, algo, conv_impl=impl, unroll=True, adapt=False)
                        for impl in step_impls]
            rows = time_rows(prepared, args.repeats)
            print(f"{workload:<20}{algo:<8}" + "".join(f"{r['step_s']:>16.4f}" for r in rows)
                  + "".join(f"{r['compile_s']:>16.1f}" for r in rows), flush=True)
            results.append({"workload": workload, "algo": algo,
                            **{f"{r['conv_impl']}_step_s": r["step_s"] for r in rows},
                            **{f"{r['conv_impl']}_compile_s": r["compile_s"] for r in rows},
                            **{f"{r['conv_impl']}_memory_mb": r["memory_mb"] for r in rows}})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
