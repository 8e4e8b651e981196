"""2D navigation (Finn et al. 2017, section 5.3): move a point mass to a goal.

    s_0 = (0, 0),   s_{t+1} = s_t + clip(a_t, -0.1, 0.1),   r_t = -|| s_{t+1} - g ||_2,

with the goal g ~ U[low, high]^2 per task. The episode ends once both coordinates of s_{t+1} are
within 0.01 of the goal. The observation is the position.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from metajax.rl.envs.base import Env

MAX_ACTION = 0.1
GOAL_TOLERANCE = 0.01


def make_nav2d(*, low: float = -0.5, high: float = 0.5, dtype=jnp.float32) -> Env:
    """The 2D navigation family with goals drawn uniformly from ``[low, high]^2``."""
    if not high > low:
        raise ValueError(f"nav2d needs low < high for the goal range, got [{low}, {high}]")

    def sample_task(key):
        return jax.random.uniform(key, (2,), dtype, low, high)

    def reset(key, goal):
        del key  # every episode starts at the origin
        state = jnp.zeros((2,), dtype)
        return state, state

    def step(state, action, goal):
        state = state + jnp.clip(action, -MAX_ACTION, MAX_ACTION).astype(state.dtype)
        offset = state - goal
        reward = -jnp.sqrt(jnp.sum(offset * offset))
        done = jnp.all(jnp.abs(offset) < GOAL_TOLERANCE)
        return state, state, reward, done

    return Env(name="nav2d", observation_size=2, action_size=2, sample_task=sample_task,
               reset=reset, step=step)
