"""Looks up config modules by name, or loads a user's config file."""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

CONFIGS = ("default", "sinusoid_pretrain", "omniglot_maml", "omniglot_fomaml", "omniglot_anil",
           "miniimagenet_anil", "miniimagenet_anil_cpu", "omniglot_reptile", "omniglot_metasgd",
           "omniglot_mamlpp", "omniglot_protonets", "omniglot_protomaml", "omniglot_boil",
           "raghu_table1_omniglot20w1s_maml", "raghu_table1_omniglot20w1s_anil")


def get_named_config(name: str):
    """The ``Config`` of a built-in config name, or of a file ``path/to/config.py`` that defines
    ``get_config()`` (returning a ``metajax.Config``, e.g. a named config with fields replaced)."""
    if name.endswith(".py") or "/" in name:
        return load_config_file(name)
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; choose one of: {', '.join(CONFIGS)}, or give "
                         "a file path/to/config.py that defines get_config()")
    return importlib.import_module(f"metajax.configs.{name}").get_config()


def load_config_file(path) -> "Config":  # noqa: F821 (the training package imports this one)
    from metajax.training.config import Config

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config {path}: no such file; give a Python file that defines "
                         "get_config() or a built-in name")
    spec = importlib.util.spec_from_file_location(f"metajax_user_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ValueError(f"--config {path}: the file failed to run: {type(e).__name__}: {e}") from e
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"--config {path}: the file defines no get_config(); add "
                         "`def get_config(): return metajax.Config(...)`")
    cfg = module.get_config()
    if not isinstance(cfg, Config):
        raise ValueError(f"--config {path}: get_config() returned a {type(cfg).__name__}, not a "
                         "metajax.Config")
    return cfg
