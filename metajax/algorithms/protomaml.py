"""Proto-MAML (Triantafillou et al. 2020), written on metajax's public API only.

MAML whose linear head is initialised, for each task, from the class prototypes of the support
set, c_k = mean_{y_i = k} f(x_i):

    W_k = 2 c_k,    b_k = -||c_k||^2,

so that before adaptation the head scores a query as ProtoNets does (-||f(x) - c_k||^2 up to a
term constant in k). The inner loop then adapts the network with that head by SGD, and the
meta-gradient flows through the adapted weights AND through the prototypes into the body. The
model's own head params are replaced and so receive no gradient. The head must be a Dense layer
(``kernel`` (F, N), ``bias`` (N,)); N gives the number of classes.
"""
from __future__ import annotations

import jax

from metajax.algorithms.base import MetaLearner, task_keys
from metajax.algorithms.objectives import Objective, task_metrics
from metajax.algorithms.protonets import prototypes
from metajax.core.adapt import inner_loop
from metajax.models.functional import as_model


def protomaml(model, objective: Objective, *, inner_lr: float, inner_steps: int,
              first_order: bool = False, mask=None, unroll: int | bool = True,
              remat: bool = False) -> MetaLearner:
    """Proto-MAML; arguments as ``metajax.maml`` (``mask``: which params the inner loop adapts)."""
    model = as_model(model)

    def prototype_head(params, xs, ys, state, key, train):
        head = model.head_params(params)
        if not (isinstance(head, dict) and set(head) == {"kernel", "bias"}):
            raise ValueError("protomaml needs a Dense head (params 'kernel' and 'bias'); this "
                             f"model's head has {sorted(head) if isinstance(head, dict) else head}")
        features, _ = model.embed(params, xs, state=state, key=key, train=train)
        protos, _ = prototypes(features.reshape(features.shape[0], -1), ys,
                               head["kernel"].shape[-1])
        return model.replace_head(params, {"kernel": 2 * protos.T,
                                           "bias": -(protos ** 2).sum(-1)})

    def adapt_with_losses(params, support, steps, fo, key, state, train):
        xs, ys = support
        proto_key, inner_key = task_keys(key)
        start = prototype_head(params, xs, ys, state, proto_key, train)

        def loss(p, batch, key=None):
            x, y = batch
            return objective.loss(model.predict(p, x, state=state, key=key, train=train), y)

        return inner_loop(start, loss, support, inner_lr=inner_lr, steps=steps, mask=mask,
                          first_order=fo, unroll=unroll, remat=remat, key=inner_key)

    def task_objective(params, task, steps, fo, key, state, train):
        support, (xq, yq) = task
        inner_key, query_key = task_keys(key) if train else (None, None)
        adapted, inner_losses = adapt_with_losses(params, support, steps, fo, inner_key, state,
                                                  train)
        pred, new_state = model.apply(adapted, xq, state=state, key=query_key, train=train)
        loss = objective.loss(pred, yq)
        return loss, (task_metrics(objective, pred, yq, loss, inner_losses), new_state)

    def task_grad(params, task, step=0, *, key=None, state=None):
        del step
        grads, (metrics, new_state) = jax.grad(task_objective, has_aux=True)(
            params, task, inner_steps, first_order, key, state, True)
        return grads, metrics, new_state

    def adapt(params, support, steps, *, key=None, state=None):
        del key
        return adapt_with_losses(params, support, steps, True, None, state, False)[0]

    def evaluate(params, task, steps, *, key=None, state=None):
        del key
        return task_objective(jax.lax.stop_gradient(params), task, steps, True, None, state,
                              False)[1][0]

    return MetaLearner(init=lambda params: params, task_grad=task_grad, adapt=adapt,
                       evaluate=evaluate)
