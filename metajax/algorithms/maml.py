"""MAML (Finn et al. 2017), first-order MAML, and ANIL (Raghu et al. 2020).

For one task with support set S and query set Q, MAML minimises over the initialisation theta

    L_Q(U^k(theta; S)),    U(theta; S) = theta - alpha * grad L_S(theta),

differentiating through the k inner steps (second order). FOMAML drops the inner Hessian terms:
its meta-gradient is grad L_Q evaluated at the adapted params. ANIL adapts only the head:
theta = (body, head), the inner loop updates the head on features f = body(x), which are
computed once per task because the body does not change during adaptation.

Models with state (stock batch norm): every training-mode pass normalises with its batch's
statistics; the running averages are left alone by the inner loop and updated once per task, by
the query pass with the adapted weights (``task_grad`` returns that state; the training step keeps
the mean over the task batch). Models with dropout draw a fresh mask per inner step and for the
query pass, from the task's key.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from metajax.algorithms.base import MetaLearner, task_keys
from metajax.algorithms.objectives import Objective, task_metrics
from metajax.checks import check_example_set, check_key, check_task
from metajax.core.adapt import inner_loop
from metajax.models.functional import as_model


def maml(model, objective: Objective, *, inner_lr: float, inner_steps: int,
         first_order: bool = False, mask=None, unroll: int | bool = True,
         remat: bool = False) -> MetaLearner:
    """MAML: meta-learns an initialisation that a few SGD steps adapt to a new task.

    Args:
      model: a Flax module (or ``metajax.as_model(module, head=...)``).
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
                           params_of=lambda meta_params: meta_params,
                           task_start=None) -> MetaLearner:
    """The MAML family: adapt all (masked) params by SGD, meta-learn through the inner loop.

    Args:
      lr_of: ``lr_of(meta_params)`` -> the inner rate(s): a constant (MAML) or learned
        meta-parameters (Meta-SGD: one rate per parameter).
      mask: a mask tree, or a function ``params -> mask`` (BOIL: the body's leaves).
      init, params_of: build meta-parameters from model params, and take them back out.
      task_start: ``task_start(params, support, *, key, state, train) -> params``: where the
        inner loop of one task starts, differentiably (Proto-MAML: a head from the support
        set's prototypes); ``None``: the model params themselves.
      Others: as :func:`maml`.
    """
    model = as_model(model)
    kind = getattr(objective, "kind", None)

    def loss_on(state, train):
        def batch_loss(params, batch, key=None):
            x, y = batch
            return objective.loss(model.predict(params, x, state=state, key=key, train=train), y)
        return batch_loss

    def adapt_with_losses(meta, support, steps, fo, key, state, train):
        params = params_of(meta)
        if task_start is not None:
            start_key, key = task_keys(key)
            params = task_start(params, support, key=start_key, state=state, train=train)
        return inner_loop(params, loss_on(state, train), support, inner_lr=lr_of(meta),
                          steps=steps, mask=mask(params) if callable(mask) else mask,
                          first_order=fo, unroll=unroll, remat=remat, key=key)

    def task_objective(meta, task, steps, fo, key, state, train):
        support, (xq, yq) = task
        inner_key, query_key = task_keys(key) if train else (None, None)
        adapted, inner_losses = adapt_with_losses(meta, support, steps, fo, inner_key, state,
                                                  train)
        pred, new_state = model.apply(adapted, xq, state=state, key=query_key, train=train)
        loss = objective.loss(pred, yq)
        return loss, (task_metrics(objective, pred, yq, loss, inner_losses), new_state)

    def task_grad(meta, task, step=0, *, key=None, state=None):
        del step  # not annealed
        check_task(task, "task_grad", kind)
        check_key(key, "key", "task_grad")
        grads, (metrics, new_state) = jax.grad(task_objective, has_aux=True)(
            meta, task, inner_steps, first_order, key, state, True)
        return grads, metrics, new_state

    def adapt(meta, support, steps, *, key=None, state=None):
        del key  # test-time adaptation is deterministic
        check_example_set(support, "support", "adapt", kind, "support")
        return adapt_with_losses(meta, support, steps, True, None, state, False)[0]

    def evaluate(meta, task, steps, *, key=None, state=None):
        del key
        check_task(task, "evaluate", kind)
        return task_objective(jax.lax.stop_gradient(meta), task, steps, True, None, state,
                              False)[1][0]

    return MetaLearner(init=init, task_grad=task_grad, adapt=adapt, evaluate=evaluate,
                       params_of=params_of)


def fomaml(model, objective: Objective, *, inner_lr: float, inner_steps: int, mask=None,
           unroll: int | bool = True, remat: bool = False) -> MetaLearner:
    """First-order MAML: the meta-gradient is grad L_Q at the adapted params."""
    return maml(model, objective, inner_lr=inner_lr, inner_steps=inner_steps, first_order=True,
                mask=mask, unroll=unroll, remat=remat)


