"""Shape, dtype and tree-structure checks at the public API's edges.

A wrong rank, dtype or pytree structure given to ``adapt``, a learner or an objective would
otherwise surface as an XLA or tracing error deep inside ``lax.scan``/``grad``. These checks read
only static facts (shapes, dtypes, tree structures, Python ints), never values, so they run in
Python while JAX traces: under ``jit`` and ``vmap`` they raise before XLA sees anything, and a
compiled function pays nothing for them at run time (no host syncs, no extra operations).

Every failure raises :class:`InputError` (a ``ValueError`` and a ``TypeError``) whose message
starts with the entry point, names the argument and says what was expected and what was given:

    task_grad: task[0][1] (support labels) must be integer class indices of shape (n,) for
    classification(), got float32[5,1]

Tasks are ``(support, query)`` pairs of ``(x, y)`` pairs, as ``metajax.data.Episode`` and
``sample_sinusoid_task`` return them: ``x`` any array (or pytree of arrays) with one row per
example (images NHWC of any size, feature vectors, ...), ``y`` integer class labels ``(n,)`` for
``classification()``, floating-point targets of any shape ``(n, ...)`` for ``regression()``.
"""
from __future__ import annotations

import operator
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CLASSIFICATION", "REGRESSION", "InputError", "check_example_set", "check_key",
           "check_labels", "check_scalar_loss", "check_static_int", "check_task", "describe",
           "tree_path"]

# The objective kinds whose label format is known (``Objective.kind``).
CLASSIFICATION = "classification"
REGRESSION = "regression"


class InputError(ValueError, TypeError):
    """A public entry point got an argument of the wrong rank, dtype or tree structure.

    Subclasses both ``ValueError`` and ``TypeError``, so callers catching either keep working.
    """


def describe(x: Any) -> str:
    """A short description of a value: ``float32[5,1]`` for arrays, the type otherwise."""
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    if shape is not None and dtype is not None:
        return f"{dtype}[{','.join(str(d) for d in shape)}]"
    if x is None:
        return "None"
    if isinstance(x, dict):
        return f"a dict with keys {sorted(map(str, x))}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)}"
    if isinstance(x, (bool, int, float, complex)):
        return f"{type(x).__name__} {x!r}"
    return type(x).__name__


def tree_path(path) -> str:
    """``['body']['conv1']['kernel']``: a key path as written to index the tree."""
    return jax.tree_util.keystr(tuple(path)) or "(the root)"


def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _dtype_kind(dtype) -> str:
    if jnp.issubdtype(dtype, jnp.bool_):
        return "bool"
    if jnp.issubdtype(dtype, jnp.integer):
        return "integer"
    if jnp.issubdtype(dtype, jnp.floating):
        return "floating"
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return "complex"
    return str(dtype)


def _chex_ok(assertion, *args, **kwargs) -> bool:
    """Runs a chex assertion, returning whether it held (chex raises ``AssertionError``)."""
    try:
        assertion(*args, **kwargs)
    except AssertionError:
        return False
    return True


def check_static_int(value, name: str, where: str, *, minimum: int = 0,
                     why: str = "it fixes a loop length or an array shape") -> int:
    """``value`` as a Python int; it sets array shapes or loop lengths, so it must be concrete."""
    if isinstance(value, bool):
        raise InputError(f"{where}: {name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise InputError(
            f"{where}: {name} must be a concrete Python int ({why}), got {describe(value)}; "
            f"under jit mark it static (static_argnums, or functools.partial) instead of "
            f"tracing it") from None
    if value < minimum:
        raise InputError(f"{where}: {name} must be >= {minimum}, got {value}")
    return value


def check_key(key, name: str, where: str, *, optional: bool = True) -> None:
    """``key`` is one ``jax.random`` key: typed (``jax.random.key``, shape ``()``) or raw uint32
    data (``jax.random.PRNGKey``, shape ``(2,)`` for the default generator); or ``None`` when
    ``optional``. A batch of keys is refused: vmap over it instead."""
    if key is None and optional:
        return
    expected = ("a single jax.random key (jax.random.key(seed), or uint32[2] from "
                "jax.random.PRNGKey(seed))" + (" or None" if optional else ""))
    if not _is_array(key):
        raise InputError(f"{where}: {name} must be {expected}, got {describe(key)}")
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise InputError(f"{where}: {name} must be {expected}, got a batch of keys "
                             f"{describe(key)}; jax.vmap over the keys instead")
        return
    if np.dtype(key.dtype) != np.uint32 or key.ndim == 0:
        raise InputError(f"{where}: {name} must be {expected}, got {describe(key)}")
    if key.ndim > 1:
        raise InputError(f"{where}: {name} must be {expected}, got a batch of keys "
                         f"{describe(key)}; jax.vmap over the keys instead")


