"""Task-parallel training: the task batch is split over a 1-D device mesh, params replicated.

Only the task axis is partitioned, so each device runs the vmapped per-task computation on its
share of tasks and XLA inserts one all-reduce for the mean meta-gradient. On several hosts call
``jax.distributed.initialize()`` first (``metajax train --distributed``); ``jax.devices()`` then
lists every host's devices and the same mesh spans them.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

TASK_AXIS = "tasks"


def task_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``"tasks"`` over ``devices`` (default: all devices)."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (TASK_AXIS,))


def check_divisible(meta_batch: int, mesh: Mesh) -> None:
    n = mesh.size
    if meta_batch % n:
        raise ValueError(f"--meta-batch {meta_batch} cannot be split evenly over {n} devices; "
                         f"use a multiple of {n}")


def shard_tasks(tasks, mesh: Mesh):
    """Constrains every array of a task batch to be split along its leading (task) axis."""
    spec = NamedSharding(mesh, PartitionSpec(TASK_AXIS))
    return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, spec), tasks)


def replicate(tree, mesh: Mesh):
    """Places ``tree`` (params, optimiser state, a data split) on every device of ``mesh``.

    With several processes every process passes the same values and keeps the copies on its own
    devices (``jax.make_array_from_callback``); no data crosses processes.
    """
    sharding = NamedSharding(mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree_util.tree_map(put, tree)


def put_tasks(tasks, mesh: Mesh | None):
    """A host batch of tasks (leading task axis) onto the devices: split over ``mesh``'s devices
    along the task axis, each process placing only its own devices' tasks."""
    if mesh is None:
        return jax.device_put(tasks)
    sharding = NamedSharding(mesh, PartitionSpec(TASK_AXIS))
    if jax.process_count() == 1:
        return jax.device_put(tasks, sharding)

    def put(x):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree_util.tree_map(put, tasks)
