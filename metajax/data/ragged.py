"""Few-shot episodes from classes with different numbers of examples ("ragged" splits).

A dense split is one array ``(classes, examples, H, W, C)``, which needs the same number of
examples in every class (see :func:`metajax.data.sample_episode`, unchanged). A ragged split
stores all examples of all classes in one array, class by class, with where each class starts
and how many examples it has:

    data = RaggedImages(images, offsets, counts, names)   # images (N, H, W, C) uint8
    data.check_episode_spec(ways=5, shots=1, queries=15, split="train")
    tasks = jax.vmap(lambda k: sample_ragged_episode(k, data, ways=5, shots=1, queries=15))(keys)

Sampling is pure JAX (jittable, vmappable) and draws integer indices only, so the same keys give
the same indices on any backend; :mod:`metajax.data.host_stream` relies on that to draw episodes
on the host that are bit-identical to the ones drawn on the device.

How the examples of a class are drawn without replacement when the class size is a traced value
(so no array may have it as a shape): ``k = shots + queries`` is static, and example ``j`` of the
draw is the ``r_j``-th smallest index of the class not drawn yet, with ``r_j`` uniform in
``[0, count - j)``. Given the ``j`` indices drawn so far, sorted as ``s_0 < s_1 < ...``, that
index is ``r_j + #{i : s_i - i <= r_j}`` (``s_i - i`` never decreases, so the matching ``i`` are a
prefix, and every drawn index at or below the answer shifts it up by one). This is a uniformly
random ordered draw of ``k`` distinct indices in ``[0, count)`` (the sequential definition of
sampling without replacement), costs ``O(k^3)`` fused integer comparisons per class (``k`` steps,
each ranking ``k`` values pairwise) whatever the class sizes, and needs no maximum class size: a
class of 10 examples and one of 100,000 cost the same. The alternative, sorting uniform noise over
a static width ``max(counts)``, would cost ``O(max_count log max_count)`` per class and need the
largest class size as a static argument.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metajax.checks import check_key, describe
from metajax.data.episodes import UINT8_SCALE, Episode, as_count, check_episode_spec
from metajax.data.errors import DataError

__all__ = ["UINT8_SCALE", "RaggedImages", "episode_indices", "gather_episode",
           "sample_ragged_episode", "to_float32"]

# Marks "not drawn yet" in the draw's state; larger than any example index (int32 offsets), and
# small enough that subtracting a step number cannot overflow.
_NOT_DRAWN = np.int32(2**30)
# Draws of up to this many examples per class are unrolled into straight-line code (XLA fuses it);
# longer ones run as a loop so that compile time stays bounded.
_UNROLL_LIMIT = 32


class RaggedImages(NamedTuple):
    """One split whose classes may have different numbers of images.

    Attributes:
      images: uint8 ``(N, H, W, C)``, the images of class 0, then of class 1, ... (or floating
        point in [0, 1], used as is).
      offsets: int32 ``(classes,)``, the row of ``images`` where each class starts.
      counts: int32 ``(classes,)``, the number of images of each class (at least 1).
      names: the class names, one per class (e.g. the folder names); may be empty.

    ``RaggedImages`` is registered as a JAX pytree whose leaves are only the three arrays; the
    names are static auxiliary data, not leaves (strings are not valid JAX values). So the whole
    value can be passed to ``jax.jit``, ``jax.vmap`` (``in_axes=None``) and ``jax.device_put``
    as it is, and ``jax.tree.map`` keeps the names. Changing the names of a jitted argument
    recompiles like any change of static data; pass :meth:`device_arrays` instead to keep the
    names out entirely.
    """

    images: np.ndarray
    offsets: np.ndarray
    counts: np.ndarray
    names: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return int(self.counts.shape[0])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.images.shape[1:])

    def device_arrays(self) -> tuple:
        """``(images, offsets, counts)``: what the samplers read, without the names."""
        return self.images, self.offsets, self.counts

    def class_images(self, c: int) -> np.ndarray:
        """The images of class ``c`` (a view when ``images`` is a numpy array)."""
        start, count = int(self.offsets[c]), int(self.counts[c])
        return self.images[start:start + count]

    def check_episode_spec(self, *, ways: int, shots: int, queries: int,
                           split: str = "train") -> None:
        """Checks that ``ways``-way ``shots``-shot tasks with ``queries`` queries can be drawn.

        Needs concrete (not traced) ``counts``. Beyond :func:`metajax.data.check_episode_spec`'s
        conditions (``2 <= ways <= classes``, ``shots >= 1``, ``queries >= 1``), every class
        needs at least ``shots + queries`` images, since any class can be drawn.

        Raises:
          DataError: a condition fails; the message names the classes with too few images, their
            counts and the fix.
        """
        counts = np.asarray(self.counts)
        # The per-class condition is checked below with the classes' names, so the generic check
        # is only asked about ways, shots and queries here.
        check_episode_spec(self.num_classes, np.iinfo(np.int32).max, ways=ways, shots=shots,
                           queries=queries, split=split)
        need = int(shots) + int(queries)
        short = np.flatnonzero(counts < need)
        if short.size:
            names = self.names if len(self.names) == self.num_classes else None
            shown = ", ".join(f"{names[c] if names else f'class {c}'} ({int(counts[c])})"
                              for c in short[:5])
            more = f" and {short.size - 5} more" if short.size > 5 else ""
            raise DataError(
                f"{short.size} class(es) of the {split} split have fewer than --shots {shots} + "
                f"--query {queries} = {need} images: {shown}{more}; every class needs "
                f"shots + query distinct images, so lower --shots/--query (the smallest class has "
                f"{int(counts.min())}) or add images to those classes (or remove them)")

    @classmethod
    def from_dense(cls, images, names: tuple[str, ...] = ()) -> "RaggedImages":
        """A dense ``(classes, examples, H, W, C)`` split as a ragged one (host arrays)."""
        images = np.asarray(images)
        if images.ndim < 3:
            raise DataError(f"a dense split is (classes, examples, ...), got shape "
                            f"{images.shape}")
        c, e = images.shape[:2]
        counts = np.full((c,), e, np.int32)
        offsets = (np.arange(c, dtype=np.int64) * e).astype(np.int32)
        return cls(images.reshape(c * e, *images.shape[2:]), offsets, counts, tuple(names))


jax.tree_util.register_pytree_node(
    RaggedImages,
    lambda r: ((r.images, r.offsets, r.counts), tuple(r.names)),
    lambda names, arrays: RaggedImages(*arrays, names),
)


_static_count = as_count  # episode sizes fix array shapes: concrete Python ints


def _draw_distinct(key, count, k: int):
    """``k`` distinct indices in ``[0, count)``, uniformly ordered; ``count`` may be traced."""
    # r[j] is uniform in [0, count - j): the rank of draw j among the indices not drawn yet.
    ranks = jax.random.randint(key, (k,), 0, count - jnp.arange(k, dtype=jnp.int32),
                               dtype=jnp.int32)

    def step(j, drawn):
        # Rank of every drawn index among the drawn ones; the "not drawn" marks rank last and are
        # masked out, so this equals s_i - i for the i-th smallest drawn index s_i.
        order = jnp.sum(drawn[None, :] < drawn[:, None], axis=1, dtype=jnp.int32)
        below = (drawn < _NOT_DRAWN) & (drawn - order <= ranks[j])
        return drawn.at[j].set(ranks[j] + jnp.sum(below, dtype=jnp.int32))

    drawn = jnp.full((k,), _NOT_DRAWN, jnp.int32)
    if k <= _UNROLL_LIMIT:
        for j in range(k):
            drawn = step(j, drawn)
        return drawn
    return jax.lax.fori_loop(0, k, step, drawn)


def episode_indices(key: jax.Array, offsets: jax.Array, counts: jax.Array, *, ways: int,
                    shots: int, queries: int):
    """Draws the example indices of one ``ways``-way ``shots``-shot task from a ragged split.

    Classes are drawn uniformly without replacement (``jax.random.choice``); a class's label is
    its position in that draw, so the label-to-class map is a fresh random permutation in every
    task, as in :func:`metajax.data.sample_episode`. For every drawn class ``c``,
    ``shots + queries`` distinct examples are drawn uniformly among its ``counts[c]`` (see the
    module docstring for how, with ``counts`` traced): the first ``shots`` go to the support, the
    rest to the query, so the two never share an example.

    Jittable and vmappable; ``ways``, ``shots`` and ``queries`` must be static ints, ``offsets``
    and ``counts`` may be traced. Only integer operations touch the keys' bits, so the indices
    are the same on every backend. Every class must have at least ``shots + queries`` examples:
    check that beforehand with :meth:`RaggedImages.check_episode_spec` (it cannot be checked on
    traced counts; a shorter class would give repeated or out-of-class indices).

    Args:
      key: a ``jax.random`` key.
      offsets: int32 ``(classes,)``, the first row of each class.
      counts: int32 ``(classes,)``, the examples of each class.
      ways, shots, queries: the task's size.

    Returns:
      ``(support_idx, support_y, query_idx, query_y)``, int32: ``support_idx``
      ``(ways * shots,)`` rows of the images array and ``support_y`` their labels, class-major
      (label ``i`` occupies entries ``i * shots : (i + 1) * shots``); the query likewise with
      ``ways * queries`` entries.
    """
    ways = _static_count(ways, "--ways")
    shots = _static_count(shots, "--shots")
    queries = _static_count(queries, "--query")
    num_classes = counts.shape[0]
    if offsets.shape != counts.shape:
        raise DataError(f"offsets {offsets.shape} and counts {counts.shape} must have one entry "
                        f"per class")
    # The checks that need no class sizes (these are static shapes and ints).
    check_episode_spec(num_classes, np.iinfo(np.int32).max, ways=ways, shots=shots,
                       queries=queries)
    per_class = shots + queries
    offsets = jnp.asarray(offsets, jnp.int32)
    counts = jnp.asarray(counts, jnp.int32)

    class_key, example_key = jax.random.split(key)
    classes = jax.random.choice(class_key, num_classes, (ways,), replace=False)
    example_keys = jax.random.split(example_key, ways)
    picks = jax.vmap(_draw_distinct, in_axes=(0, 0, None))(example_keys, counts[classes],
                                                           per_class)
    rows = offsets[classes][:, None] + picks  # (ways, shots + queries)
    labels = jnp.arange(ways, dtype=jnp.int32)
    support_idx = rows[:, :shots].reshape(ways * shots)
    query_idx = rows[:, shots:].reshape(ways * queries)
    return support_idx, jnp.repeat(labels, shots), query_idx, jnp.repeat(labels, queries)




def to_float32(x):
    """uint8 -> float32 ``x * UINT8_SCALE`` (in [0, 1]); floating point -> float32 as is.

    Works on jax and numpy arrays alike, with the same float32 result for the same input.
    """
    if np.dtype(x.dtype) == np.uint8:
        return x.astype(np.float32) * UINT8_SCALE
    return x.astype(np.float32)


def gather_episode(images: jax.Array, support_idx, support_y, query_idx, query_y) -> Episode:
    """The episode of the given indices: rows of ``images`` scaled to float32 in [0, 1].

    The result passes through ``lax.optimization_barrier``, so that inside a larger jitted step
    XLA cannot fuse the scaling into the consumer (e.g. contract it with a following addition
    into one fused multiply-add): the task's values are exactly those a host-drawn batch has.
    """
    images = jnp.asarray(images)
    episode = Episode((to_float32(images[support_idx]), support_y),
                      (to_float32(images[query_idx]), query_y))
    return jax.lax.optimization_barrier(episode)


def _check_ragged_arrays(ragged: RaggedImages) -> None:
    """Static checks of a ragged split's arrays: ranks and dtypes, not values."""
    images, offsets, counts = ragged.device_arrays()
    if not (hasattr(images, "ndim") and hasattr(images, "dtype")) or images.ndim < 2:
        raise DataError(f"sample_ragged_episode: images must be (N, H, W, C) (or (N, features)), "
                        f"all examples of all classes stacked, got {describe(images)}")
    for name, a in (("offsets", offsets), ("counts", counts)):
        if not (hasattr(a, "ndim") and hasattr(a, "dtype")) or a.ndim != 1 \
                or not np.issubdtype(np.dtype(a.dtype), np.integer):
            raise DataError(f"sample_ragged_episode: {name} must be integer of shape (classes,), "
                            f"got {describe(a)}")


