"""Episodes drawn on the host, for splits that do not fit in the accelerator's memory.

The device sampler (:func:`metajax.data.ragged.sample_ragged_episode` inside the jitted step)
needs the whole split on the device. When it does not fit, :class:`HostEpisodeStream` keeps the
split in host memory and, in a background thread, prepares the next steps' task batches:

1. the step's keys (``keys_for_step(step)``, ``(meta_batch, 2)`` or typed keys);
2. the example indices, by the same jitted :func:`~metajax.data.ragged.episode_indices`, vmapped
   over the keys, run on the CPU backend (integer operations only, so they equal the device's);
3. a numpy gather of the drawn rows;
4. ``jax.device_put`` of the stacked batch (an ``Episode`` with a leading task axis), optionally
   with a sharding, which starts the transfer while the current step still runs;
5. the conversion to float32 that the device sampler does
   (:func:`~metajax.data.ragged.to_float32`: one IEEE float32 multiplication by 1/255, exact on
   every backend and in numpy), done on the device after the transfer: uint8 images travel at a
   quarter of float32's bytes (on the 2-core CPU, putting a 4-task 5-way 16-example 84x84x3
   batch took 30 ms as float32, 3 ms as uint8 plus the conversion).

So for the same keys a step sees the same arrays, bit for bit, as with the split on the device,
and as :func:`host_batch` (the same draw with the conversion on the host, no thread, numpy).
The consumer blocks only when the queue is empty, i.e. when preparing a batch takes longer than
a step; :attr:`HostEpisodeStream.wait_seconds` measures that.

``--data-on auto`` uses :func:`choose_placement`: a split goes to the host when it would take
more than ``fraction`` (default half) of the device's memory.
"""
from __future__ import annotations

import functools
import os
import queue
import threading
import time
from typing import Callable, Iterator

import jax
import numpy as np

from metajax.data.episodes import Episode
from metajax.data.errors import DataError
from metajax.data.ragged import RaggedImages, episode_indices, to_float32

__all__ = ["HostEpisodeStream", "choose_placement", "device_memory_bytes", "host_batch",
           "put_host_batch", "split_nbytes"]


@functools.partial(jax.jit, static_argnames=("ways", "shots", "queries"))
def _batch_indices(keys, offsets, counts, *, ways, shots, queries):
    one = functools.partial(episode_indices, ways=ways, shots=shots, queries=queries)
    return jax.vmap(one, in_axes=(0, None, None))(keys, offsets, counts)


def _cpu():
    # This process's own CPU device (jax.devices() lists every process's devices).
    return jax.local_devices(backend="cpu")[0]


def _host_indices(keys, size: dict, index_arrays) -> tuple:
    # Indices of a batch: the jitted, vmapped episode_indices, on the CPU backend, as numpy.
    keys = jax.device_put(keys, _cpu())
    return jax.device_get(_batch_indices(keys, *index_arrays, **size))


def host_batch(data: RaggedImages, keys, *, ways: int, shots: int, queries: int) -> Episode:
    """One step's task batch drawn on the host (no thread); numpy arrays.

    Args:
      data: a :class:`RaggedImages` whose ``images`` are a host (numpy) array.
      keys: one ``jax.random`` key per task (``(tasks, 2)`` uint32 or ``(tasks,)`` typed keys).
      ways, shots, queries: the tasks' size; checked against ``data`` (every class needs
        ``shots + queries`` images).

    Returns:
      An ``Episode`` of numpy arrays with a leading task axis: support ``x`` float32
      ``(tasks, ways * shots, H, W, C)`` and ``y`` int32 ``(tasks, ways * shots)``, query
      likewise; equal, bit for bit, to ``jax.vmap(sample_ragged_episode)`` on the same keys.
    """
    data.check_episode_spec(ways=ways, shots=shots, queries=queries)
    size = dict(ways=ways, shots=shots, queries=queries)
    index_arrays = jax.device_put((data.offsets, data.counts), _cpu())
    s_idx, s_y, q_idx, q_y = _host_indices(keys, size, index_arrays)
    images = np.asarray(data.images)
    return Episode((to_float32(images[s_idx]), s_y), (to_float32(images[q_idx]), q_y))


