"""Meta-SGD (Li et al. 2017): meta-learn the initialisation and a per-parameter inner rate.

    min_{theta, alpha} L_Q(theta - alpha * grad L_S(theta))      (alpha elementwise, like theta)

The meta-parameters are ``{"params": theta, "inner_lr": alpha}``; alpha starts at ``inner_lr``
everywhere and may become negative.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from metajax.algorithms.base import MetaLearner
from metajax.algorithms.maml import _model_fns, _task_metrics
from metajax.algorithms.objectives import Objective
from metajax.core.adapt import inner_loop


def metasgd(model, objective: Objective, *, inner_lr: float, inner_steps: int,
            first_order: bool = False, mask=None, unroll: int | bool = True) -> MetaLearner:
    """Meta-SGD; arguments as :func:`metajax.algorithms.maml` (``inner_lr`` is alpha's start)."""
    predict, _, _ = _model_fns(model)

    def batch_loss(params, batch):
        x, y = batch
        return objective.loss(predict(params, x), y)

    def init(params):
        return {"params": params,
                "inner_lr": jax.tree_util.tree_map(lambda p: jnp.full_like(p, inner_lr), params)}

    def adapt_with_losses(meta, support, steps, fo):
        return inner_loop(meta["params"], batch_loss, support, inner_lr=meta["inner_lr"],
                          steps=steps, mask=mask, first_order=fo, unroll=unroll)

    def task_objective(meta, task, steps, fo):
        support, (xq, yq) = task
        adapted, losses = adapt_with_losses(meta, support, steps, fo)
        pred = predict(adapted, xq)
        loss = objective.loss(pred, yq)
        return loss, _task_metrics(objective, pred, yq, loss, losses)

    def task_grad(meta, task):
        return jax.grad(task_objective, has_aux=True)(meta, task, inner_steps, first_order)

    def adapt(meta, support, steps):
        return adapt_with_losses(meta, support, steps, True)[0]

    def evaluate(meta, task, steps):
        return task_objective(jax.lax.stop_gradient(meta), task, steps, True)[1]

    return MetaLearner(init=init, task_grad=task_grad, adapt=adapt, evaluate=evaluate,
                       params_of=lambda meta: meta["params"])
