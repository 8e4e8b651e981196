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
    python benchmarks/conv_impl.py --peer torch --step-impls ''   # + torch's kernels, GFLOP/s

``--peer torch`` adds the same body ops written in PyTorch (``F.conv2d``, ``F.batch_norm`` with
batch statistics, ReLU, ``F.max_pool2d``: the oneDNN kernels learn2learn runs) to the body-op
table, timed in turns among themselves right after XLA's, and every op's rate: XLA's FLOP count
of the op (its ``xla`` form, else the first impl) divided by each column's median time.
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
    "table4 5w5s task (pool)": ("pool", 32, 5 * (5 + 1), (84, 84, 3)),
}
OPS = ("forward", "input-grad", "kernel-grad")


def body(kernels, x, *, downsample: str, impl: str):
    """Conv4's body with shared ``kernels``: conv -> batch norm -> ReLU -> stride/pool, x4."""
    for kernel in kernels:
        y = conv3x3(x, kernel, stride=2 if downsample == "stride" else 1, impl=impl)
        x = jax.nn.relu(batch_norm(y, 1.0, 0.0))
        if downsample == "pool":
            x = max_pool_2x2(x)
    return x


def _body_inputs(name: str):
    downsample, hidden, images, shape = BODIES[name]
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    x = jax.random.normal(keys[0], (images, *shape))
    chans = [shape[-1]] + [hidden] * 4
    kernels = [0.1 * jax.random.normal(k, (3, 3, a, b)) for k, a, b in
               zip(keys[1:], chans[:-1], chans[1:])]
    return downsample, x, kernels


def _torch_body_fns(name: str, x, kernels) -> dict:
    """The body's three ops in PyTorch on the same arrays (NCHW / OIHW copies)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    downsample = BODIES[name][0]
    tx = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
    tks = [torch.from_numpy(np.asarray(k).transpose(3, 2, 0, 1).copy()) for k in kernels]

    def loss(ks, x):
        for k in ks:
            y = F.conv2d(x, k, stride=2 if downsample == "stride" else 1, padding=1)
            x = F.relu(F.batch_norm(y, None, None, training=True, eps=1e-5))
            if downsample == "pool":
                x = F.max_pool2d(x, 2)
        return (x ** 2).sum()

    def forward():
        with torch.no_grad():
            loss(tks, tx)

    def input_grad():
        xg = tx.clone().requires_grad_(True)
        torch.autograd.grad(loss(tks, xg), xg)

    def kernel_grad():
        ks = [k.clone().requires_grad_(True) for k in tks]
        torch.autograd.grad(loss(ks, tx), ks)

    return {"forward": forward, "input-grad": input_grad, "kernel-grad": kernel_grad}


def body_ops(name: str, impls, repeats: int, peer: str | None = None) -> tuple[dict, dict]:
    """Median seconds of forward / input-grad / kernel-grad of body ``name`` per impl (and per
    ``peer``), and XLA's FLOP count of each op."""
    downsample, x, kernels = _body_inputs(name)
    fns, flops = {}, {}
    for impl in impls:
        def loss(ks, x, impl=impl):
            return jnp.sum(body(ks, x, downsample=downsample, impl=impl) ** 2)
        ops = {"forward": jax.jit(loss),
               "input-grad": jax.jit(jax.grad(loss, argnums=1)),
               "kernel-grad": jax.jit(jax.grad(loss, argnums=0))}
        for op, fn in ops.items():
            compiled = fn.lower(kernels, x).compile()  # timed as compiled: one compilation
            if op not in flops or impl == "xla":
                flops[op] = (compiled.cost_analysis() or {}).get("flops", float("nan"))
            jax.block_until_ready(compiled(kernels, x))  # warm
            fns[(op, impl)] = lambda c=compiled: jax.block_until_ready(c(kernels, x))
    timed = interleaved_medians(fns, repeats)
    if peer == "torch":
        # Timed after XLA's ops, not in turns with them: torch's two OpenMP threads compete with
        # XLA:CPU's worker threads (which spin briefly after each call); with the ops
        # interleaved, torch's Table 4 forward + kernel-gradient took 0.120 s against 0.088 s in
        # this order (one run each, benchmarks/results/conv_kernels_torch_cpu.txt).
        torch_fns = _torch_body_fns(name, x, kernels)
        for fn in torch_fns.values():
            fn()
        timed.update({(op, "torch"): t
                      for op, t in interleaved_medians(torch_fns, repeats).items()})
    return timed, flops


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
    parser.add_argument("--peer", choices=("torch",), default=None,
                        help="also time the body ops in PyTorch (needs torch installed)")
    parser.add_argument("--body-share", default=None, metavar="WORKLOAD:ALGO",
                        help="time that meta-step against its body's forward (+ kernel-gradient) "
                             "on one task's images, per --step-impls, instead of the step table")
    args = parser.parse_args(argv)
    results = []
    op_impls = args.op_impls.split(",")
    columns = op_impls + ([args.peer] if args.peer else [])
    if not args.skip_ops:
        print(f"{'body':<28}{'op':<13}{'GFLOP':>8}" + "".join(f"{c:>10}" for c in columns)
              + "   (s)" + "".join(f"{c:>10}" for c in columns) + "   (GFLOP/s)")
        for name in BODIES:
            timed, flops = body_ops(name, op_impls, args.repeats, args.peer)
            for op in OPS:
                gflop = flops[op] / 1e9
                print(f"{name:<28}{op:<13}{gflop:>8.2f}"
                      + "".join(f"{timed[(op, c)]:>10.4f}" for c in columns) + "      "
                      + "".join(f"{gflop / timed[(op, c)]:>10.1f}" for c in columns), flush=True)
                results.append({"body": name, "op": op, "gflop": round(gflop, 3),
                                **{c: round(timed[(op, c)], 4) for c in columns}})
    step_impls = [i for i in args.step_impls.split(",") if i]
    if args.body_share:
        workload, algo = args.body_share.split(":")
        timed = body_share(workload, algo, step_impls, args.repeats)
        for (op, impl), seconds in timed.items():
            print(f"{workload} {algo} {impl:<8} {op:<26}{seconds:>9.4f} s", flush=True)
        print(json.dumps([{"workload": workload, "algo": algo, "impl": impl, "op": op,
                           "s": round(seconds, 4)} for (op, impl), seconds in timed.items()]))
        return
    if not step_impls:
        print(json.dumps(results))
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
