"""Backbones: Flax modules whose params are ``{"body": ..., "head": ...}``."""
from metajax.models.base import BodyHead
from metajax.models.conv4 import Conv4, Conv4Body
from metajax.models.functional import FunctionalModel, as_model
from metajax.models.layers import ConvBlock, batch_norm, conv3x3, max_pool_2x2
from metajax.models.mlp import MLP, MLPBody
from metajax.models.registry import build_model, init_params
from metajax.models.resnet12 import ResNet12, ResNet12Block, ResNet12Body, resnet12_widths

__all__ = [
    "BodyHead", "Conv4", "Conv4Body", "ConvBlock", "FunctionalModel", "as_model", "MLP", "MLPBody", "ResNet12", "ResNet12Block",
    "ResNet12Body", "batch_norm", "build_model", "conv3x3", "init_params", "max_pool_2x2", "resnet12_widths",
]
