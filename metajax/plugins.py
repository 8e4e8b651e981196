"""User code by import path: ``--model pkg.module:factory``, ``--algo pkg.module:factory``.

A path is ``module.path:attribute``; the module is imported with the current directory on
``sys.path`` (as ``python -m`` would), so a file ``my_models.py`` next to where ``metajax`` runs is
``my_models:factory``. The path is stored in ``config.json``, so ``metajax eval``/``analyze`` and
``--resume`` find the same objects again.
"""
from __future__ import annotations

import importlib
import os
import sys


def is_import_path(name) -> bool:
    return isinstance(name, str) and ":" in name


def load_object(path: str, *, flag: str, what: str):
    """Imports ``module:attribute`` and returns the attribute.

    Raises:
      ValueError: the path is malformed, the module cannot be imported or lacks the attribute;
        the message names the path, the flag and the fix.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{flag} {path!r}: expected an import path 'package.module:{what}'")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ValueError(f"{flag} {path!r}: cannot import module {module_name!r} ({e}); put it "
                         "on PYTHONPATH or run metajax from the folder that holds it") from None
    obj = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{flag} {path!r}: module {module_name!r} has no attribute "
                             f"{attribute!r}; define {what} there or fix the name")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{flag} {path!r}: {attribute!r} is a {type(obj).__name__}, not a "
                         f"callable {what}")
    return obj
