"""The jitted steps. This is the one place that maps one-task functions over the task axis.

How the task axis is mapped is a choice per backend (``task_chunk``): ``vmap`` over the whole
batch suits accelerators; on a CPU a sequential ``lax.map`` over tasks is faster (each task's
activations stay in cache, and the compiled program is smaller), measured in
``benchmarks/meta_step.py --task-chunk``.
"""
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


def default_task_chunk(backend: str | None = None) -> int:
    """Tasks mapped at a time on ``backend`` (default: JAX's): 1 on a CPU, else 0 (all)."""
    return 1 if (backend or jax.default_backend()) == "cpu" else 0


def map_tasks(fn, tasks, *, chunk: int | None = None, mesh=None):
    """Applies the one-task function ``fn`` to every task (leading axis) of ``tasks``.

    Args:
      fn: ``task -> pytree``; it handles one task.
      tasks: a pytree whose leaves have the task axis first.
      chunk: tasks vectorised at a time: 0 vmaps the whole batch; ``k >= 1`` runs a
        ``lax.map`` over chunks of ``k`` tasks (each chunk vmapped; 1 is a plain sequential
        map). None: :func:`default_task_chunk` of the backend. The result is the same.
      mesh: the task mesh the batch is sharded over, if any. With a chunk, each device maps over
        its own tasks (the batch is viewed as ``(devices, tasks per device)``).

    Returns:
      ``fn``'s outputs stacked on a leading task axis.
    """
    chunk = default_task_chunk() if chunk is None else chunk
    if chunk < 0:
        raise ValueError(f"task chunk must be >= 0 (0: the whole batch at once), got {chunk}")
    if chunk == 0:
        return jax.vmap(fn)(tasks)

    def sequential(batch):
        return jax.lax.map(fn, batch, batch_size=chunk if chunk > 1 else None)

    if mesh is None or mesh.size == 1:
        return sequential(tasks)
    split = jax.tree_util.tree_map(lambda a: a.reshape(mesh.size, -1, *a.shape[1:]), tasks)
    out = jax.vmap(sequential)(split)
    return jax.tree_util.tree_map(lambda a: a.reshape(-1, *a.shape[2:]), out)


def batch_task_grads(learner, params, tasks, step=0, *, keys=None, model_state=None,
                     chunk: int | None = None, mesh=None):
    """Mean (pseudo-)meta-gradient, mean metrics and mean model state of a batch of tasks.

    Args:
      learner: a ``MetaLearner``.
      params: its meta-parameters.
      tasks: a batch of tasks (leading axis).
      step: the outer step, passed to every task's ``task_grad``.
      keys: one RNG key per task (dropout), or ``None``.
      model_state: the model's state before the step (``{}``/``None``: none).
      chunk, mesh: as in :func:`map_tasks`.

    Returns:
      ``(grads, metrics, model_state)``, each the mean over tasks (the state keeps its dtypes).
    """
    def one(task_and_key):
        task, key = task_and_key
        return learner.task_grad(params, task, step, key=key, state=model_state)

    grads, metrics, states = map_tasks(one, (tasks, keys), chunk=chunk, mesh=mesh)
    mean = functools.partial(jnp.mean, axis=0)
    new_state = jax.tree_util.tree_map(lambda s, old: mean(s).astype(old.dtype), states,
                                       model_state) if model_state else model_state
    return jax.tree_util.tree_map(mean, grads), jax.tree_util.tree_map(mean, metrics), new_state


