"""The 4-block convolutional backbone of MAML (Finn et al. 2017; Vinyals et al. 2016)."""
from __future__ import annotations

from typing import Literal

import flax.linen as nn

from metajax.models.base import BodyHead
from metajax.models.layers import ConvBlock, ConvImpl


class Conv4Body(nn.Module):
    """Four conv blocks, then flatten (or average over space: ``head_input="pool"``, the MAML
    reference code's Omniglot model, whose head sees ``hidden`` features). Returns features and
    per-block activations."""

    hidden: int = 64
    downsample: Literal["stride", "pool"] = "stride"
    conv_impl: ConvImpl = "patches"
    head_input: Literal["flatten", "pool"] = "flatten"
    bn: Literal["scale-offset", "offset-only"] = "scale-offset"

    @nn.compact
    def __call__(self, x):
        activations = {}
        for i in range(1, 5):
            x = ConvBlock(self.hidden, self.downsample, self.conv_impl, self.bn,
                          name=f"conv{i}")(x)
            activations[f"conv{i}"] = x
        if self.head_input == "pool":
            return x.mean(axis=(1, 2)), activations
        return x.reshape(x.shape[0], -1), activations


class Conv4(BodyHead):
    """MAML's Conv4: params are ``{"body": {"conv1".."conv4"}, "head": {"kernel", "bias"}}``.

    Omniglot variant: 64 filters, stride-2 convolutions (``downsample="stride"``).
    MiniImageNet variant: 32 filters, 2x2 max-pool (``downsample="pool"``).
    ``bn="offset-only"``: batch norm learns only its offset (MAML's reference code).

    Methods as :class:`BodyHead`; activations are ``conv1``..``conv4`` and ``head``, ``embed``
    gives the flattened conv4 output.
    """

    num_outputs: int
    hidden: int = 64
    downsample: Literal["stride", "pool"] = "stride"
    conv_impl: ConvImpl = "patches"
    head_input: Literal["flatten", "pool"] = "flatten"
    bn: Literal["scale-offset", "offset-only"] = "scale-offset"

    def setup(self):
        if self.head_input not in ("flatten", "pool"):
            raise ValueError(f"unknown --head-input {self.head_input!r}; use flatten or pool")
        self.body = Conv4Body(self.hidden, self.downsample, self.conv_impl, self.head_input,
                              self.bn)
        self.head = nn.Dense(self.num_outputs)
