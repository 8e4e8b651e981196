"""Re-exports resolved on first use (PEP 562), so that ``metajax --help`` and config loading
answer without importing JAX."""
from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """``(__getattr__, __dir__)`` for a package whose ``exports`` map a name to its module."""
    def __getattr__(name: str):
        if name not in exports:
            try:  # a subpackage, e.g. metajax.data
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError:
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        return getattr(importlib.import_module(exports[name]), name)

    def __dir__():
        return sorted(exports)

    return __getattr__, __dir__
