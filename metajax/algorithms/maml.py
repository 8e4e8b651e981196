"""MAML (Finn et al. 2017), first-order MAML, and ANIL (Raghu et al. 2020).

For one task with support set S and query set Q, MAML minimises over the initialisation theta

    L_Q(U^k(theta; S)),    U(theta; S) = theta - alpha * grad L_S(theta),

differentiating through the k inner steps (second order). FOMAML drops the inner Hessian terms:
its meta-gradient is grad L_Q evaluated at the adapted params. ANIL adapts only the head:
theta = (body, head), the inner loop updates the head on features f = body(x), which are
computed once per task because the body does not change during adaptation.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from metajax.algorithms.base import MetaLearner
from metajax.algorithms.objectives import Objective
from metajax.core.adapt import inner_loop


def _model_fns(model):
    def predict(params, x):
        return model.apply({"params": params}, x)

    def embed(body, x):
        return model.apply({"params": {"body": body}}, x, method="embed")

    def apply_head(head, features):
        return model.apply({"params": {"head": head}}, features, method="apply_head")

    return predict, embed, apply_head


def _task_metrics(objective: Objective, pred, target, loss, inner_losses) -> dict:
    metrics = {"outer/loss": loss}
    metrics.update({f"outer/{k}": v for k, v in objective.metrics(pred, target).items()})
    if inner_losses.shape[0]:
        metrics["inner/loss_pre"] = inner_losses[0]
    return metrics


def maml(model, objective: Objective, *, inner_lr: float, inner_steps: int,
         first_order: bool = False, mask=None, unroll: int | bool = True,
         remat: bool = False) -> MetaLearner:
    """MAML: meta-learns an initialisation that a few SGD steps adapt to a new task.

    Args:
      model: a Flax module whose params are ``{"body", "head"}`` (e.g. ``Conv4``, ``MLP``).
      objective: ``classification()`` or ``regression()``.
      inner_lr: alpha, the inner SGD step size.
      inner_steps: k, inner steps during meta-training (test time passes its own count).
      first_order: FOMAML: treat inner gradients as constants.
      mask: which params the inner loop adapts (``None``: all); e.g. a freeze mask.
      unroll: ``lax.scan`` unrolling of the inner loop.
      remat: recompute each inner step in the outer backward pass (memory flat in steps).
    """
    return gradient_based_learner(model, objective, inner_steps=inner_steps,
                                  lr_of=lambda params: inner_lr, first_order=first_order,
                                  mask=mask, unroll=unroll, remat=remat)


def gradient_based_learner(model, objective: Objective, *, inner_steps: int, lr_of,
                           first_order: bool = False, mask=None, unroll: int | bool = True,
                           remat: bool = False, init=lambda params: params,
                           params_of=lambda meta_params: meta_params) -> MetaLearner:
    """The MAML family: adapt all (masked) params by SGD, meta-learn through the inner loop.

    Args:
      lr_of: ``lr_of(meta_params)`` -> the inner rate(s): a constant (MAML) or learned
        meta-parameters (Meta-SGD: one rate per parameter).
      init, params_of: build meta-parameters from model params, and take them back out.
      Others: as :func:`maml`.
    """
    predict, _, _ = _model_fns(model)

    def batch_loss(params, batch):
        x, y = batch
        return objective.loss(predict(params, x), y)

    def adapt_with_losses(meta, support, steps, fo):
        return inner_loop(params_of(meta), batch_loss, support, inner_lr=lr_of(meta), steps=steps,
                          mask=mask, first_order=fo, unroll=unroll, remat=remat)

    def task_objective(meta, task, steps, fo):
        support, (xq, yq) = task
        adapted, inner_losses = adapt_with_losses(meta, support, steps, fo)
        pred = predict(adapted, xq)
        loss = objective.loss(pred, yq)
        return loss, _task_metrics(objective, pred, yq, loss, inner_losses)

    def task_grad(meta, task, step=0):
        del step  # not annealed
        return jax.grad(task_objective, has_aux=True)(meta, task, inner_steps, first_order)

    def adapt(meta, support, steps):
        return adapt_with_losses(meta, support, steps, True)[0]

    def evaluate(meta, task, steps):
        return task_objective(jax.lax.stop_gradient(meta), task, steps, True)[1]

    return MetaLearner(init=init, task_grad=task_grad, adapt=adapt, evaluate=evaluate,
                       params_of=params_of)


def fomaml(model, objective: Objective, *, inner_lr: float, inner_steps: int, mask=None,
           unroll: int | bool = True, remat: bool = False) -> MetaLearner:
    """First-order MAML: the meta-gradient is grad L_Q at the adapted params."""
    return maml(model, objective, inner_lr=inner_lr, inner_steps=inner_steps, first_order=True,
                mask=mask, unroll=unroll, remat=remat)


def anil(model, objective: Objective, *, inner_lr: float, inner_steps: int,
         first_order: bool = False, unroll: int | bool = True, remat: bool = False) -> MetaLearner:
    """ANIL (Almost No Inner Loop): MAML whose inner loop adapts only ``params["head"]``.

    Equal to ``maml(..., mask=head_only_mask(params))`` in value and gradient, but the body's
    features of the support and query sets are computed once per task instead of once per inner
    step, and the inner gradients are those of the head alone.
    """
    _, embed, apply_head = _model_fns(model)

    def head_loss(head, batch):
        features, y = batch
        return objective.loss(apply_head(head, features), y)

    def adapt_head(params, support, steps, fo):
        xs, ys = support
        features = embed(params["body"], xs)
        return inner_loop(params["head"], head_loss, (features, ys), inner_lr=inner_lr,
                          steps=steps, first_order=fo, unroll=unroll, remat=remat)

    def task_objective(params, task, steps, fo):
        support, (xq, yq) = task
        head, inner_losses = adapt_head(params, support, steps, fo)
        pred = apply_head(head, embed(params["body"], xq))
        loss = objective.loss(pred, yq)
        return loss, _task_metrics(objective, pred, yq, loss, inner_losses)

    def task_grad(params, task, step=0):
        del step  # not annealed
        return jax.grad(task_objective, has_aux=True)(params, task, inner_steps, first_order)

    def adapt(params, support, steps):
        return {**params, "head": adapt_head(params, support, steps, True)[0]}

    def evaluate(params, task, steps):
        return task_objective(jax.lax.stop_gradient(params), task, steps, True)[1]

    return MetaLearner(init=lambda params: params, task_grad=task_grad, adapt=adapt,
                       evaluate=evaluate)


def pretrain(model, objective: Objective, *, inner_lr: float, inner_steps: int = 0,
             unroll: int | bool = True) -> MetaLearner:
    """The transfer baseline of MAML's sinusoid experiment: train one model on all tasks jointly.

    Meta-training minimises L_{S u Q}(theta) with no inner loop; test time fine-tunes with
    ``steps`` SGD steps of size ``inner_lr`` on the support set, like MAML.
    """
    del inner_steps  # joint training has no inner loop
    base = maml(model, objective, inner_lr=inner_lr, inner_steps=0, unroll=unroll)
    predict, _, _ = _model_fns(model)

    def task_grad(params, task, step=0):
        del step  # not annealed
        (xs, ys), (xq, yq) = task
        x, y = jnp.concatenate([xs, xq]), jnp.concatenate([ys, yq])

        def joint_loss(p):
            pred = predict(p, x)
            loss = objective.loss(pred, y)
            return loss, _task_metrics(objective, pred, y, loss, jnp.zeros((0,)))

        return jax.grad(joint_loss, has_aux=True)(params)

    return base._replace(task_grad=task_grad)
