"""The jitted steps. This is the one place that vmaps over the task axis."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from metajax.training.sharding import check_divisible, shard_tasks
from metajax.training.state import TrainState


def sample_tasks(sample, keys, data):
    """Draws one task per key on the device: ``sample`` vmapped over ``keys``."""
    return jax.vmap(sample, in_axes=(0, None))(keys, data)


def batch_task_grads(learner, params, tasks, step=0):
    """Mean (pseudo-)meta-gradient and mean metrics of a batch of tasks (leading axis).

    ``step`` is the outer step, passed to every task's ``task_grad``.
    """
    grads, metrics = jax.vmap(learner.task_grad, in_axes=(None, 0, None))(params, tasks, step)
    mean = functools.partial(jnp.mean, axis=0)
    return jax.tree_util.tree_map(mean, grads), jax.tree_util.tree_map(mean, metrics)


def make_meta_step(learner, optimizer: optax.GradientTransformation, sample, meta_batch: int,
                   *, jit: bool = True, mesh=None):
    """Builds ``meta_step(state, data) -> (state, metrics)``.

    One outer update: draw ``meta_batch`` tasks from ``data`` with a fresh key, average the tasks'
    meta-gradients, apply the optimiser. With ``jit`` (the default) it is compiled and the state
    argument is donated. With a ``mesh`` (see ``metajax.training.sharding``) the task batch is
    split over its devices; the state should be replicated on it.
    """
    if mesh is not None:
        check_divisible(meta_batch, mesh)

    def meta_step(state: TrainState, data):
        rng, key = jax.random.split(state.rng)
        tasks = sample_tasks(sample, jax.random.split(key, meta_batch), data)
        if mesh is not None:
            tasks = shard_tasks(tasks, mesh)
        grads, metrics = batch_task_grads(learner, state.params, tasks, state.step)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "outer/grad_norm": optax.tree.norm(grads)}
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng)
        return new_state, metrics

    return jax.jit(meta_step, donate_argnums=0) if jit else meta_step


def make_eval_step(learner, sample, inner_steps: int):
    """Builds ``eval_step(params, data, keys) -> metrics``, one value per key, jit-compiled.

    Task ``i`` is drawn from ``keys[i]`` alone, so results do not depend on how tasks are batched.
    """
    def eval_step(params, data, keys):
        tasks = sample_tasks(sample, keys, data)
        return jax.vmap(learner.evaluate, in_axes=(None, 0, None))(params, tasks, inner_steps)

    return jax.jit(eval_step)
