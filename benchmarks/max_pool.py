"""The 2x2 max-pool's two formulations, side by side in one process, in the real steps.

``metajax.models.layers.max_pool_2x2`` is the maximum of four strided slices when not
differentiated and a reshape + max under differentiation (a custom JVP). This times the
compiled eval step (10-step test-time adaptation, no outer gradient) and meta-training step of
MAML and ANIL on a Conv4-pool workload with that pool against the reshape + max everywhere
(the earlier formulation), interleaving the runs so that the machine's noise hits both alike.
It also times ``first-max``, a rule tried and not adopted: the slices with a custom JVP that
passes each window's tangent from its first maximal position (a select of the four slices, as
torch's ``max_pool2d`` routes its gradient), which avoids the count of tied maxima that the
reshape + max's rule reduces over the full-size activation.

    python benchmarks/max_pool.py --workloads table4-mini-5w1s,miniimagenet-5w1s
"""
from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import optax

import metajax.models.layers as layers
from meta_step import setup  # beside this file
from metajax.training import create_train_state, make_eval_step, make_meta_step
from timing import interleaved_medians  # beside this file



@jax.custom_jvp
def max_pool_first_max(x):
    return layers._max_pool_by_slices(x)


@max_pool_first_max.defjvp
def _first_max_jvp(primals, tangents):
    a, b, c, d = layers._pool_quarters(primals[0])
    ta, tb, tc, td = layers._pool_quarters(tangents[0])
    y = jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))
    return y, jnp.where(a == y, ta, jnp.where(b == y, tb, jnp.where(c == y, tc, td)))


POOLS = {"reshape": layers._max_pool_by_reshape, "per-use": layers.max_pool_2x2,
         "first-max": max_pool_first_max}


def build(workload: str, algo: str, kind: str, pool: str):
    """A no-argument runner of the compiled ``kind`` step, traced with ``pool``."""
    images, sample, learner, params, meta_batch, _ = setup(workload, algo)
    # ConvBlock looks the pool up in its module when traced: rebind it for this trace only.
    layers.max_pool_2x2 = POOLS[pool]
    try:
        if kind == "eval":
            keys = jax.random.split(jax.random.PRNGKey(3), meta_batch)
            compiled = make_eval_step(learner, sample, 10).lower(params, {}, images, keys).compile()
            return lambda: compiled(params, {}, images, keys)
        optimizer = optax.adam(1e-3)
        box = [create_train_state(learner, optimizer, params, jax.random.PRNGKey(2))]
        compiled = make_meta_step(learner, optimizer, sample, meta_batch).lower(
            box[0], images).compile()

        def train_once():
            box[0], metrics = compiled(box[0], images)
            return metrics
        return train_once
    finally:
        layers.max_pool_2x2 = POOLS["per-use"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="table4-mini-5w1s,miniimagenet-5w1s")
    parser.add_argument("--algos", default="maml,anil")
    parser.add_argument("--kinds", default="eval,train")
    parser.add_argument("--min-seconds", type=float, default=3.0,
                        help="interleaved rounds continue until each runner has had this long")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'workload':<20}{'algo':<7}{'step':<7}{'reshape s':>11}{'per-use s':>11}"
          f"{'speed-up':>10}{'first-max s':>13}")
    for workload in args.workloads.split(","):
        for algo in args.algos.split(","):
            for kind in args.kinds.split(","):
                runners = {pool: build(workload, algo, kind, pool) for pool in POOLS}
                for run in runners.values():
                    jax.block_until_ready(run())
                medians = interleaved_medians(
                    {pool: (lambda run=run: jax.block_until_ready(run()))
                     for pool, run in runners.items()},
                    5, min_seconds=args.min_seconds)
                row = {"workload": workload, "algo": algo, "step": kind,
                       **{f"{pool}_s": round(t, 4) for pool, t in medians.items()}}
                row["speedup"] = round(row["reshape_s"] / row["per-use_s"], 2)
                rows.append(row)
                print(f"{workload:<20}{algo:<7}{kind:<7}{row['reshape_s']:>11.4f}"
                      f"{row['per-use_s']:>11.4f}{row['speedup']:>9.2f}x"
                      f"{row['first-max_s']:>13.4f}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
