"""Model construction by name, and params initialisation without the Flax collection wrapper."""
from __future__ import annotations

import inspect

import flax.linen as nn
import jax

from metajax.models.conv4 import Conv4
from metajax.models.functional import init_variables
from metajax.models.mlp import MLP
from metajax.plugins import is_import_path, load_object
from metajax.models.resnet12 import ResNet12, resnet12_widths

MODELS = ("conv4", "conv4-pool", "mlp", "resnet12")


def build_model(name: str, num_outputs: int, *, hidden: int | None = None,
                conv_impl: str = "patches", head_input: str = "flatten",
                bn: str = "scale-offset") -> nn.Module:
    """Builds a backbone by name.

    Args:
      name: ``"conv4"`` (stride-2, Omniglot), ``"conv4-pool"`` (max-pool, MiniImageNet), ``"mlp"``
        or ``"resnet12"`` (few-shot ResNet-12, running batch statistics; see ``resnet12.py``).
      num_outputs: head width (N for N-way classification, 1 for regression).
      hidden: filters (conv) or units (MLP); the paper's value when ``None``. For ``"resnet12"``
        the first block's width: ``h`` gives widths ``(h, ceil(2.5 h), 5 h, 10 h)``, ``None``
        the standard (64, 160, 320, 640).
      conv_impl: ``"patches"`` (fast under vmap) or ``"xla"`` (native convolution). ResNet-12
        always uses Flax's native ``nn.Conv`` and ignores it.
      head_input: Conv4's features for the head: ``"flatten"`` (the conv4 map flattened) or
        ``"pool"`` (averaged over space, ``hidden`` features: MAML's reference Omniglot model).
      bn: Conv4's batch-norm params: ``"scale-offset"`` or ``"offset-only"`` (MAML's reference).
    """
    if head_input != "flatten" and name not in ("conv4", "conv4-pool"):
        raise ValueError(f"--head-input {head_input} is an option of the conv4 models; "
                         f"--model {name} does not take it")
    if bn != "scale-offset" and name not in ("conv4", "conv4-pool"):
        raise ValueError(f"--bn {bn} is an option of the conv4 models; --model {name} does not "
                         "take it")
    if is_import_path(name):
        factory = load_object(name, flag="--model", what="a model factory")
        options = {"hidden": hidden} if hidden is not None else {}
        try:
            inspect.signature(factory).bind(num_outputs, **options)
        except TypeError as e:
            raise ValueError(f"--model {name}: a model factory takes factory(num_outputs"
                             f"{', hidden=...' if options else ''}) and returns a Flax module; "
                             f"this one does not ({e})") from None
        module = factory(num_outputs, **options)
        if not isinstance(module, nn.Module):
            raise ValueError(f"--model {name}: the factory returned a {type(module).__name__}, "
                             "not a flax.linen.Module; return the module, e.g. "
                             "`def factory(num_outputs): return MyNet(num_outputs)`")
        return module
    if name == "conv4":
        return Conv4(num_outputs, hidden or 64, "stride", conv_impl, head_input, bn)
    if name == "conv4-pool":
        return Conv4(num_outputs, hidden or 32, "pool", conv_impl, head_input, bn)
    if name == "mlp":
        return MLP(num_outputs, (hidden or 40,) * 2)
    if name == "resnet12":
        return ResNet12(num_outputs, resnet12_widths(hidden))
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}, or give an "
                     "import path package.module:factory")


def init_params(model: nn.Module, key, sample_input):
    """Returns the params pytree of ``model`` for inputs like ``sample_input`` (the params part of
    ``metajax.as_model(model).init``, through the same compiled init)."""
    return init_variables(model, key, sample_input)["params"]
