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
