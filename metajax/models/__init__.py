"""Backbones: Flax modules whose params are ``{"body": ..., "head": ...}``."""
from metajax.models.base import BodyHead
from metajax.models.conv4 import Conv4, Conv4Body
from metajax.models.layers import ConvBlock, batch_norm, conv3x3, max_pool_2x2
from metajax.models.mlp import MLP, MLPBody
from metajax.models.registry import build_model, init_params

__all__ = [
    "BodyHead", "Conv4", "Conv4Body", "ConvBlock", "MLP", "MLPBody", "batch_norm", "build_model", "conv3x3",
    "init_params", "max_pool_2x2",
]
