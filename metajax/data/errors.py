"""Errors raised for bad data input (missing or corrupt files, impossible episode specs)."""
from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """The data given to metajax is missing, corrupt or cannot serve the request.

    Messages always say what is wrong and how to fix it, so that the command line can print them
    as they are instead of a traceback. It subclasses ``ValueError`` so that callers that catch
    generic bad-input errors keep working.
    """