@jax.jit
def _scale_on_device(batch: Episode) -> Episode:
    (sx, sy), (qx, qy) = batch
    return Episode((to_float32(sx), sy), (to_float32(qx), qy))


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def _put(q: queue.Queue, stop: threading.Event, item) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def put_host_batch(data: RaggedImages, keys, *, ways: int, shots: int, queries: int,
                   sharding=None, _index_arrays=None) -> Episode:
    """One step of :class:`HostEpisodeStream` without the thread: the batch, on the device.

    Draws the indices on the CPU backend, gathers the rows of ``data.images`` with numpy, puts
    them on ``sharding`` (``None``: the default device) as stored (uint8), scales them there
    with :func:`~metajax.data.ragged.to_float32`, and waits until the batch is there. Equal, bit
    for bit, to :func:`host_batch` on the same keys.
    """
    size = dict(ways=int(ways), shots=int(shots), queries=int(queries))
    if _index_arrays is None:
        data.check_episode_spec(**size)
        _index_arrays = jax.device_put((data.offsets, data.counts), _cpu())
    images = np.asarray(data.images)
    if isinstance(sharding, jax.sharding.Sharding) and not sharding.is_fully_addressable:
        batch = _draw_own_share(images, keys, size, _index_arrays, sharding)
    else:
        s_idx, s_y, q_idx, q_y = _host_indices(keys, size, _index_arrays)
        batch = Episode((images[s_idx], s_y), (images[q_idx], q_y))
        batch = jax.device_put(batch, sharding) if sharding is not None else jax.device_put(batch)
    # Waited for, so that a stream queues only batches that are on the device: the consumer's
    # blocked time is then all the time it waited for data (and a transfer error surfaces in
    # the thread, then in next()).
    return jax.block_until_ready(_scale_on_device(batch))


def _draw_own_share(images, keys, size: dict, index_arrays, sharding) -> Episode:
    """Several processes: this process draws and places only the tasks of its own devices.

    A task's indices depend on its key alone (the draw is vmapped over keys), so drawing a subset
    of the keys gives those tasks exactly as a draw of the whole batch would.
    """
    n = len(keys)
    owned = sharding.addressable_devices_indices_map((n,)).values()
    rows = sorted({row for index in owned for row in range(*index[0].indices(n))})
    position = {row: i for i, row in enumerate(rows)}
    s_idx, s_y, q_idx, q_y = _host_indices(keys[np.asarray(rows)], size, index_arrays)
    local = Episode((images[s_idx], s_y), (images[q_idx], q_y))

    def place(x):
        def shard(index):
            wanted = [position[row] for row in range(*index[0].indices(n))]
            return x[wanted][(slice(None), *index[1:])]
        return jax.make_array_from_callback((n, *x.shape[1:]), sharding, shard)
    return jax.tree_util.tree_map(place, local)


def _fill(q: queue.Queue, stop: threading.Event, data: RaggedImages, size: dict, index_arrays,
          keys_for_step, sharding, step: int) -> None:
    # The stream's thread. It holds no reference to the stream, so that a stream dropped without
    # close() is still collected, and its __del__ stops this loop.
    try:
        while not stop.is_set():
            batch = put_host_batch(data, keys_for_step(step), **size, sharding=sharding,
                                   _index_arrays=index_arrays)
            if not _put(q, stop, (step, batch)):
                return
            step += 1
    except BaseException as e:  # noqa: BLE001 (handed to the consumer, raised there)
        _put(q, stop, _Failure(e))


