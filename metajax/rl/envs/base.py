"""The environment interface: a task distribution and pure, single-environment reset/step.

Everything is one environment; rollouts vmap ``reset``/``step`` over trajectories and tasks,
and ``lax.scan`` them over time. A task is a pytree (e.g. a goal), sampled per meta-batch.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

Task = Any
State = Any


@dataclasses.dataclass(frozen=True)
class Env:
    """A meta-RL environment family.

    Attributes:
      name: registry name, e.g. ``"nav2d"``.
      observation_size: length of an observation vector.
      action_size: length of an action vector.
      sample_task: ``sample_task(key) -> task``.
      reset: ``reset(key, task) -> (state, observation)``: a fresh episode's start.
      step: ``step(state, action, task) -> (state, observation, reward, done)`` with a float
        reward and a bool ``done`` (the episode ends after this transition).
    """

    name: str
    observation_size: int
    action_size: int
    sample_task: Callable[[jax.Array], Task]
    reset: Callable[[jax.Array, Task], tuple[State, jax.Array]]
    step: Callable[[State, jax.Array, Task], tuple[State, jax.Array, jax.Array, jax.Array]]