def check_scalar_loss(loss, where: str) -> None:
    """A loss to differentiate: a floating-point scalar."""
    shape = jnp.shape(loss)
    dtype = jnp.result_type(loss)
    if shape != () or not jnp.issubdtype(dtype, jnp.floating):
        raise InputError(f"{where} must return a floating-point scalar loss, got "
                         f"{dtype}[{','.join(map(str, shape))}]; reduce it over the examples "
                         f"(e.g. .mean())")


def check_labels(y, name: str, where: str, kind: str | None) -> None:
    """The labels of one set for an objective of ``kind`` (``None``: an unknown objective)."""
    if kind == CLASSIFICATION:
        if not (_is_array(y) and _chex_ok(chex.assert_rank, y, 1)
                and jnp.issubdtype(y.dtype, jnp.integer)):
            hint = ""
            if _is_array(y) and y.ndim == 2 and y.shape[-1] > 1:
                hint = " (one-hot labels? pass labels.argmax(-1))"
            elif _is_array(y) and y.ndim == 2 and y.shape[-1] == 1:
                hint = " (squeeze the last axis)"
            raise InputError(f"{where}: {name} must be integer class indices of shape (n,) for "
                             f"classification(), got {describe(y)}{hint}")
    elif kind == REGRESSION:
        if not (_is_array(y) and y.ndim >= 1 and jnp.issubdtype(y.dtype, jnp.floating)):
            raise InputError(f"{where}: {name} must be floating-point regression targets of "
                             f"shape (n, ...) for regression(), got {describe(y)}"
                             + ("; integer class labels need metajax.classification()"
                                if _is_array(y) and jnp.issubdtype(y.dtype, jnp.integer) else ""))


def _rows(tree, name: str, where: str) -> int | None:
    """The number of examples (the common leading axis) of every array leaf of ``tree``."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    if not leaves:
        raise InputError(f"{where}: {name} must be an array with one row per example, got "
                         f"{describe(tree)}")
    rows = None
    for path, leaf in leaves:
        label = name + (jax.tree_util.keystr(path) if path else "")
        if not _is_array(leaf) or leaf.ndim == 0:
            raise InputError(f"{where}: {label} must be an array with one row per example "
                             f"(shape (n, ...)), got {describe(leaf)}")
        if rows is None:
            rows = leaf.shape[0]
        elif leaf.shape[0] != rows:
            raise InputError(f"{where}: every array of {name} needs the same number of rows "
                             f"(examples); {label} is {describe(leaf)}, others have {rows}")
    return rows


def check_example_set(pair, name: str, where: str, kind: str | None = None,
                      role: str = "") -> tuple:
    """One set ``(x, y)``: a pair of arrays (or pytrees) with one row per example each, ``y``
    as ``kind`` needs. ``role`` ("support"/"query") names the parts in messages."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise InputError(f"{where}: {name} ({role or 'a set'}) must be an (x, y) pair of arrays "
                         f"with one row per example, got {describe(pair)}")
    x, y = pair
    prefix = f"{role} " if role else ""
    labels = f"{name}[1] ({prefix}{'targets' if kind == REGRESSION else 'labels'})"
    check_labels(y, labels, where, kind)
    nx = _rows(x, f"{name}[0] ({prefix}inputs)", where)
    ny = _rows(y, labels, where)
    if nx != ny:
        raise InputError(f"{where}: {name} ({role or 'the set'}) has {nx} inputs but {ny} "
                         f"labels: x is {describe(x)} and y is {describe(y)}; both need one row "
                         f"per example")
    return x, y


def _example_shapes(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, [(tuple(leaf.shape[1:]), _dtype_kind(leaf.dtype)) for leaf in leaves]


def check_task(task, where: str, kind: str | None = None) -> tuple:
    """A task ``(support, query)`` of ``(x, y)`` pairs, both sets with the same example shape.

    Args:
      task: the task.
      where: the entry point, first in messages (``"maml task_grad"``).
      kind: ``"classification"`` (integer labels ``(n,)``), ``"regression"`` (floating-point
        targets) or ``None`` (labels of any kind, the same in support and query).
    """
    if not isinstance(task, (tuple, list)) or len(task) != 2:
        raise InputError(
            f"{where}: task must be a (support, query) pair of (x, y) pairs, "
            f"((support_x, support_y), (query_x, query_y)) as metajax.data.Episode unpacks; got "
            f"{describe(task)}")
    support = check_example_set(task[0], "task[0]", where, kind, "support")
    query = check_example_set(task[1], "task[1]", where, kind, "query")
    for i, part in ((0, "inputs"), (1, "labels")):
        s_def, s_shapes = _example_shapes(support[i])
        q_def, q_shapes = _example_shapes(query[i])
        if s_def != q_def or s_shapes != q_shapes:
            raise InputError(
                f"{where}: task[0][{i}] (support {part}) {describe(support[i])} and task[1][{i}] "
                f"(query {part}) {describe(query[i])} must have the same example shape (every "
                f"axis after the first) and kind of dtype")
    return support, query
