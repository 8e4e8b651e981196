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
    """Places ``tree`` (params, optimiser state) on every device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))
