"""N-way K-shot episode sampling in pure JAX.

One call draws one task with no Python loop over classes or examples, so it can be jitted and
vmapped over a batch of keys to build a meta-batch on device:

    tasks = jax.vmap(lambda k: sample_episode(k, images, ways=5, shots=1, queries=15))(keys)
"""
from __future__ import annotations

import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metajax.checks import check_key
from metajax.data.errors import DataError

# uint8 -> [0, 1] is a multiplication by this float32 constant, on the device and on the host,
# jitted or not. XLA rewrites a division by a constant into exactly this product under jit, but
# numpy's ``x / 255`` and eager JAX before 0.10.1 divide, which differs in the last bit for about
# half the values (experiments/version_floors/README.md); the product makes every path agree.
UINT8_SCALE = np.float32(1) / np.float32(255)

__all__ = ["Episode", "as_count", "check_episode_spec", "sample_episode"]


class Episode(NamedTuple):
    """One few-shot task; unpacks as ``(support_x, support_y), (query_x, query_y) = episode``.

    ``support`` and ``query`` are plain ``(x, y)`` tuples: ``x`` float32 ``(n, H, W, Ch)`` in
    [0, 1] and ``y`` int32 ``(n,)`` labels in ``[0, ways)``.
    """

    support: tuple[jax.Array, jax.Array]
    query: tuple[jax.Array, jax.Array]


def as_count(value, flag: str) -> int:
    # Episode sizes set array shapes, so they must be concrete Python ints even under jit.
    if isinstance(value, bool):
        raise DataError(f"{flag} must be an integer, got {value!r}; pass e.g. {flag} 5")
    try:
        return operator.index(value)
    except TypeError:
        raise DataError(
            f"{flag} must be a concrete integer (it fixes array shapes), got {value!r}; pass a "
            f"Python int and mark it static (e.g. functools.partial or static_argnames) under jit"
        ) from None


def check_episode_spec(num_classes: int, examples_per_class: int, *, ways: int, shots: int,
                       queries: int, split: str = "train") -> None:
    """Checks that ``ways``-way ``shots``-shot tasks with ``queries`` queries can be drawn.

    Args:
      num_classes: number of classes in the split.
      examples_per_class: number of examples of every class.
      ways: classes per task; needs ``2 <= ways <= num_classes``.
      shots: support examples per class; needs ``shots >= 1``.
      queries: query examples per class; needs ``queries >= 1`` and
        ``shots + queries <= examples_per_class`` so that support and query are disjoint.
      split: name of the split, used in error messages.

    Raises:
      DataError: one of the conditions above fails; the message says which flag to change.
    """
    ways = as_count(ways, "--ways")
    shots = as_count(shots, "--shots")
    queries = as_count(queries, "--query")
    if ways < 2:
        raise DataError(f"--ways {ways} is too small: a task needs at least 2 classes; "
                        f"use --ways >= 2")
    if ways > num_classes:
        raise DataError(f"--ways {ways} is larger than the {num_classes} classes in the {split} "
                        f"split; use --ways <= {num_classes}")
    if shots < 1:
        raise DataError(f"--shots {shots} is too small: every class needs at least 1 support "
                        f"example; use --shots >= 1")
    if queries < 1:
        raise DataError(f"--query {queries} is too small: every class needs at least 1 query "
                        f"example; use --query >= 1")
    if shots + queries > examples_per_class:
        raise DataError(
            f"--shots {shots} plus --query {queries} is {shots + queries}, more than the "
            f"{examples_per_class} examples per class in the {split} split; support and query "
            f"examples must be distinct, so use --shots + --query <= {examples_per_class}"
        )


def sample_episode(key: jax.Array, images: jax.Array, *, ways: int, shots: int, queries: int,
                   split: str = "given") -> Episode:
    """Draws one ``ways``-way ``shots``-shot task with ``queries`` queries per class.

    Classes are drawn uniformly without replacement; a class's label is its position in that
    draw, so the label-to-class map is a fresh random permutation in every task. For every class,
    ``shots + queries`` distinct examples are drawn without replacement: the first ``shots`` form
    the support set and the rest the query set, so the two never share an example.

    ``ways``, ``shots`` and ``queries`` must be static (Python ints); they are checked with
    ``check_episode_spec`` at trace time, so misuse raises ``DataError`` even under ``jit``.

    Args:
      key: a ``jax.random`` key.
      images: ``(C, E, H, W, Ch)`` array of one split, uint8 (scaled by 1/255) or floating point
        (cast to float32 as is).
      ways: number of classes N per task.
      shots: support examples K per class.
      queries: query examples per class.
      split: name of the split, used in error messages.

    Returns:
      ``Episode(support=(support_x, support_y), query=(query_x, query_y))`` with ``support_x``
      float32 ``(ways * shots, H, W, Ch)``, ``support_y`` int32 ``(ways * shots,)`` in
      ``[0, ways)``, and the query likewise with ``ways * queries`` examples. Examples are grouped
      by label: label ``i`` occupies rows ``i * shots : (i + 1) * shots`` of the support.

    Raises:
      DataError: the images have the wrong rank or dtype, or the task cannot be drawn from them.
    """
    check_key(key, "key", "sample_episode", optional=False)
    if not hasattr(images, "ndim") or not hasattr(images, "dtype"):
        raise DataError(f"images must be a (classes, examples, ...) array, got "
                        f"{type(images).__name__}; pass e.g. load_omniglot().train")
    if images.ndim < 3:
        raise DataError(f"images must be (classes, examples, ...) with one split's examples "
                        f"grouped by class, got shape {tuple(images.shape)}; pass e.g. "
                        f"load_omniglot().train")
    dtype = np.dtype(images.dtype)
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise DataError(f"images must be uint8 (0..255) or floating point (0..1), got {dtype}; "
                        f"convert them with .astype(np.uint8) or .astype(np.float32)")
    num_classes, num_examples = images.shape[0], images.shape[1]
    check_episode_spec(num_classes, num_examples, ways=ways, shots=shots, queries=queries,
                       split=split)
    ways, shots, queries = int(ways), int(shots), int(queries)
    per_class = shots + queries

    class_key, example_key = jax.random.split(key)
    classes = jax.random.choice(class_key, num_classes, (ways,), replace=False)
    # Independent key per class so that examples are drawn without replacement within a class.
    example_keys = jax.random.split(example_key, ways)
    picks = jax.vmap(lambda k: jax.random.permutation(k, num_examples)[:per_class])(example_keys)

    # Gather before converting so that only the drawn examples are cast to float.
    x = jnp.asarray(images)[classes[:, None], picks]  # (ways, shots + queries, H, W, Ch)
    x = x.astype(jnp.float32)
    if dtype == np.uint8:
        x = x * UINT8_SCALE

    feature_shape = x.shape[2:]
    support_x = x[:, :shots].reshape(ways * shots, *feature_shape)
    query_x = x[:, shots:].reshape(ways * queries, *feature_shape)
    labels = jnp.arange(ways, dtype=jnp.int32)
    support_y = jnp.repeat(labels, shots)
    query_y = jnp.repeat(labels, queries)
    return Episode((support_x, support_y), (query_x, query_y))
