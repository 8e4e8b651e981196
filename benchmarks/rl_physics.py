"""HalfCheetah physics on this machine: MuJoCo's C engine (pure_callback) vs MJX, in a jitted rollout.

    python benchmarks/rl_physics.py [--envs 200] [--steps 50] [--repeats 3]

Prints, per engine, the compile time and the environment steps per second of a jitted,
vmapped rollout (each environment step is 5 physics steps) with random actions.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from metajax.rl.envs.halfcheetah import make_halfcheetah


def time_engine(engine: str, *, envs: int, steps: int, repeats: int) -> dict:
    env = make_halfcheetah("vel", physics=engine)

    @jax.jit
    def run(key):
        reset_key, act_key = jax.random.split(key)
        state, _ = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(reset_key, envs), 1.0)
        actions = jax.random.normal(act_key, (steps, envs, env.action_size))

        def step(state, action):
            state, _, reward, _ = jax.vmap(env.step, in_axes=(0, 0, None))(state, action, 1.0)
            return state, reward
        return jax.lax.scan(step, state, actions)[1].sum()

    start = time.perf_counter()
    jax.block_until_ready(run(jax.random.PRNGKey(0)))
    compile_s = time.perf_counter() - start
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(jax.random.PRNGKey(i + 1)))
        times.append(time.perf_counter() - start)
    best = min(times)
    return {"engine": engine, "envs": envs, "steps": steps, "compile_plus_first_run_s": round(compile_s, 2),
            "best_run_s": round(best, 3), "env_steps_per_s": round(envs * steps / best)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
    for engine in ("c", "mjx"):
        print(json.dumps(time_engine(engine, envs=args.envs, steps=args.steps, repeats=args.repeats)))


if __name__ == "__main__":
    main()
