"""The 4-block convolutional backbone of MAML (Finn et al. 2017; Vinyals et al. 2016)."""
from __future__ import annotations

from typing import Literal

import flax.linen as nn

from metajax.models.layers import ConvBlock, ConvImpl


class Conv4Body(nn.Module):
    """Four conv blocks, then flatten. Returns features and, optionally, per-block activations."""

    hidden: int = 64
    downsample: Literal["stride", "pool"] = "stride"
    conv_impl: ConvImpl = "patches"

    @nn.compact
    def __call__(self, x):
        activations = {}
        for i in range(1, 5):
            x = ConvBlock(self.hidden, self.downsample, self.conv_impl, name=f"conv{i}")(x)
            activations[f"conv{i}"] = x
        return x.reshape(x.shape[0], -1), activations


class Conv4(nn.Module):
    """MAML's Conv4: params are ``{"body": {"conv1".."conv4"}, "head": {"kernel", "bias"}}``.

    Omniglot variant: 64 filters, stride-2 convolutions (``downsample="stride"``).
    MiniImageNet variant: 32 filters, 2x2 max-pool (``downsample="pool"``).

    Methods (use with ``model.apply({"params": params}, x, method=...)``):
      ``__call__(x, return_activations=False)``: logits, or ``(logits, activations)`` where
      activations maps ``conv1``..``conv4`` and ``head`` to that layer's output.
      ``embed(x)``: the flattened penultimate features; needs only ``params["body"]``.
      ``apply_head(features)``: the logits from features; needs only ``params["head"]``.
    """

    num_outputs: int
    hidden: int = 64
    downsample: Literal["stride", "pool"] = "stride"
    conv_impl: ConvImpl = "patches"

    def setup(self):
        self.body = Conv4Body(self.hidden, self.downsample, self.conv_impl)
        self.head = nn.Dense(self.num_outputs)

    def __call__(self, x, return_activations: bool = False):
        features, activations = self.body(x)
        logits = self.head(features)
        if return_activations:
            return logits, {**activations, "head": logits}
        return logits

    def embed(self, x):
        return self.body(x)[0]

    def apply_head(self, features):
        return self.head(features)
