"""Does a jitted step wait on host-drawn episodes? Step times with the split on the device vs host.

A fixed-cost jitted step (a chain of matmuls that also reads the task batch) consumes the task
batches of a synthetic ragged split in memory (random uint8 images, classes of different sizes),
in four ways, each for ``--steps`` steps after ``--warmup`` steps:

- ``compute``: the same batch every step, already on the device: the step's own cost;
- ``device``: the split on the device, episodes drawn inside the jitted step
  (``sample_ragged_episode``, vmapped over the step's keys);
- ``host-stream``: the split in host memory, batches drawn by ``HostEpisodeStream``'s thread,
  ``--prefetch`` steps ahead;
- ``host-sync``: the same host batches drawn in the loop, no thread (what prefetching hides).

Every step is waited for (``block_until_ready``), so a step's time includes any wait for its
data. For ``host-stream`` it also reports the time the consumer was blocked on the queue, and
for reference the time one host batch takes to prepare (``prep``). When preparing is faster than
the step, the stream's blocked time stays near zero and its step time near ``compute``'s. On a
CPU backend the loader thread and XLA share the same cores, so there the stream's step time also
shows the cost of that sharing; by default XLA:CPU runs each op on one thread
(``--compute-threads 1``), leaving the other cores to the loader as an accelerator would.

    python benchmarks/host_data.py                  # ~30 s on 2 CPU cores
    python benchmarks/host_data.py --steps 100 --width 1024 --image-size 84 --query 15
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from metajax.data.host_stream import (HostEpisodeStream, choose_placement, device_memory_bytes,
                                      put_host_batch, split_nbytes)
from metajax.data.ragged import RaggedImages, sample_ragged_episode


def synthetic_split(classes: int, min_count: int, max_count: int, image_size: int,
                    channels: int, seed: int) -> RaggedImages:
    """Random uint8 images, ``classes`` classes of ``min_count..max_count`` images each."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(min_count, max_count + 1, classes).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
    images = rng.integers(0, 256, (int(counts.sum()), image_size, image_size, channels),
                          dtype=np.uint8)
    return RaggedImages(images, offsets, counts, tuple(f"class{c}" for c in range(classes)))


def make_compute(width: int, matmuls: int):
    """``compute(w, tasks) -> scalar``: ``matmuls`` (width x width) products seeded by the data."""
    def compute(w, tasks):
        (sx, sy), (qx, qy) = tasks
        # Depends on every image, so the data must be there before the matmuls start.
        seed = jnp.mean(sx) + jnp.mean(qx) + 1e-3 * (jnp.mean(sy) + jnp.mean(qy))
        h = w + seed
        for _ in range(matmuls):
            h = jnp.tanh(h @ w)
        return jnp.mean(h)
    return compute


