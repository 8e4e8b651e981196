"""The regression MLP of MAML's sinusoid experiment: two hidden layers of 40 ReLU units."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from metajax.models.base import BodyHead


class MLPBody(nn.Module):
    hidden: Sequence[int] = (40, 40)

    @nn.compact
    def __call__(self, x):
        activations = {}
        for i, width in enumerate(self.hidden, start=1):
            x = nn.relu(nn.Dense(width, name=f"dense{i}")(x))
            activations[f"dense{i}"] = x
        return x, activations


class MLP(BodyHead):
    """MLP with params ``{"body": {"dense1", "dense2"}, "head": {...}}``; same methods as Conv4."""

    num_outputs: int = 1
    hidden: Sequence[int] = (40, 40)

    def setup(self):
        self.body = MLPBody(tuple(self.hidden))
        self.head = nn.Dense(self.num_outputs)