class HostEpisodeStream:
    """Task batches drawn on the host by a background thread, ``prefetch`` steps ahead.

    Iterating yields ``(step, tasks)`` for ``step = start_step + 1, start_step + 2, ...`` (the
    step a batch is for, counted as the training loop counts completed steps), where ``tasks`` is
    ``put_host_batch(data, keys_for_step(step), ..., sharding=sharding)``: equal, bit for bit, to
    ``host_batch(data, keys_for_step(step), ...)``, on the device.
    Endless: stop it with :meth:`close` or by leaving its ``with`` block. An exception in the
    thread is raised again by the next ``next()``, with the thread's traceback.

    Args:
      data: the split, with ``images`` in host memory (numpy).
      ways, shots, queries: the tasks' size; checked against ``data`` here.
      keys_for_step: ``step -> keys`` of that step's tasks (``(meta_batch, 2)`` or typed keys);
        called in the thread, so it must be thread-safe (a pure jax function is).
      start_step: the last step already done; the first batch is for ``start_step + 1``.
      prefetch: batches kept ready (at least 1); one more may be under construction, so up to
        ``prefetch + 2`` batches are on the device at once (queued, being built, in use).
      sharding: passed to ``jax.device_put`` (a ``Sharding`` or a ``Device``); ``None``: the
        default device.

    Attributes:
      wait_seconds: total time ``next()`` spent blocked waiting for a batch.
      batches: the number of batches handed out.
    """

    def __init__(self, data: RaggedImages, *, ways: int, shots: int, queries: int,
                 keys_for_step: Callable[[int], jax.Array], start_step: int, prefetch: int = 2,
                 sharding=None):
        if not isinstance(data, RaggedImages):
            raise DataError("HostEpisodeStream needs a RaggedImages split (host arrays); build "
                            "one with metajax.data.load_folder or RaggedImages.from_dense")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise DataError(f"prefetch must be an int >= 1, got {prefetch!r}")
        data.check_episode_spec(ways=ways, shots=shots, queries=queries)
        host_data = data._replace(images=np.asarray(data.images))
        index_arrays = jax.device_put((data.offsets, data.counts), _cpu())
        size = dict(ways=int(ways), shots=int(shots), queries=int(queries))
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self.wait_seconds = 0.0
        self.batches = 0
        self._thread = threading.Thread(
            target=_fill, name="HostEpisodeStream", daemon=True,
            args=(self._queue, self._stop, host_data, size, index_arrays, keys_for_step, sharding,
                  int(start_step) + 1))
        self._thread.start()

    def __iter__(self) -> Iterator[tuple[int, Episode]]:
        return self

    def __next__(self) -> tuple[int, Episode]:
        if self._failure is not None:
            raise self._failure
        if self._stop.is_set():
            raise StopIteration
        start = time.perf_counter()
        while True:
            try:
                item = self._queue.get(timeout=0.05)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the HostEpisodeStream thread stopped without a batch or "
                                       "an error") from None
        self.wait_seconds += time.perf_counter() - start
        if isinstance(item, _Failure):
            self._failure = item.error
            self.close()
            raise item.error
        self.batches += 1
        return item

    def next(self) -> tuple[int, Episode]:
        """The next ``(step, tasks)``; same as ``next(stream)``."""
        return self.__next__()

    def close(self) -> None:
        """Stops the thread and drops the batches prepared ahead; idempotent."""
        self._stop.set()
        while True:  # unblock a put in progress
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def __enter__(self) -> "HostEpisodeStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self._stop.set()
        except AttributeError:
            pass


def split_nbytes(data) -> int:
    """Bytes a split takes as stored: a :class:`RaggedImages` (images, offsets and counts), an
    array, or a mapping / sequence of them (summed, e.g. all splits of a dataset)."""
    if isinstance(data, RaggedImages):
        return sum(split_nbytes(a) for a in data.device_arrays())
    if isinstance(data, dict):
        return sum(split_nbytes(v) for v in data.values())
    if isinstance(data, (list, tuple)) and not hasattr(data, "nbytes"):
        return sum(split_nbytes(v) for v in data)
    if hasattr(data, "nbytes"):
        return int(data.nbytes)
    return int(np.asarray(data).nbytes)


def device_memory_bytes(device=None) -> tuple[int, str]:
    """``(bytes, source)``: the memory of ``device`` (default: JAX's first device).

    ``memory_stats()["bytes_limit"]`` where the backend reports it (GPUs, TPUs); otherwise (a
    CPU, whose ``memory_stats()`` is ``None``) the machine's physical RAM,
    ``os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")``.
    """
    device = device if device is not None else jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 (some backends raise instead of returning None)
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), "memory_stats bytes_limit"
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "physical RAM"


def choose_placement(nbytes: int, device=None, fraction: float = 0.5) -> str:
    """Where ``--data-on auto`` keeps data of ``nbytes`` bytes: ``"device"`` or ``"host"``.

    The rule: ``"host"`` when ``nbytes > fraction * memory``, else ``"device"``, with ``memory``
    from :func:`device_memory_bytes` (the device's ``bytes_limit``, or physical RAM on a CPU).
    The other half (by default) is left for parameters, optimizer state, activations and XLA's
    workspace. Pass the bytes of everything that would be placed together (e.g. the train and
    validation splits, :func:`split_nbytes` of both).
    """
    if not 0 < fraction <= 1:
        raise DataError(f"fraction must be in (0, 1], got {fraction!r}")
    memory, _ = device_memory_bytes(device)
    return "host" if int(nbytes) > fraction * memory else "device"
