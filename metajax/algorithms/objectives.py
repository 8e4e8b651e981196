"""Per-task objectives: a loss on predictions and the metrics reported beside it."""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp
import optax


class Objective(NamedTuple):
    """``loss(pred, y) -> scalar``; ``metrics(pred, y) -> {name: scalar}`` (``acc`` or ``mse``)."""

    loss: Callable
    metrics: Callable


def classification() -> Objective:
    """Softmax cross-entropy on integer labels; reports accuracy."""
    def loss(logits, labels):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def metrics(logits, labels):
        return {"acc": (logits.argmax(-1) == labels).mean()}

    return Objective(loss, metrics)


def regression() -> Objective:
    """Mean squared error; reports it as ``mse``."""
    def loss(pred, target):
        return jnp.square(pred - target).mean()

    def metrics(pred, target):
        return {"mse": jnp.square(pred - target).mean()}

    return Objective(loss, metrics)


def task_metrics(objective: Objective, pred, target, loss, inner_losses) -> dict:
    """The standard metrics of one task: ``outer/loss``, ``outer/<objective metric>`` (``acc`` or
    ``mse``) of the query predictions, and ``inner/loss_pre`` (the support loss before the first
    inner step) when there was an inner loop (``inner_losses`` has one entry per inner step)."""
    metrics = {"outer/loss": loss}
    metrics.update({f"outer/{k}": v for k, v in objective.metrics(pred, target).items()})
    if inner_losses.shape[0]:
        metrics["inner/loss_pre"] = inner_losses[0]
    return metrics
