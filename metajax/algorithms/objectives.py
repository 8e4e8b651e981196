"""Per-task objectives: a loss on predictions and the metrics reported beside it."""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp
import optax

from metajax.checks import CLASSIFICATION, REGRESSION, InputError, describe


class Objective(NamedTuple):
    """``loss(pred, y) -> scalar``; ``metrics(pred, y) -> {name: scalar}`` (``acc`` or ``mse``).

    ``kind`` (``"classification"``, ``"regression"`` or ``None`` for one of your own) tells the
    learners which labels a task must have, so that they check them where the task comes in.
    """

    loss: Callable
    metrics: Callable
    kind: str | None = None


def check_classification(logits, labels, where: str = "classification()") -> None:
    """Logits ``(n, C)`` (or ``(..., C)``) floating point and labels ``(n,)`` (``(...)``)
    integer; checked on static shapes and dtypes only."""
    if not (hasattr(logits, "shape") and logits.ndim >= 1
            and jnp.issubdtype(logits.dtype, jnp.floating)):
        raise InputError(f"{where}: the model's output must be floating-point logits of shape "
                         f"(n, classes), got {describe(logits)}")
    if not (hasattr(labels, "shape") and jnp.issubdtype(labels.dtype, jnp.integer)
            and tuple(labels.shape) == tuple(logits.shape[:-1])):
        expected = f"({', '.join(map(str, logits.shape[:-1]))}{',' if logits.ndim == 2 else ''})"
        raise InputError(f"{where}: labels must be integer class indices of shape {expected} "
                         f"(one per row of the logits {describe(logits)}), got "
                         f"{describe(labels)}")


def check_regression(pred, target, where: str = "regression()") -> None:
    """Predictions and floating-point targets of the same shape (no silent broadcasting)."""
    if not (hasattr(target, "shape") and jnp.issubdtype(target.dtype, jnp.floating)):
        raise InputError(f"{where}: targets must be floating point, got {describe(target)}"
                         + ("; integer class labels need metajax.classification()"
                            if hasattr(target, "dtype") and jnp.issubdtype(target.dtype,
                                                                           jnp.integer) else ""))
    if not hasattr(pred, "shape") or tuple(pred.shape) != tuple(target.shape):
        raise InputError(f"{where}: the model's predictions {describe(pred)} must have the "
                         f"targets' shape {describe(target)} (they would broadcast, silently "
                         f"averaging over every pair of examples); reshape one of them")


def classification() -> Objective:
    """Softmax cross-entropy on integer labels; reports accuracy."""
    def loss(logits, labels):
        check_classification(logits, labels, "classification() loss")
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def metrics(logits, labels):
        check_classification(logits, labels, "classification() metrics")
        return {"acc": (logits.argmax(-1) == labels).mean()}

    return Objective(loss, metrics, CLASSIFICATION)


def regression() -> Objective:
    """Mean squared error; reports it as ``mse``."""
    def loss(pred, target):
        check_regression(pred, target, "regression() loss")
        return jnp.square(pred - target).mean()

    def metrics(pred, target):
        check_regression(pred, target, "regression() metrics")
        return {"mse": jnp.square(pred - target).mean()}

    return Objective(loss, metrics, REGRESSION)


def task_metrics(objective: Objective, pred, target, loss, inner_losses) -> dict:
    """The standard metrics of one task: ``outer/loss``, ``outer/<objective metric>`` (``acc`` or
    ``mse``) of the query predictions, and ``inner/loss_pre`` (the support loss before the first
    inner step) when there was an inner loop (``inner_losses`` has one entry per inner step)."""
    if not (hasattr(inner_losses, "shape") and inner_losses.ndim == 1):
        raise InputError(f"task_metrics: inner_losses must be the 1-D array of support losses, "
                         f"one per inner step (jnp.zeros((0,)) without an inner loop), got "
                         f"{describe(inner_losses)}")
    metrics = {"outer/loss": loss}
    metrics.update({f"outer/{k}": v for k, v in objective.metrics(pred, target).items()})
    if inner_losses.shape[0]:
        metrics["inner/loss_pre"] = inner_losses[0]
    return metrics
