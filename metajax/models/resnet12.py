"""The ResNet-12 backbone of few-shot classification (Oreshkin et al. 2018, TADAM; Lee et al. 2019,
MetaOptNet).

Four residual blocks of widths 64-160-320-640. Each block is

    x -> conv3x3 -> BN -> LeakyReLU(0.1) -> conv3x3 -> BN -> LeakyReLU(0.1) -> conv3x3 -> BN --+
    |                                                                                          + -> LeakyReLU(0.1) -> 2x2 max-pool [-> dropout]
    +-> conv1x1 -> BN -------------------------------------------------------------------------+

with bias-free convolutions. Global average pooling of the last block gives the 640-d feature,
and a dense layer the outputs.

Unlike Conv4, the convolutions are Flax's native ``nn.Conv`` and the batch norms are the stock
``nn.BatchNorm`` with running statistics (collection ``"batch_stats"``): this network is trained
with ordinary (first-order / metric-based) episodes, where both are the usual choice.

Train / eval mode. ``ResNet12(train=True)`` (the default) builds every ``nn.BatchNorm`` with
``use_running_average=not train`` and every ``nn.Dropout`` with ``deterministic=not train``, as
constructor attributes, and calls them without the keyword. So

* ``train=True``: batch norm normalises with the batch's statistics and, when ``apply`` is
  given ``mutable=["batch_stats"]``, updates the running averages (momentum 0.9, i.e. PyTorch's
  0.1); dropout is active and needs a ``"dropout"`` RNG.
* ``train=False``: batch norm uses the running averages (each example's output is independent
  of the rest of the batch); dropout is the identity.

A caller can also flip the mode of an existing model with ``flax.linen.intercept_methods``:
clear the constructor attribute of the intercepted ``nn.BatchNorm`` / ``nn.Dropout`` and pass
``use_running_average`` / ``deterministic`` as the call keyword (Flax's ``merge_param`` accepts
exactly one of the two).

Dropout is skipped while the model is being initialised (it has no variables), so
``model.init(key, x)`` and :func:`metajax.models.init_params` need only the params RNG whatever
``dropout`` is.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from metajax.models.base import BodyHead

STANDARD_WIDTHS = (64, 160, 320, 640)

# He-normal over fan-out, as MetaOptNet's kaiming_normal_(mode="fan_out", nonlinearity="leaky_relu").
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def resnet12_widths(hidden: int | None = None) -> tuple[int, int, int, int]:
    """Block widths for ``hidden``: ``None`` gives (64, 160, 320, 640); ``h`` gives
    ``(h, ceil(2.5 h), 5 h, 10 h)`` (2.5 h rounded half up), so ``h=64`` is the standard net."""
    if hidden is None:
        return STANDARD_WIDTHS
    h = int(hidden)
    if h < 1:
        raise ValueError(f"hidden must be a positive int, got {hidden!r}")
    return (h, (5 * h + 1) // 2, 5 * h, 10 * h)


def _leaky_relu(x):
    return nn.leaky_relu(x, negative_slope=0.1)


class ResNet12Block(nn.Module):
    """One residual block (three 3x3 convs + 1x1 shortcut, each with BN), then 2x2 max-pool.

    The pool is ``nn.max_pool(x, (2, 2), (2, 2))`` ('VALID': an odd last row/column is dropped,
    so 28 -> 14 -> 7 -> 3 -> 1 on Omniglot), i.e. ``reduce_window``, whose gradient is a
    ``select_and_scatter_add``. Not :func:`metajax.models.layers.max_pool_2x2`: its gradient
    (reshape + max, an equality mask divided by the tie count) came out NaN for this block
    (batch norm + LeakyReLU before the pool) under ``jax.jit`` on XLA:CPU with
    ``--xla_backend_optimization_level=0`` (the test suite's flag), where ``reduce_window``'s
    matches the eager gradient.
    """

    features: int
    train: bool = True
    bn_momentum: float = 0.9

    def _bn(self, name):
        return nn.BatchNorm(use_running_average=not self.train, momentum=self.bn_momentum,
                            epsilon=1e-5, name=name)

    @nn.compact
    def __call__(self, x):
        def conv(kernel, name):
            return nn.Conv(self.features, (kernel, kernel), padding="SAME", use_bias=False,
                           kernel_init=_conv_init, name=name)

        y = _leaky_relu(self._bn("bn1")(conv(3, "conv1")(x)))
        y = _leaky_relu(self._bn("bn2")(conv(3, "conv2")(y)))
        y = self._bn("bn3")(conv(3, "conv3")(y))
        shortcut = self._bn("shortcut_bn")(conv(1, "shortcut_conv")(x))
        return nn.max_pool(_leaky_relu(y + shortcut), (2, 2), strides=(2, 2), padding="VALID")


class ResNet12Body(nn.Module):
    """Four :class:`ResNet12Block` (``block1``..``block4``), optional dropout after each, then
    global average pooling. ``__call__(x)`` on (B, H, W, C) returns ``(features (B, widths[-1]),
    {"block1": ..., "block4": ...})``, each activation a block's output (after dropout)."""

    widths: Sequence[int] = STANDARD_WIDTHS
    dropout: float = 0.0
    train: bool = True
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x):
        activations = {}
        for i, width in enumerate(self.widths, start=1):
            x = ResNet12Block(width, self.train, self.bn_momentum, name=f"block{i}")(x)
            if self.dropout > 0 and not self.is_initializing():
                x = nn.Dropout(self.dropout, deterministic=not self.train, name=f"dropout{i}")(x)
            activations[f"block{i}"] = x
        return jnp.mean(x, axis=(1, 2)), activations


class ResNet12(BodyHead):
    """Few-shot ResNet-12: params ``{"body": {"block1".."block4"}, "head": {"kernel", "bias"}}``
    and batch statistics ``{"body": {"block1".."block4"}}`` (collection ``"batch_stats"``).

    Fields:
      num_outputs: head width.
      widths: the four block widths (see :func:`resnet12_widths`); default 64-160-320-640.
      dropout: dropout rate after each block (0 disables it).
      train: batch norm with batch statistics and active dropout when True, running averages
        and no dropout when False (see the module docstring).
      bn_momentum: Flax momentum of the running averages (0.9 = PyTorch's 0.1).

    Methods as :class:`BodyHead`; activations are ``block1``..``block4`` and ``head``; ``embed``
    gives the globally average-pooled ``widths[-1]``-d features. Every ``apply`` needs
    ``{"params": ..., "batch_stats": ...}``; in train mode pass ``mutable=["batch_stats"]``
    (the batch norms update their running averages).
    """

    num_outputs: int
    widths: Sequence[int] = STANDARD_WIDTHS
    dropout: float = 0.0
    train: bool = True
    bn_momentum: float = 0.9

    def setup(self):
        self.body = ResNet12Body(tuple(self.widths), self.dropout, self.train, self.bn_momentum)
        self.head = nn.Dense(self.num_outputs)
