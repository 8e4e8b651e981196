"""Host memory: keep XLA:CPU's per-execution buffers in the process instead of re-mapping them.

XLA:CPU allocates a compiled program's temporary buffer (and its outputs) with ``malloc`` on
every execution, from the worker thread that runs it. glibc serves a request that large from a
fresh ``mmap`` (a worker thread's arena cannot hold more than 64 MiB; the main arena maps
anything over its threshold, at most 32 MiB) and unmaps it on ``free``. Every page of the
buffer is then a page fault, zero-filled by the kernel, on every step: a MiniImageNet Table 4
ANIL meta-step (96 MB of temporaries) took 23,400 minor faults and 60 ms of system time per
step on this project's 2-core machine, more than half of its 103 ms wall time
(``benchmarks/host_allocator.py`` prints faults, system time and step time for both
settings). PyTorch's CPU tensors go through the same ``malloc`` and pay the same.

``configure_host_allocator("reuse")`` tells glibc to keep freed memory: one arena for all
threads, served from the heap (no ``mmap`` per request), never trimmed. A step then reuses the
pages the previous step faulted in. The cost: the process keeps its peak heap size until it
exits (as a caching allocator does), and threads share one arena's lock.

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
        step are the already-mapped pages of the previous step's (see the module docstring);
        ``"system"`` leaves the C library's defaults.

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
