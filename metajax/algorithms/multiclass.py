"""Multiclass pretraining (Raghu et al. 2020, Table 5): supervised learning over all classes.

Training minimises the cross-entropy of one classifier over every class of the training split,

    min_theta  E_{(x, c) ~ train} [ -log softmax(f_theta(x))_c ],

on minibatches of images labelled by class (``metajax.data.sample_class_batch``), with no
episodes and no inner loop. What it produces is a body; Table 5 then trains a fresh N-way head on
it (``metajax train --init-from RUN --train head``) or uses no head at all (NIL).

Test time (validation and ``metajax eval``): the trained C-way head is replaced by a zero head
fine-tuned on the support set for ``steps`` SGD steps of ``inner_lr``, on the body's features
(computed once, as ANIL does), predicting with the task's first N outputs.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from metajax.algorithms.base import MetaLearner
from metajax.algorithms.maml import supervised_grad
from metajax.algorithms.objectives import Objective, task_metrics
from metajax.checks import CLASSIFICATION, check_example_set, check_key, check_static_int, check_task
from metajax.core.adapt import inner_loop
from metajax.models.functional import as_model


def multiclass(model, objective: Objective, *, inner_lr: float, ways: int,
               inner_steps: int = 0, unroll: int | bool = True) -> MetaLearner:
    """Standard supervised training of ``model`` over all training classes.

    Args:
      model: a Flax module (or ``metajax.as_model``) whose head has one output per training
        class, the last axis of each head leaf (as ``nn.Dense``'s kernel and bias).
      objective: ``classification()``.
      inner_lr: the SGD step size of the test-time head.
      ways: N of the N-way test tasks: the fresh head predicts with outputs ``0..N-1``.
      inner_steps: unused (no inner loop in training).
      unroll: ``lax.scan`` unrolling of the test-time head fitting.

    Returns:
      A :class:`MetaLearner` whose ``task_grad`` takes a class-labelled batch as the support of
      its task (the query is not read). ``adapt`` returns the model with the fitted head, still
      C outputs wide: its first ``ways`` outputs are the task's classes, the rest are zero.
    """
    del inner_steps  # supervised training has no inner loop
    model = as_model(model)
    ways = check_static_int(ways, "ways", "multiclass", minimum=2,
                            why="the test-time head predicts with the first N outputs")

    def task_grad(params, task, step=0, *, key=None, state=None):
        del step  # not annealed
        (x, y), _ = check_task(task, "multiclass task_grad", CLASSIFICATION)
        check_key(key, "key", "multiclass task_grad")
        return supervised_grad(model, objective, params, x, y, key=key, state=state)

    def head_loss(head, batch):
        features, y = batch
        return objective.loss(model.apply_head(head, features, train=False)[..., :ways], y)

    def fit_head(params, xs, ys, steps, state):
        features, _ = model.embed(params, xs, state=state, train=False)
        zero = jax.tree_util.tree_map(jnp.zeros_like, model.head_params(params))
        # Outputs >= ways get no gradient (they are sliced off), so they stay zero.
        head, losses = inner_loop(zero, head_loss, (features, ys), inner_lr=inner_lr,
                                  steps=steps, first_order=True, unroll=unroll)
        return head, losses

    def adapt(params, support, steps, *, key=None, state=None):
        del key
        xs, ys = check_example_set(support, "support", "multiclass adapt", CLASSIFICATION,
                                   "support")
        head, _ = fit_head(jax.lax.stop_gradient(params), xs, ys, steps, state)
        return model.replace_head(params, head)

    def evaluate(params, task, steps, *, key=None, state=None):
        del key
        (xs, ys), (xq, yq) = check_task(task, "multiclass evaluate", CLASSIFICATION)
        params = jax.lax.stop_gradient(params)
        head, losses = fit_head(params, xs, ys, steps, state)
        features, _ = model.embed(params, xq, state=state, train=False)
        pred = model.apply_head(head, features, train=False)[..., :ways]
        return task_metrics(objective, pred, yq, objective.loss(pred, yq), losses)

    return MetaLearner(init=lambda params: params, task_grad=task_grad, adapt=adapt,
                       evaluate=evaluate)


# What the training loop draws for this algorithm: class-labelled batches of the whole training
# split (metajax.data.sample_class_batch, --batch-size images), and the model it builds has one
# output per training class.
multiclass.trains_on = "class_batches"
