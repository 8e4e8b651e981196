"""Reptile (Nichol et al. 2018), batched.

For each task i, k SGD steps on the task's examples take theta to W_i; then

    theta <- theta + beta * mean_i (W_i - theta).

Here ``task_grad`` returns the pseudo-gradient theta - W_i, so the shared training step (mean over
tasks, then the outer optimiser) with ``optax.sgd(beta)`` performs exactly that update.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from metajax.algorithms.base import MetaLearner
from metajax.algorithms.maml import _model_fns, _task_metrics, maml
from metajax.algorithms.objectives import Objective
from metajax.core.adapt import inner_loop


def reptile(model, objective: Objective, *, inner_lr: float, inner_steps: int,
            unroll: int | bool = True) -> MetaLearner:
    """Reptile: move the initialisation towards each task's adapted weights.

    The inner loop trains on support and query examples together (Reptile has no held-out
    query loss); test-time adaptation and evaluation are MAML's (fine-tune on the support set).

    Args:
      model, objective: as for :func:`metajax.algorithms.maml`.
      inner_lr: inner SGD step size.
      inner_steps: k, inner steps per task during meta-training (k >= 1).
    """
    if inner_steps < 1:
        raise ValueError(f"reptile needs --inner-steps >= 1, got {inner_steps}")
    base = maml(model, objective, inner_lr=inner_lr, inner_steps=inner_steps, unroll=unroll)
    predict, _, _ = _model_fns(model)

    def batch_loss(params, batch):
        x, y = batch
        return objective.loss(predict(params, x), y)

    def task_grad(params, task, step=0):
        del step  # not annealed
        (xs, ys), (xq, yq) = task
        data = (jnp.concatenate([xs, xq]), jnp.concatenate([ys, yq]))
        # No gradient flows through the inner loop, so do not build second-order terms.
        adapted, losses = inner_loop(params, batch_loss, data, inner_lr=inner_lr,
                                     steps=inner_steps, first_order=True, unroll=unroll)
        pred = predict(adapted, xq)
        metrics = _task_metrics(objective, pred, yq, objective.loss(pred, yq), losses)
        return jax.tree_util.tree_map(lambda p, w: p - w, params, adapted), metrics

    return base._replace(task_grad=task_grad)
