"""NIL, No Inner Loop (Raghu et al. 2020, section 4): a test-time head without any adaptation.

Drop the trained head; embed support and query with the body (penultimate layer) and predict

    p(q) = sum_j cos(f(q), f(s_j)) * onehot(y_j),

the cosine-similarity-weighted sum of the support labels; the predicted class is its argmax.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from metajax.algorithms.base import MetaLearner
from metajax.checks import CLASSIFICATION, check_static_int, check_task
from metajax.models.functional import as_model


def nil_scores(support_features, support_labels, query_features, num_classes: int):
    """Cosine-similarity-weighted label votes, shape ``(num_query, num_classes)``."""
    def normalise(f):
        return f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), 1e-12)

    similarity = normalise(query_features) @ normalise(support_features).T
    return similarity @ jax.nn.one_hot(support_labels, num_classes, dtype=similarity.dtype)


def nil(learner: MetaLearner, model, num_classes: int) -> MetaLearner:
    """Replaces ``learner.evaluate`` by NIL: no inner loop, no head, at test time.

    Args:
      learner: the trained algorithm (its ``params_of`` finds the model params).
      model: the backbone (a Flax module or ``metajax.as_model(...)``); its head's input are the
        features compared.
      num_classes: N of the N-way tasks.

    The reported ``outer/loss`` is the cross-entropy of the softmax of the scores (a diagnostic:
    NIL is not trained on it); ``steps`` is ignored.
    """
    model = as_model(model)
    num_classes = check_static_int(num_classes, "num_classes", "nil", minimum=1,
                                   why="it fixes the scores' shape")

    def evaluate(meta_params, task, steps, *, key=None, state=None):
        del steps, key  # NIL has no inner loop
        check_task(task, "nil evaluate", CLASSIFICATION)
        params = jax.lax.stop_gradient(learner.params_of(meta_params))
        embed = lambda p, x: model.embed(p, x, state=state, train=False)[0]
        (xs, ys), (xq, yq) = task
        scores = nil_scores(embed(params, xs), ys, embed(params, xq), num_classes)
        loss = optax.softmax_cross_entropy_with_integer_labels(scores, yq).mean()
        return {"outer/loss": loss, "outer/acc": (scores.argmax(-1) == yq).mean()}

    return learner._replace(evaluate=evaluate)
