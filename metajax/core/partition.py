"""Split a params pytree by a static boolean mask, equinox-style (``partition``/``combine``).

The adapted half is what the inner loop differentiates; the frozen half is closed over, so no
gradient is ever computed for it.
"""
from __future__ import annotations

from typing import Any

import jax

PyTree = Any


def _is_none(x) -> bool:
    return x is None


def partition(params: PyTree, mask: PyTree | None) -> tuple[PyTree, PyTree]:
    """Returns ``(selected, rest)``: ``params`` with ``None`` where ``mask`` is False / True.

    ``mask=None`` selects everything. ``mask`` may be a prefix of ``params`` (a single bool for a
    whole subtree, e.g. ``{"body": False, "head": True}``).
    """
    if mask is None:
        return params, jax.tree_util.tree_map(lambda _: None, params)
    full = broadcast_mask(mask, params)
    selected = jax.tree_util.tree_map(lambda p, m: p if m else None, params, full)
    rest = jax.tree_util.tree_map(lambda p, m: None if m else p, params, full)
    return selected, rest


def combine(*trees: PyTree) -> PyTree:
    """Merges partitioned trees: at each leaf the first value that is not ``None``."""
    def first(*leaves):
        return next((leaf for leaf in leaves if leaf is not None), None)
    return jax.tree_util.tree_map(first, *trees, is_leaf=_is_none)


def broadcast_mask(mask: PyTree, params: PyTree) -> PyTree:
    """Expands a mask that is a tree prefix of ``params`` to one bool per leaf of ``params``."""
    try:
        return jax.tree_util.tree_map(
            lambda m, sub: jax.tree_util.tree_map(lambda _: bool(m), sub), mask, params)
    except ValueError as e:
        raise ValueError(
            "mask must be a pytree of bools with the structure of params (or a prefix of it, e.g. "
            "{'body': False, 'head': True}); got one that does not match: " + str(e)) from None


def head_only_mask(params: PyTree) -> PyTree:
    """ANIL's mask: adapt ``params["head"]`` only."""
    return broadcast_mask({k: k == "head" for k in params}, params)


def freeze_mask(params: PyTree, frozen_paths) -> PyTree:
    """A mask that adapts everything except the subtrees named by ``frozen_paths``.

    Args:
      params: the model params.
      frozen_paths: iterable of paths such as ``"body/conv1"`` or ``"head"``.
    """
    mask = jax.tree_util.tree_map(lambda _: True, params)
    for path in frozen_paths:
        node = mask
        keys = [k for k in str(path).split("/") if k]
        for depth, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                raise ValueError(f"cannot freeze {path!r}: no such subtree in params "
                                 f"(available at this level: {sorted(node) if isinstance(node, dict) else []})")
            if depth == len(keys) - 1:
                node[key] = jax.tree_util.tree_map(lambda _: False, node[key])
            else:
                node = node[key]
    return mask
