"""Sampling trajectories of one task: ``lax.scan`` over time, ``vmap`` over trajectories.

Episodes that end early (``done``) are padded to the horizon and masked, like the reference's
batched episodes: ``mask[t, b] = 1`` for every step up to and including the one that ended
trajectory ``b``, and rewards are 0 after it.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metajax.rl.envs.base import Env
from metajax.rl.policy import sample_actions


class Trajectories(NamedTuple):
    """A batch of time-major trajectories of one task (leading task axis when vmapped).

    Attributes:
      observations: ``(T, B, S)``: s_t, the observation the action was chosen on.
      actions: ``(T, B, A)``: a_t as sampled (the environment clips it).
      rewards: ``(T, B)``: r_t, 0 once the episode has ended.
      mask: ``(T, B)``: 1 while the episode runs, 0 after.
    """

    observations: jax.Array
    actions: jax.Array
    rewards: jax.Array
    mask: jax.Array


def rollout(env: Env, params, task, *, key, num_trajectories: int, horizon: int) -> Trajectories:
    """Runs ``num_trajectories`` episodes of ``horizon`` steps of ``task`` with policy ``params``.

    Args:
      env: the environment family.
      params: policy params (no gradient flows through sampling).
      task: one task of ``env``.
      key: PRNG key (resets and action noise).
      num_trajectories: batch size B.
      horizon: T, the number of steps per episode.

    Returns:
      :class:`Trajectories` with arrays of shape ``(T, B, ...)``.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if num_trajectories < 1:
        raise ValueError(f"the number of trajectories per task must be >= 1, got {num_trajectories}")
    reset_key, noise_key = jax.random.split(key)
    state, obs = jax.vmap(env.reset, in_axes=(0, None))(
        jax.random.split(reset_key, num_trajectories), task)
    step_env = jax.vmap(env.step, in_axes=(0, 0, None))

    def step(carry, step_key):
        state, obs, alive = carry
        action = sample_actions(params, obs, key=step_key)
        state, next_obs, reward, done = step_env(state, action, task)
        # where, not multiply: whatever a finished episode's dynamics produce is never counted.
        record = (obs, action, jnp.where(alive, reward, 0.0).astype(reward.dtype),
                  alive.astype(reward.dtype))
        return (state, next_obs, alive & ~done), record

    alive = jnp.ones((num_trajectories,), bool)
    _, (obs, actions, rewards, mask) = jax.lax.scan(
        step, (state, obs, alive), jax.random.split(noise_key, horizon))
    return Trajectories(obs, actions, rewards, mask)


def episode_returns(trajectories: Trajectories) -> jax.Array:
    """Undiscounted return of each trajectory: sum_t r_t, shape ``(..., B)``."""
    return trajectories.rewards.sum(axis=-2)