def anil(model, objective: Objective, *, inner_lr: float, inner_steps: int,
         first_order: bool = False, unroll: int | bool = True, remat: bool = False) -> MetaLearner:
    """ANIL (Almost No Inner Loop): MAML whose inner loop adapts only the head.

    The head is the model's (``metajax.as_model``: the ``"head"`` subtree, the last ``nn.Dense``,
    or the one named by ``head=``). Equal to ``maml(..., mask=model.head_mask(params))`` in value
    and gradient, but the features of the support and query sets are computed once per task
    instead of once per inner step, and the inner gradients are those of the head alone.
    """
    model = as_model(model)
    kind = getattr(objective, "kind", None)

    def head_loss(train):
        def loss(head, batch, key=None):
            features, y = batch
            return objective.loss(model.apply_head(head, features, key=key, train=train), y)
        return loss

    def run(params, task, steps, fo, key, state, train):
        (xs, ys), (xq, yq) = task
        support_key, query_key, inner_key, head_key = task_keys(key, 4) if train else (None,) * 4
        features, _ = model.embed(params, xs, state=state, key=support_key, train=train)
        query_features, new_state = model.embed(params, xq, state=state, key=query_key,
                                                train=train)
        head, inner_losses = inner_loop(model.head_params(params), head_loss(train),
                                        (features, ys), inner_lr=inner_lr, steps=steps,
                                        first_order=fo, unroll=unroll, remat=remat, key=inner_key)
        pred = model.apply_head(head, query_features, key=head_key, train=train)
        loss = objective.loss(pred, yq)
        return loss, (task_metrics(objective, pred, yq, loss, inner_losses), new_state)

    def task_grad(params, task, step=0, *, key=None, state=None):
        del step  # not annealed
        check_task(task, "anil task_grad", kind)
        check_key(key, "key", "anil task_grad")
        grads, (metrics, new_state) = jax.grad(run, has_aux=True)(
            params, task, inner_steps, first_order, key, state, True)
        return grads, metrics, new_state

    def adapt(params, support, steps, *, key=None, state=None):
        del key
        xs, ys = check_example_set(support, "support", "anil adapt", kind, "support")
        features, _ = model.embed(params, xs, state=state, train=False)
        head, _ = inner_loop(model.head_params(params), head_loss(False), (features, ys),
                             inner_lr=inner_lr, steps=steps, first_order=True, unroll=unroll)
        return model.replace_head(params, head)

    def evaluate(params, task, steps, *, key=None, state=None):
        del key
        check_task(task, "anil evaluate", kind)
        return run(jax.lax.stop_gradient(params), task, steps, True, None, state, False)[1][0]

    return MetaLearner(init=lambda params: params, task_grad=task_grad, adapt=adapt,
                       evaluate=evaluate)


# ANIL's inner loop adapts the head alone by definition (``--train head`` needs no mask for it).
anil.adapts_head_only = True


def multitask(model, objective: Objective, *, inner_lr: float, inner_steps: int = 0,
              unroll: int | bool = True) -> MetaLearner:
    """Multitask training: one model trained on all tasks jointly (MAML's sinusoid transfer
    baseline; Raghu et al.'s "multitask" body of Table 5). ``pretrain`` is the same factory.

    Meta-training minimises L_{S u Q}(theta) with no inner loop; test time fine-tunes with
    ``steps`` SGD steps of size ``inner_lr`` on the support set, like MAML.
    """
    del inner_steps  # joint training has no inner loop
    model = as_model(model)
    base = maml(model, objective, inner_lr=inner_lr, inner_steps=0, unroll=unroll)

    def task_grad(params, task, step=0, *, key=None, state=None):
        del step  # not annealed
        (xs, ys), (xq, yq) = check_task(task, "multitask task_grad",
                                        getattr(objective, "kind", None))
        check_key(key, "key", "multitask task_grad")
        return supervised_grad(model, objective, params, jnp.concatenate([xs, xq]),
                               jnp.concatenate([ys, yq]), key=key, state=state)

    return base._replace(task_grad=task_grad)


def supervised_grad(model, objective: Objective, params, x, y, *, key=None, state=None):
    """``(grads, metrics, new_state)`` of the plain loss L(f_params(x), y): no inner loop (the
    training step of multitask and multiclass training)."""
    def loss(p):
        pred, new_state = model.apply(p, x, state=state, key=key)
        value = objective.loss(pred, y)
        return value, (task_metrics(objective, pred, y, value, jnp.zeros((0,))), new_state)

    grads, (metrics, new_state) = jax.grad(loss, has_aux=True)(params)
    return grads, metrics, new_state


pretrain = multitask  # the name of earlier metajax versions (configs and runs still use it)
