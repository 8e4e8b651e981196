"""Split a params pytree by a static boolean mask, equinox-style (``partition``/``combine``).

The adapted half is what the inner loop differentiates; the frozen half is closed over, so no
gradient is ever computed for it.
"""
from __future__ import annotations

from typing import Any

import jax

from metajax.checks import InputError, describe, tree_path

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
    """Merges partitioned trees: at each leaf the first value that is not ``None``.

    The trees are the halves of ``partition(params, mask)`` (or trees of that structure, with
    ``None`` where a half holds nothing); a tree of another structure is an ``InputError``.
    """
    if not trees:
        raise InputError("combine: needs at least one tree, e.g. combine(*partition(params, "
                         "mask))")

    def first(*leaves):
        return next((leaf for leaf in leaves if leaf is not None), None)
    try:
        return jax.tree_util.tree_map(first, *trees, is_leaf=_is_none)
    except ValueError as e:
        reference = jax.tree_util.tree_structure(trees[0], is_leaf=_is_none)
        bad = next((i for i, t in enumerate(trees[1:], 1)
                    if jax.tree_util.tree_structure(t, is_leaf=_is_none) != reference), 1)
        raise InputError(
            f"combine: trees[{bad}] does not have the structure of trees[0] (the halves of one "
            f"partition(params, mask) share the structure of params, with None where a half "
            f"holds nothing): {e}") from None


def _mask_bool(m, path) -> bool:
    """One mask entry as a Python bool; a mask is static (it decides what is differentiated)."""
    if m is None or isinstance(m, (bool, int)) or getattr(m, "shape", None) == ():
        try:
            return bool(m)
        except jax.errors.ConcretizationTypeError:
            raise InputError(
                f"mask{tree_path(path)} is a traced {describe(m)}: a mask must hold concrete "
                f"Python bools (it decides which params are differentiated, at trace time); "
                f"close over the mask instead of passing it through jit/vmap") from None
    raise InputError(f"mask{tree_path(path)} must be one bool per params leaf or subtree, got "
                     f"{describe(m)}")


def broadcast_mask(mask: PyTree, params: PyTree) -> PyTree:
    """Expands a mask that is a tree prefix of ``params`` to one bool per leaf of ``params``."""
    try:
        return jax.tree_util.tree_map_with_path(
            lambda path, m, sub: jax.tree_util.tree_map(lambda _, b=_mask_bool(m, path): b, sub),
            mask, params)
    except InputError:
        raise
    except ValueError as e:
        raise InputError(
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


# Leaves that are batch norm's learned params: the built-in ConvBlock's ``scale``/``offset``, and
# every leaf of a Flax ``nn.BatchNorm`` (auto-named ``BatchNorm_<i>``).
_BN_LEAVES = ("scale", "offset")
_BN_MODULE_PREFIXES = ("BatchNorm",)


def _is_batch_norm(path) -> bool:
    keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
    return (bool(keys) and keys[-1] in _BN_LEAVES) or any(
        k.startswith(_BN_MODULE_PREFIXES) for k in keys[:-1])


def batch_norm_mask(params: PyTree) -> PyTree:
    """A mask that adapts everything except batch norm's learned params (MAML's reference code
    keeps them out of the inner loop): the ``scale``/``offset`` leaves of metajax's conv blocks and
    the leaves of Flax ``nn.BatchNorm`` modules (named ``BatchNorm_<i>``)."""
    return jax.tree_util.tree_map_with_path(lambda path, _: not _is_batch_norm(path), params)


def mask_and(first: PyTree, second: PyTree, params: PyTree) -> PyTree:
    """Adapts a leaf when both masks (trees, prefixes or functions of ``params``) adapt it."""
    def full(mask):
        return broadcast_mask(mask(params) if callable(mask) else mask, params)
    return jax.tree_util.tree_map(lambda a, b: a and b, full(first), full(second))