def sample_ragged_episode(key: jax.Array, data, *, ways: int, shots: int,
                          queries: int) -> Episode:
    """Draws one task from a ragged split: :func:`episode_indices` + a gather on the device.

    Args:
      key: a ``jax.random`` key.
      data: a :class:`RaggedImages` or its ``device_arrays()`` tuple ``(images, offsets,
        counts)``; uint8 images are scaled to [0, 1] (times float32 1/255, the value
        :func:`metajax.data.sample_episode` gives under jit), floating point ones cast to
        float32.
      ways, shots, queries: static ints.

    Returns:
      An :class:`metajax.data.Episode` laid out exactly as :func:`metajax.data.sample_episode`'s:
      float32 ``(ways * shots, H, W, C)`` support images with int32 labels grouped by label, and
      the query likewise.

    Raises:
      DataError: bad sizes; when ``counts`` is concrete (not traced), also a class with fewer
        than ``shots + queries`` examples (see :meth:`RaggedImages.check_episode_spec`).
    """
    if isinstance(data, RaggedImages):
        ragged = data
    else:
        try:
            ragged = RaggedImages(*data)
        except TypeError:
            raise DataError("data must be a RaggedImages or an (images, offsets, counts) tuple; "
                            "build it with metajax.data.load_folder or "
                            "RaggedImages.from_dense") from None
    check_key(key, "key", "sample_ragged_episode", optional=False)
    _check_ragged_arrays(ragged)
    dtype = np.dtype(ragged.images.dtype)
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise DataError(f"images must be uint8 (0..255) or floating point (0..1), got {dtype}; "
                        f"convert them with .astype(np.uint8) or .astype(np.float32)")
    if not isinstance(ragged.counts, jax.core.Tracer):
        ragged.check_episode_spec(ways=ways, shots=shots, queries=queries, split="given")
    indices = episode_indices(key, ragged.offsets, ragged.counts, ways=ways, shots=shots,
                              queries=queries)
    return gather_episode(ragged.images, *indices)
