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

``configure_host_allocator("reuse")`` tells glibc to keep freed memory: one arena for all
threads, served from the heap (no ``mmap`` per request), never trimmed, so a step reuses the
pages the previous step faulted in. In those runs it took the Table 4 5w5s ANIL step from 108 to
79 ms and MiniImageNet MAML from 1709 to 1353 ms, but made the Omniglot 20-way steps slower
(MAML 1057 -> 1863 ms, FOMAML 566 -> 1043, ANIL 348 -> 643, with more user and system
time; all threads then share one arena and its lock, a likely cause that was not profiled). It
is therefore opt-in (``Config.host_allocator``, ``--host-allocator``); the default is
``"system"``. The process also keeps its peak heap size until it exits, as a caching allocator
does.

glibc reads these settings when a thread first allocates, so they must be set before JAX starts
its CPU backend (the first array or computation); once it has started this function changes
nothing and says so. Setting ``MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=2147483647`` in the environment of the process does the same from its
first instruction.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

HOST_ALLOCATORS = ("reuse", "system")

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
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
      mode: ``"reuse"`` keeps freed memory in the process, so that XLA:CPU's buffers of one
        step are the already-mapped pages of the previous step's (faster for steps with large
        buffers, slower for others: see the module docstring); ``"system"`` leaves the C
        library's defaults.

    Returns:
      What was done: ``"reuse"`` (set now), ``"system"`` (nothing asked), or, when nothing could
      be set, ``"unsupported: <why>"`` (not glibc) or ``"too late: <why>"`` (JAX's backend had
      already started; its threads keep the arenas they have).

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
                "configure_host_allocator() before the first JAX computation, or set "
                "MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 in the "
                "environment")
    for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM)):
        if libc.mallopt(param, value) != 1:  # mallopt returns 1 on success
            return f"unsupported: glibc rejected mallopt({param}, {value})"
    return "reuse"
