"""Reptile (Nichol et al. 2018), batched.

For each task i, k SGD steps on the task's examples take theta to W_i; then

    theta <- theta + beta * mean_i (W_i - theta).

Here ``task_grad`` returns the pseudo-gradient theta - W_i, so the shared training step (mean over
tasks, then the outer optimiser) with ``optax.sgd(beta)`` performs exactly that update.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from metajax.algorithms.base import MetaLearner, task_keys
from metajax.algorithms.maml import maml
from metajax.algorithms.objectives import Objective, task_metrics
from metajax.core.adapt import inner_loop
from metajax.models.functional import as_model


def class_balanced_order(labels: jax.Array) -> jax.Array:
    """A permutation listing every class's first example, then every class's second, and so on.

    Within a rank, examples are ordered by label, so consecutive runs of ``ways`` examples hold one
    example of each class (when every class has the same number of examples).
    """
    n = labels.shape[0]
    same = labels[:, None] == labels[None, :]
    earlier = jnp.tril(jnp.ones((n, n), bool), k=-1)
    rank = jnp.sum(same & earlier, axis=1)  # how many examples of this class come before it
    return jnp.argsort(rank * n + labels)


def inner_batches(x, y, batch_size: int):
    """Splits a task's examples into minibatches of ``batch_size``, class-balanced for labels.

    Returns ``(xb, yb)`` of shape ``(n // batch_size, batch_size, ...)``; the remainder is dropped.
    """
    n = y.shape[0]
    if not 1 <= batch_size <= n:
        raise ValueError(f"--inner-batch {batch_size} must be between 1 and the task's {n} "
                         f"examples (support + query)")
    # Class labels are balanced per minibatch; regression targets keep the task's order.
    classes = y.ndim == 1 and jnp.issubdtype(y.dtype, jnp.integer)
    order = class_balanced_order(y) if classes else jnp.arange(n)
    count = n // batch_size
    split = lambda a: a[order][: count * batch_size].reshape(count, batch_size, *a.shape[1:])
    return split(x), split(y)


def reptile(model, objective: Objective, *, inner_lr: float, inner_steps: int,
            inner_batch: int = 0, unroll: int | bool = True) -> MetaLearner:
    """Reptile: move the initialisation towards each task's adapted weights.

    The inner loop trains on support and query examples together (Reptile has no held-out
    query loss); test-time adaptation and evaluation are MAML's (fine-tune on the support set).

    With ``inner_batch = b > 0`` each inner step takes the next class-balanced minibatch of b
    of the task's examples (cycling), as Nichol et al. do: the meta-gradient's second-order term
    then rewards a step on one minibatch that lowers the loss on the next, E[H_j g_i] for i != j
    (within-task generalisation), which full-batch steps on one set cannot express. b = ways
    gives one example of every class per step, the batch a 1-shot support set has at test time.

    Args:
      model, objective: as for :func:`metajax.algorithms.maml`.
      inner_lr: inner SGD step size.
      inner_steps: k, inner steps per task during meta-training (k >= 1).
      inner_batch: examples per inner step (0: all of the task's examples at every step).
    """
    if inner_steps < 1:
        raise ValueError(f"reptile needs --inner-steps >= 1, got {inner_steps}")
    if inner_batch < 0:
        raise ValueError(f"--inner-batch must be >= 0 (0: the whole task), got {inner_batch}")
    model = as_model(model)
    base = maml(model, objective, inner_lr=inner_lr, inner_steps=inner_steps, unroll=unroll)

    def task_grad(params, task, step=0, *, key=None, state=None):
        del step  # not annealed
        inner_key, query_key = task_keys(key)

        def batch_loss(p, batch, key=None):
            x, y = batch
            return objective.loss(model.predict(p, x, state=state, key=key), y)

        (xs, ys), (xq, yq) = task
        x, y = jnp.concatenate([xs, xq]), jnp.concatenate([ys, yq])
        # Full batch is the one-minibatch case. No gradient flows through the inner loop, so
        # do not build second-order terms.
        batches = inner_batches(x, y, inner_batch or y.shape[0])
        adapted, losses = inner_loop(params, batch_loss, batches, inner_lr=inner_lr,
                                     steps=inner_steps, first_order=True, unroll=unroll,
                                     minibatches=True, key=inner_key)
        pred, new_state = model.apply(adapted, xq, state=state, key=query_key)
        metrics = task_metrics(objective, pred, yq, objective.loss(pred, yq), losses)
        return jax.tree_util.tree_map(lambda p, w: p - w, params, adapted), metrics, new_state

    return base._replace(task_grad=task_grad)
