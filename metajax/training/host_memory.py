"""Host memory: optionally keep XLA:CPU's per-execution buffers mapped instead of re-mapping them.

XLA:CPU allocates a compiled program's temporary buffer (and its outputs) with ``malloc`` on
every execution, from the worker thread that runs it. glibc serves a request that large from a
fresh ``mmap`` (a worker thread's arena cannot hold more than 64 MiB; the main arena maps
anything over its threshold, at most 32 MiB) and unmaps it on ``free``, so every page of the
buffer is a page fault, zero-filled by the kernel, on every step. A MiniImageNet Table 4 5w5s
ANIL meta-step (96 MB of temporaries) took 23,400 minor faults and 70 ms of system time per
step on this project's 2-core machine, against a 108 ms wall time; learn2learn's step on the
same shapes took 27,000 faults and 69 ms (PyTorch's CPU tensors go through the same
``malloc``). ``benchmarks/host_allocator.py`` prints faults, CPU times and step times for
each setting; ``benchmarks/results/host_allocator_cpu.txt`` holds the runs.

``configure_host_allocator("reuse")`` makes that buffer come from the heap and stay there: it
runs single-device computations on the calling thread (JAX's ``jax_cpu_enable_async_dispatch``
off: the call returns when the computation is done, which ``block_until_ready`` waits for
anyway), so their buffers come from the main arena, and tells glibc never to ``mmap`` a request
(``M_MMAP_MAX`` 0) and never to give freed heap back (``M_TRIM_THRESHOLD``). A step then
reuses the pages the previous step faulted in. Worker threads keep their own arenas.
(A first version put all threads on one arena instead, ``M_ARENA_MAX`` 1, and made the Omniglot
20-way steps slower, e.g. MAML 1057 -> 1863 ms: ``benchmarks/results/host_allocator_cpu.txt``.)
The process keeps its peak heap size until it exits, as a caching allocator does, and Python
no longer runs ahead of a single-device computation (multi-device computations stay
asynchronous). ``metajax train`` uses ``"reuse"`` by default (``Config.host_allocator``); the
measured effects are in the README ("Page faults"); ``"system"`` keeps the C library's and
JAX's defaults.

JAX fixes its dispatch mode when it starts its CPU backend (the first array or computation), so
this must run before that; once the backend has started this function changes nothing and says
so.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

HOST_ALLOCATORS = ("reuse", "system")

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int


def _glibc():
    """The process's C library if it is glibc (which has ``mallopt``), else ``None``."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def _jax_backend_started() -> bool:
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def configure_host_allocator(mode: str = "reuse") -> str:
    """Sets how the host allocator treats freed memory; call before the first JAX computation.

    Args:
      mode: ``"reuse"`` keeps freed memory in the process and runs single-device
        computations on the calling thread, so that XLA:CPU's buffers of one step are the
        already-mapped pages of the previous step's (see the module docstring); ``"system"``
        leaves the C library's and JAX's defaults.

    Returns:
      What was done: ``"reuse"`` (set now), ``"system"`` (nothing asked), or, when nothing could
      be set, ``"unsupported: <why>"`` (not glibc) or ``"too late: <why>"`` (JAX's backend had
      already started: its dispatch mode is fixed).

    Raises:
      ValueError: for an unknown mode.
    """
    if mode not in HOST_ALLOCATORS:
        raise ValueError(f"unknown --host-allocator {mode!r}; choose one of: "
                         f"{', '.join(HOST_ALLOCATORS)}")
    if mode == "system":
        return "system"
    libc = _glibc()
    if libc is None:
        return f"unsupported: the C library is not glibc ({platform.system()})"
    if _jax_backend_started():
        return ("too late: JAX's CPU backend has already started; call "
                "configure_host_allocator() before the first JAX computation")
    import jax

    for param, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM)):
        if libc.mallopt(param, value) != 1:  # mallopt returns 1 on success
            return f"unsupported: glibc rejected mallopt({param}, {value})"
    # The executing thread allocates the buffers: then the caller's, whose (main) arena serves
    # any size from the heap; a worker thread's arena maps anything over 64 MiB whatever the
    # setting.
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return "reuse"
