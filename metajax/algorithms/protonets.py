"""Prototypical Networks (Snell et al. 2017), written on metajax's public API only.

Each class's prototype is the mean embedding of its support examples, c_k = mean_{y_i = k} f(x_i);
a query is classified by the softmax of negative squared Euclidean distances,

    p(y = k | x) = softmax_k(-||f(x) - c_k||^2),

and the embedding f (the model's head input, ``model.embed``) is trained on the query
cross-entropy. There is no inner loop and the head is unused; ``steps`` is ignored at test time.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from metajax.algorithms.base import MetaLearner, task_keys
from metajax.algorithms.objectives import Objective, task_metrics
from metajax.checks import CLASSIFICATION, check_key, check_task
from metajax.models.functional import as_model


def prototypes(features, labels, num_classes: int):
    """``(prototypes (num_classes, F), counts (num_classes,))``: class means of ``features``."""
    onehot = jax.nn.one_hot(labels, num_classes, dtype=features.dtype)
    counts = onehot.sum(0)
    return (onehot.T @ features) / jnp.maximum(counts, 1)[:, None], counts


def prototype_logits(query_features, protos, counts):
    """``-||f(x) - c_k||^2`` per query and class; classes with no support example get ``-inf``."""
    distances = (jnp.sum(query_features ** 2, -1, keepdims=True)
                 - 2 * query_features @ protos.T + jnp.sum(protos ** 2, -1))
    return jnp.where(counts > 0, -distances, -jnp.inf)


def protonets(model, objective: Objective, *, inner_lr: float = 0.0,
              inner_steps: int = 0) -> MetaLearner:
    """ProtoNets; ``inner_lr``/``inner_steps`` are accepted for a uniform signature and unused.

    Args:
      model: a Flax module (or ``metajax.as_model``); its head's input is the embedding.
      objective: ``classification()`` (labels index the prototypes).
    """
    del inner_lr, inner_steps  # no inner loop
    model = as_model(model)

    def episode(params, task, key, state, train):
        (xs, ys), (xq, yq) = task
        support_key, query_key = task_keys(key) if train else (None, None)
        fs, _ = model.embed(params, xs, state=state, key=support_key, train=train)
        fq, new_state = model.embed(params, xq, state=state, key=query_key, train=train)
        # Labels are < the support size, a static bound on the number of classes.
        protos, counts = prototypes(fs.reshape(fs.shape[0], -1), ys, ys.shape[0])
        logits = prototype_logits(fq.reshape(fq.shape[0], -1), protos, counts)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, yq).mean()
        return loss, (task_metrics(objective, logits, yq, loss, jnp.zeros((0,))), new_state)

    def task_grad(params, task, step=0, *, key=None, state=None):
        del step
        # Labels index the prototypes: integer classes whatever the objective.
        check_task(task, "protonets task_grad", CLASSIFICATION)
        check_key(key, "key", "protonets task_grad")
        grads, (metrics, new_state) = jax.grad(episode, has_aux=True)(params, task, key, state,
                                                                      True)
        return grads, metrics, new_state

    def adapt(params, support, steps, *, key=None, state=None):
        del support, steps, key, state  # nothing is adapted
        return params

    def evaluate(params, task, steps, *, key=None, state=None):
        del steps, key
        check_task(task, "protonets evaluate", CLASSIFICATION)
        return episode(jax.lax.stop_gradient(params), task, None, state, False)[1][0]

    return MetaLearner(init=lambda params: params, task_grad=task_grad, adapt=adapt,
                       evaluate=evaluate)
