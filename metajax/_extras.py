"""Optional dependencies (pip extras), imported on first use with an error that names the fix."""
from __future__ import annotations

import importlib


class MissingExtraError(ImportError, ValueError):
    """An optional package is not installed; the message names the ``pip install`` that adds it.

    It is also a ``ValueError`` so that the ``metajax`` command reports it as one line (exit
    status 2), like other settings that cannot work, instead of a traceback.
    """


def require(module: str, extra: str, purpose: str):
    """Imports ``module`` or raises :class:`MissingExtraError`.

    Args:
      module: the module to import, e.g. ``"tensorboardX"``.
      extra: the metajax extra that installs it, e.g. ``"tensorboard"``.
      purpose: what needs it, the start of the message, e.g. ``"--tensorboard true writes event
        files with tensorboardX"``.

    Returns:
      The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(f"{purpose}, which is not installed ({e}): pip install "
                                f"'metajax[{extra}]'") from e
