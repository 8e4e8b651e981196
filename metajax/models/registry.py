"""Model construction by name, and params initialisation without the Flax collection wrapper."""
from __future__ import annotations

import flax.linen as nn
import jax

from metajax.models.conv4 import Conv4
from metajax.models.mlp import MLP

MODELS = ("conv4", "conv4-pool", "mlp")


def build_model(name: str, num_outputs: int, *, hidden: int | None = None,
                conv_impl: str = "patches") -> nn.Module:
    """Builds a backbone by name.

    Args:
      name: ``"conv4"`` (stride-2, Omniglot), ``"conv4-pool"`` (max-pool, MiniImageNet) or ``"mlp"``.
      num_outputs: head width (N for N-way classification, 1 for regression).
      hidden: filters (conv) or units (MLP); the paper's value when ``None``.
      conv_impl: ``"patches"`` (fast under vmap) or ``"xla"`` (native convolution).
    """
    if name == "conv4":
        return Conv4(num_outputs, hidden or 64, "stride", conv_impl)
    if name == "conv4-pool":
        return Conv4(num_outputs, hidden or 32, "pool", conv_impl)
    if name == "mlp":
        return MLP(num_outputs, (hidden or 40,) * 2)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def init_params(model: nn.Module, key, sample_input):
    """Returns the params pytree ``{"body": ..., "head": ...}`` of ``model`` for inputs like ``sample_input``."""
    return _init(model, key, sample_input)["params"]


# One compiled call per (model, input shape), reused by later runs in the process: run eagerly,
# Flax's init dispatches (and compiles) a hundred small ops, the forward pass's among them.
_init = jax.jit(lambda model, key, x: model.init(key, x), static_argnums=0)
