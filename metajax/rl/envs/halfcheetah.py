"""HalfCheetah-Direction and HalfCheetah-Velocity (Finn et al. 2017, section 5.3).

MuJoCo's HalfCheetah (gymnasium's model: timestep 0.01, frame skip 5, so dt = 0.05). Reset:
qpos = qpos0 + U(-0.1, 0.1), qvel = 0.1 N(0, I). Observation (20 values): qpos[1:], qvel, the
torso position. The policy's action is clipped to [-10, 10] and divided by 10 (the reference's
action normalisation) to give the control u in [-1, 1]^6. With v = (x_after - x_before) / dt
the torso's forward velocity and a control cost 0.05 |u|^2, the reward is

    Dir:  d v - 0.05 |u|^2,          d in {-1, +1} per task (backward / forward),
    Vel:  -|v - v_goal| - 0.05 |u|^2,  v_goal ~ U[0, 2] per task.

Episodes never terminate early; the horizon ends them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from metajax.rl.envs.base import Env
from metajax.rl.envs.mujoco_physics import Physics, make_physics

FRAME_SKIP = 5
ACTION_SCALE = 10.0
CONTROL_COST = 0.05
RESET_NOISE = 0.1
KINDS = ("dir", "vel")


def make_halfcheetah(kind: str, *, physics: str = "c", dtype=jnp.float32) -> Env:
    """HalfCheetah-``kind`` (``"dir"`` or ``"vel"``) simulated by the ``physics`` engine."""
    if kind not in KINDS:
        raise ValueError(f"unknown HalfCheetah task {kind!r}; use one of {KINDS}")
    sim = make_physics("half_cheetah.xml", "torso", engine=physics, frame_skip=FRAME_SKIP,
                       dtype=dtype)
    return halfcheetah_env(kind, sim, dtype)


def halfcheetah_env(kind: str, sim: Physics, dtype) -> Env:
    """The task family on a given :class:`Physics` (tests pass the two engines)."""
    dt = sim.timestep * sim.frame_skip
    init_qpos = jnp.asarray(sim.init_qpos, dtype)
    init_qvel = jnp.asarray(sim.init_qvel, dtype)

    def sample_task(key):
        if kind == "dir":
            return 2.0 * jax.random.bernoulli(key).astype(dtype) - 1.0
        return jax.random.uniform(key, (), dtype, 0.0, 2.0)

    def observe(state):
        return jnp.concatenate([state.qpos[1:], state.qvel, state.body_pos])

    def reset(key, task):
        del task
        pos_key, vel_key = jax.random.split(key)
        qpos = init_qpos + jax.random.uniform(pos_key, init_qpos.shape, dtype, -RESET_NOISE,
                                              RESET_NOISE)
        qvel = init_qvel + RESET_NOISE * jax.random.normal(vel_key, init_qvel.shape, dtype)
        state = sim.reset(qpos, qvel)
        return state, observe(state)

    def step(state, action, task):
        ctrl = jnp.clip(action, -ACTION_SCALE, ACTION_SCALE).astype(dtype) / ACTION_SCALE
        new = sim.step(state, ctrl)
        velocity = (new.qpos[0] - state.qpos[0]) / dt
        cost = CONTROL_COST * jnp.sum(ctrl * ctrl)
        forward = task * velocity if kind == "dir" else -jnp.abs(velocity - task)
        return new, observe(new), forward - cost, jnp.zeros((), bool)

    return Env(name=f"halfcheetah-{kind}", observation_size=20, action_size=6,
               sample_task=sample_task, reset=reset, step=step)
