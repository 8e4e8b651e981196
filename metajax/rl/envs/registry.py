"""Environments by name; MuJoCo is imported only for the environments that need it."""
from __future__ import annotations

import functools

import jax.numpy as jnp

from metajax.rl.envs.base import Env
from metajax.rl.envs.nav2d import make_nav2d

ENVS = ("nav2d", "halfcheetah-dir", "halfcheetah-vel")
PHYSICS = ("auto", "c", "mjx")


def resolve_physics(physics: str, backend: str | None = None) -> str:
    """The engine ``physics`` names on ``backend`` (default: JAX's): ``"auto"`` is MJX on an
    accelerator, where a ``pure_callback`` into the C library would cost a device-host round
    trip per time step, and the C library on a CPU, where it is about 23x faster
    (``benchmarks/rl_physics.py``, ``experiments/meta_rl/README.md``)."""
    if physics not in PHYSICS:
        raise ValueError(f"unknown --physics {physics!r}; choose one of: {', '.join(PHYSICS)}")
    if physics != "auto":
        return physics
    if backend is None:
        import jax

        backend = jax.default_backend()
    return "c" if backend == "cpu" else "mjx"


@functools.lru_cache(maxsize=None)
def make_env(name: str, *, physics: str = "auto", dtype=jnp.float32) -> Env:
    """The environment family ``name``.

    Args:
      name: one of :data:`ENVS`.
      physics: MuJoCo engine of the HalfCheetah tasks: ``"c"`` (the C library called from the
        compiled rollout through ``jax.pure_callback``), ``"mjx"`` (MuJoCo XLA, pure JAX), or
        ``"auto"`` (see :func:`resolve_physics`).
      dtype: float dtype of observations and rewards.

    Environments are immutable, so one object per set of arguments is built and reused: jitted
    functions that take it as a static argument then compile once.
    """
    if name == "nav2d":
        return make_nav2d(dtype=dtype)
    if name in ("halfcheetah-dir", "halfcheetah-vel"):
        from metajax.rl.envs.halfcheetah import make_halfcheetah

        return make_halfcheetah(name.removeprefix("halfcheetah-"),
                                physics=resolve_physics(physics), dtype=dtype)
    raise ValueError(f"unknown --env {name!r}; choose one of: {', '.join(ENVS)}")
