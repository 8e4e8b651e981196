"""The body/head contract every backbone follows."""
from __future__ import annotations

import flax.linen as nn


class BodyHead(nn.Module):
    """A backbone with submodules ``body`` (returns ``(features, activations)``) and ``head``.

    Subclasses define them in ``setup``; params are then ``{"body": ..., "head": ...}``.

    Methods (use with ``model.apply({"params": params}, x, method=...)``):
      ``__call__(x, return_activations=False)``: outputs, or ``(outputs, activations)`` where
      activations maps each body layer's name and ``"head"`` to that layer's output.
      ``embed(x)``: the penultimate features; needs only ``params["body"]``.
      ``apply_head(features)``: outputs from features; needs only ``params["head"]``.
    """

    def __call__(self, x, return_activations: bool = False):
        features, activations = self.body(x)
        out = self.head(features)
        if return_activations:
            return out, {**activations, "head": out}
        return out

    def embed(self, x):
        return self.body(x)[0]

    def apply_head(self, features):
        return self.head(features)