def make_meta_step(learner, optimizer: optax.GradientTransformation, sample, meta_batch: int,
                   *, jit: bool = True, mesh=None, task_chunk: int | None = None,
                   presampled: bool = False, seeds: bool = False,
                   seed_chunk: int | None = None, compiler_options: dict | None = None):
    """Builds ``meta_step(state, data) -> (state, metrics)``.

    One outer update: draw ``meta_batch`` tasks from ``data`` with a fresh key, average the tasks'
    meta-gradients, apply the optimiser. With ``jit`` (the default) it is compiled and the state
    argument is donated. With a ``mesh`` (see ``metajax.training.sharding``) the task batch is
    split over its devices; the state should be replicated on it. ``task_chunk``: see
    :func:`map_tasks`. With ``presampled``, ``data`` is the step's batch of tasks itself (drawn on
    the host from the same keys, see :func:`step_sample_keys`), and ``sample`` is unused.

    Keys: the state's key splits into the next state's key, the key the tasks are drawn from
    and the key of the tasks' randomness (dropout), one per task.

    With ``seeds``, the state holds independent runs stacked on a leading seed axis (see
    :func:`stack_states`) that share ``data``; each is stepped as on its own, and the metrics get
    the seed axis too. ``seed_chunk`` maps the seed axis like ``task_chunk`` maps tasks (0: vmap
    every seed; ``k >= 1``: ``lax.map`` over chunks of ``k``; None: the backend's default). With
    ``seed_chunk=1`` each seed's numbers are bit for bit those of its own single-seed step; a
    vmap batches each seed's convolutions and matmuls into one, whose float sums XLA may order
    differently (differences of float rounding, compounded by training).

    ``compiler_options``: XLA options the step is compiled with (``jax.jit``'s), e.g.
    :func:`metajax.models.conv.compiler_options`, which picks the library XLA:CPU runs native
    convolutions with; None compiles with XLA's defaults.
    """
    if mesh is not None:
        check_divisible(meta_batch, mesh)

    def meta_step(state: TrainState, data):
        rng, sample_key, task_key = jax.random.split(state.rng, 3)
        if presampled:
            tasks = data
        else:
            tasks = sample_tasks(sample, jax.random.split(sample_key, meta_batch), data)
        keys = jax.random.split(task_key, meta_batch)
        if mesh is not None:
            tasks, keys = shard_tasks((tasks, keys), mesh)
        grads, metrics, model_state = batch_task_grads(
            learner, state.params, tasks, state.step, keys=keys, model_state=state.model_state,
            chunk=task_chunk, mesh=mesh)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "outer/grad_norm": optax.tree.norm(grads)}
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng,
                                  model_state=model_state)
        return new_state, metrics

    if seeds:
        one_seed = meta_step

        def meta_step(state, data):
            return map_tasks(lambda s: one_seed(s, data), state, chunk=seed_chunk)

    if not jit:
        return meta_step
    return jax.jit(meta_step, donate_argnums=0, compiler_options=compiler_options or None)


def stack_states(states):
    """Independent train states (one per seed) as one state with a leading seed axis."""
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *states)


@functools.partial(jax.jit, static_argnums=1)
def unstack_state(state, index: int):
    """Seed ``index``'s state of a stacked state (see :func:`stack_states`).

    Compiled with the index as a constant, so a state replicated over a mesh is sliced where it
    lies (indexing it eagerly would first copy the index to every device).
    """
    return jax.tree_util.tree_map(lambda leaf: leaf[index], state)


def step_sample_keys(rng, meta_batch: int):
    """``(next rng, task-sampling keys)`` of a step whose state holds ``rng``, as the meta step
    derives them, so that the host can draw a step's tasks ahead of it (``presampled``)."""
    next_rng, sample_key, _ = jax.random.split(rng, 3)
    return next_rng, jax.random.split(sample_key, meta_batch)


def make_eval_step(learner, sample, inner_steps: int, *, task_chunk: int | None = None,
                   presampled: bool = False, mesh=None, compiler_options: dict | None = None):
    """Builds ``eval_step(params, model_state, data, keys) -> metrics``, one value per key, jitted.

    Task ``i`` is drawn from ``keys[i]`` alone, so results do not depend on how tasks are batched.
    ``task_chunk``: see :func:`map_tasks`. With ``presampled``, ``data`` is the batch of tasks
    (drawn on the host from ``keys``). With a ``mesh`` the tasks are split over its devices (the
    batch must divide evenly) and the per-task results are gathered on every device, so every
    process can read them. ``compiler_options``: as in :func:`make_meta_step`.
    """
    def eval_step(params, model_state, data, keys):
        tasks = data if presampled else sample_tasks(sample, keys, data)
        if mesh is not None:
            tasks = shard_tasks(tasks, mesh)
        return map_tasks(lambda task: learner.evaluate(params, task, inner_steps,
                                                       state=model_state),
                         tasks, chunk=task_chunk, mesh=mesh)

    options = compiler_options or None
    if mesh is None:
        return jax.jit(eval_step, compiler_options=options)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.jit(eval_step, out_shardings=replicated, compiler_options=options)