def summarize(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "mean_s": statistics.fmean(times),
            "max_s": max(times)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per mode (compile)")
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--query", type=int, default=15)
    parser.add_argument("--classes", type=int, default=64)
    parser.add_argument("--min-count", type=int, default=20, help="fewest images of a class")
    parser.add_argument("--max-count", type=int, default=100, help="most images of a class")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--width", type=int, default=640, help="matmul size of the step")
    parser.add_argument("--matmuls", type=int, default=6, help="matmuls per step")
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4,
                        help="the modes take turns, steps/rounds steps at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compute-threads", choices=("1", "all"), default="1",
                        help="XLA:CPU threads per op: 1 (default) leaves the other cores to the "
                             "loader thread, as a step on an accelerator leaves the host's "
                             "cores; all: XLA's default, compute and loader share every core")
    args = parser.parse_args(argv)
    if args.compute_threads == "1":
        # Read when JAX starts its CPU backend, i.e. at the first computation below.
        os.environ["XLA_FLAGS"] = (f"{os.environ.get('XLA_FLAGS', '')} "
                                   "--xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()

    size = dict(ways=args.ways, shots=args.shots, queries=args.query)
    data = synthetic_split(args.classes, args.min_count, args.max_count, args.image_size,
                           args.channels, args.seed)
    data.check_episode_spec(**size)
    device = jax.devices()[0]
    nbytes = split_nbytes(data)
    memory, memory_source = device_memory_bytes(device)
    base = jax.random.PRNGKey(args.seed)

    def keys_for_step(step):
        return jax.random.split(jax.random.fold_in(base, step), args.meta_batch)

    w = jax.random.normal(jax.random.PRNGKey(1), (args.width, args.width)) / args.width ** 0.5
    compute = make_compute(args.width, args.matmuls)
    host_step = jax.jit(compute)

    @jax.jit
    def device_step(w, split, step):
        keys = jax.random.split(jax.random.fold_in(base, step), args.meta_batch)
        sample = functools.partial(sample_ragged_episode, **size)
        return compute(w, jax.vmap(sample, in_axes=(0, None))(keys, split))

    fixed = put_host_batch(data, keys_for_step(0), **size)
    on_device = jax.device_put(data)
    index_arrays = jax.device_put((data.offsets, data.counts), jax.devices("cpu")[0])

    def run_compute(steps):
        for _ in steps:
            tic = time.perf_counter()
            host_step(w, fixed).block_until_ready()
            yield time.perf_counter() - tic

    def run_device(steps):
        for step in steps:
            tic = time.perf_counter()
            device_step(w, on_device, step).block_until_ready()
            yield time.perf_counter() - tic

    prep = []

    def run_host_sync(steps):
        for step in steps:
            tic = time.perf_counter()
            tasks = put_host_batch(data, keys_for_step(step), **size, _index_arrays=index_arrays)
            prep.append(time.perf_counter() - tic)
            host_step(w, tasks).block_until_ready()
            yield time.perf_counter() - tic

    blocked = []
    # One stream for all rounds (as in training): between its turns it only fills its queue.
    stream = HostEpisodeStream(data, **size, keys_for_step=keys_for_step, start_step=0,
                               prefetch=args.prefetch)

    def run_host_stream(steps):
        for _ in steps:
            tic = time.perf_counter()
            before = stream.wait_seconds
            _, tasks = next(stream)
            waited = stream.wait_seconds - before
            host_step(w, tasks).block_until_ready()
            yield time.perf_counter() - tic
            blocked.append(waited)

    modes = {"compute": run_compute, "device": run_device, "host-sync": run_host_sync,
             "host-stream": run_host_stream}
    times = {mode: [] for mode in modes}
    for mode, run in modes.items():  # compile and warm up, untimed
        list(run(range(1, args.warmup + 1)))
    prep.clear()
    blocked.clear()
    # Modes take turns in rounds, so that a slow spell of a shared machine hits all of them.
    per_round = -(-args.steps // args.rounds)
    step = args.warmup
    for _ in range(args.rounds):
        steps = list(range(step + 1, step + per_round + 1))
        for mode, run in modes.items():
            times[mode] += list(run(steps))
        step += per_round
    stream.close()
    results = {mode: summarize(ts) for mode, ts in times.items()}
    results["host-stream"].update(blocked_s_per_step=statistics.fmean(blocked),
                                  blocked_s_max=max(blocked))
    prep_s = statistics.median(prep)

    compute_s = results["compute"]["median_s"]
    print(f"backend {jax.default_backend()} ({device.device_kind}, XLA:CPU threads per op: "
          f"{args.compute_threads}); split {nbytes / 2**20:.0f} MiB "
          f"({int(data.counts.sum())} images, {args.classes} classes of "
          f"{int(data.counts.min())}..{int(data.counts.max())}); --data-on auto -> "
          f"{choose_placement(nbytes, device)} ({memory / 2**30:.1f} GiB, {memory_source})")
    print(f"batch: {args.meta_batch} tasks x {args.ways}-way {args.shots}-shot {args.query}-query "
          f"of {args.image_size}x{args.image_size}x{args.channels}; host prep (put_host_batch: indices, "
          f"gather, device_put, scaling) {prep_s * 1e3:.1f} ms/batch; {len(times['compute'])} "
          f"timed steps per mode in {args.rounds} rounds")
    print(f"{'mode':<13}{'median ms':>11}{'mean ms':>10}{'max ms':>9}{'vs compute':>12}"
          f"{'blocked ms/step':>17}")
    for mode, row in results.items():
        blocked = row.get("blocked_s_per_step")
        blocked_text = f"{blocked * 1e3:>17.2f}" if blocked is not None else f"{'-':>17}"
        print(f"{mode:<13}{row['median_s'] * 1e3:>11.1f}{row['mean_s'] * 1e3:>10.1f}"
              f"{row['max_s'] * 1e3:>9.1f}{row['median_s'] / compute_s:>11.2f}x{blocked_text}")
    summary = {"benchmark": "host_data", "backend": jax.default_backend(),
               "steps": len(times["compute"]), "split_bytes": nbytes, "placement_auto":
               choose_placement(nbytes, device), "prep_s": prep_s,
               "modes": results, "args": vars(args)}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
