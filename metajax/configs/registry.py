"""Looks up config modules by name."""
from __future__ import annotations

import importlib

CONFIGS = ("default", "sinusoid_pretrain", "omniglot_maml", "omniglot_fomaml", "omniglot_anil",
           "miniimagenet_anil", "miniimagenet_anil_cpu", "omniglot_reptile", "omniglot_metasgd", "omniglot_mamlpp")


def get_named_config(name: str):
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; choose one of: {', '.join(CONFIGS)}")
    return importlib.import_module(f"metajax.configs.{name}").get_config()
