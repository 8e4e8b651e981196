"""3x3 'SAME' convolutions of a batch ``x`` (B, H, W, C) with a kernel (3, 3, C, F).

Three implementations, with the same values and derivatives of every order:

* ``"patches"``: 9 shifted strided slices concatenated into patches (B, H', W', 9C), then one
  matmul with the kernel as (9C, F). Every derivative is a matmul or a slice/pad. Under ``vmap``
  over per-task kernels it stays a batched matmul.
* ``"xla"``: XLA's native convolution (``lax.conv_general_dilated``); JAX differentiates it, and
  its derivatives again, by its own rules.
* ``"hybrid"``: every derivative, of every order, is one of three bilinear maps, each a native
  convolution in a layout XLA:CPU runs on its fast path inside a meta-step: the forward
  convolution, the input-gradient (a transposed convolution), and the kernel-gradient (a
  correlation of the input with the output cotangent) written in Eigen's layout, where JAX's own
  rule emits a layout XLA:CPU runs as a slow generic loop.

Why "hybrid" stays on those three maps at every order: with ``T(x, k, g) = <conv(x, k), g>``
the maps are its partial derivatives, ``conv = dT/dg``, ``input_grad = dT/dx``,
``kernel_grad = dT/dk``. Each is bilinear, and the derivative of each w.r.t. either argument is
again one of the three. So each is a ``jax.custom_vjp`` whose backward rule calls the other two
(themselves custom_vjp functions): the backward pass of a backward pass (second-order MAML) is
made of the same three maps, where JAX's own rules would differentiate a transposed convolution
into convolutions of other layouts. It supports reverse mode at any order and ``vmap``; not
forward mode (``jax.jvp`` of a ``custom_vjp`` function is an error in JAX). Which is fastest
where: ``benchmarks/results/conv_impl_cpu.txt``, and :func:`default_conv_impl`.
"""
from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp

ConvImpl = Literal["patches", "xla", "hybrid"]
CONV_IMPLS = ("patches", "xla", "hybrid")
_DIMS = ("NHWC", "HWIO", "NHWC")


def same_padding(size: int, stride: int) -> tuple[int, tuple[int, int]]:
    """Output size and (before, after) padding of a 3-wide 'SAME' window along one axis.

    Args:
      size: the input's size along the axis.
      stride: the window's stride.

    Returns:
      ``(out, (before, after))`` as XLA defines 'SAME': ``out = ceil(size / stride)``, and an odd
      total padding puts the extra row/column after (bottom/right).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + 3 - size, 0)
    return out, (total // 2, total - total // 2)


def patches3x3(x, stride: int):
    """The 3x3 'SAME' patches of ``x`` (B, H, W, C): (B, H', W', 9C), ordered (di, dj, c).

    The order matches ``kernel.reshape(9 * C, F)`` of a (3, 3, C, F) kernel.
    """
    _, h, w, _ = x.shape
    out_h, (top, bottom) = same_padding(h, stride)
    out_w, (left, right) = same_padding(w, stride)
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    shifted = [
        xp[:, di:di + (out_h - 1) * stride + 1:stride, dj:dj + (out_w - 1) * stride + 1:stride, :]
        for di in range(3) for dj in range(3)
    ]
    return jnp.concatenate(shifted, axis=-1)


def conv_patches(x, kernel, stride: int = 1):
    """``"patches"``: the convolution as patches (B, H', W', 9C) @ kernel (9C, F)."""
    c, f = kernel.shape[2:]
    return patches3x3(x, stride) @ kernel.reshape(9 * c, f)


def conv_native(x, kernel, stride: int = 1):
    """``"xla"``: XLA's native convolution, padded as :func:`same_padding` says."""
    _, h, w, _ = x.shape
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=(stride, stride),
        padding=(same_padding(h, stride)[1], same_padding(w, stride)[1]), dimension_numbers=_DIMS)


def _input_grad_pads(g, stride: int, in_hw: tuple[int, int]) -> list[tuple[int, int]]:
    # x[j] feeds y[i] through kernel tap j + before - i*stride, so dx is the correlation of g
    # dilated by the stride with the flipped kernel (in/out channels swapped), padded so that
    # output row j starts at dilated row j + before - 2.
    pads = []
    for size, out_size in zip(in_hw, g.shape[1:3]):
        before = same_padding(size, stride)[1][0]
        pads.append((2 - before, size + before - (out_size - 1) * stride - 1))
    return pads


def _correlate_flipped(g, kernel, pads, dilation: int):
    # g correlated with the flipped kernel (in/out channels swapped), g dilated by ``dilation``.
    return jax.lax.conv_general_dilated(
        g, jnp.flip(kernel, (0, 1)).swapaxes(2, 3), window_strides=(1, 1), padding=pads,
        lhs_dilation=(dilation, dilation), dimension_numbers=_DIMS)


def _lhs_dilated_input_grad(g, kernel, stride: int, in_hw: tuple[int, int]):
    # The stride as the convolution's lhs_dilation: JAX's own transpose rule's form.
    return _correlate_flipped(g, kernel, _input_grad_pads(g, stride, in_hw), stride)


def _zero_interleaved_input_grad(g, kernel, stride: int, in_hw: tuple[int, int]):
    # The same correlation with g dilated beforehand (stride - 1 zeros between its rows and
    # columns, lax.pad's interior padding) and a plain stride-1 convolution.
    interior = (0, 0, stride - 1)
    dilated = jax.lax.pad(g, jnp.zeros((), g.dtype), ((0, 0, 0), interior, interior, (0, 0, 0)))
    return _correlate_flipped(dilated, kernel, _input_grad_pads(g, stride, in_hw), 1)


def _unswapped_input_grad(g, kernel, stride: int, in_hw: tuple[int, int]):
    # Where g is smaller than the kernel (Omniglot's conv4: 2x2), XLA's algebraic simplifier
    # swaps an lhs-dilated convolution's operands into the layout 01fb_o01i->f01b, slower on
    # XLA:CPU; zero-interleaving g beforehand keeps the operands in place. Larger
    # g keep lhs_dilation, faster there than the zero-interleaved form (Omniglot MAML 0.80 vs
    # 0.96 s/step with every input-gradient zero-interleaved; this form 0.74:
    # benchmarks/results/input_grad_cpu.txt).
    if min(g.shape[1:3]) < kernel.shape[0]:
        return _zero_interleaved_input_grad(g, kernel, stride, in_hw)
    return _lhs_dilated_input_grad(g, kernel, stride, in_hw)


def _patches_kernel_grad(x, g, stride: int):
    c, f = x.shape[-1], g.shape[-1]
    grad = jnp.einsum("bhwp,bhwf->pf", patches3x3(x, stride), g)
    return grad.reshape(3, 3, c, f)


def _native_kernel_grad(x, g, stride: int):
    # dk[i, j, c, f] = sum_{b,h,w} x_pad[b, s*h + i, s*w + j, c] g[b, h, w, f]: a convolution
    # of x seen as (C, H, W, B) "images" with g seen as an (H', W', B, F) window dilated by the
    # stride, written in the layout (b01f_01io->b01f) XLA:CPU hands to Eigen. JAX's own
    # transpose rule emits f01b_i01o->01bf, which XLA:CPU runs as a generic loop in a meta-step
    # (benchmarks/results/kernel_grad_cpu.txt).
    _, h, w, _ = x.shape
    pads = (same_padding(h, stride)[1], same_padding(w, stride)[1])
    grad = jax.lax.conv_general_dilated(
        x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), window_strides=(1, 1), padding=pads,
        rhs_dilation=(stride, stride), dimension_numbers=_DIMS)
    return grad.transpose(1, 2, 0, 3)


# What hybrid's kernel_grad computes with (benchmarks/kernel_grad.py swaps it): with convolutions
# on Eigen the native form was 1.01-2.6x faster than patches on 10 of the 12 rows of
# kernel_grad_eigen_cpu.txt and 0.99x on the other two.
_hybrid_kernel_grad = _native_kernel_grad


# What hybrid's input_grad computes with (benchmarks/input_grad.py swaps it).
_hybrid_input_grad = _unswapped_input_grad


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_hybrid(x, kernel, stride: int = 1):
    """``"hybrid"``: native forward, input-gradient and kernel-gradient maps, at any order.

    Args:
      x: (B, H, W, C) inputs.
      kernel: (3, 3, C, F).
      stride: 1 or 2 (any positive stride works).

    Returns:
      (B, ceil(H / stride), ceil(W / stride), F), equal to :func:`conv_native`'s.
    """
    return conv_native(x, kernel, stride)


# Each forward rule computes its output with the custom_vjp function itself, not the raw op: an
# outer derivative (second-order MAML differentiates the inner gradient's computation, forward
# rules included) must see the custom rule again, or JAX would differentiate the raw op by its
# own rules (native kernel-gradient convolutions, XLA:CPU's slow ones).
def _conv_fwd(x, kernel, stride):
    return conv_hybrid(x, kernel, stride), (x, kernel)


def _conv_bwd(stride, res, g):
    x, kernel = res
    return input_grad(g, kernel, stride, x.shape[1:3]), kernel_grad(x, g, stride)


conv_hybrid.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def input_grad(g, kernel, stride: int, in_hw: tuple[int, int]):
    """The cotangent of a convolution's input: ``d<conv(x, kernel), g>/dx``, natively.

    Args:
      g: (B, H', W', F) cotangent of the convolution's output.
      kernel: (3, 3, C, F).
      stride: the convolution's stride.
      in_hw: the input's (H, W) (static: a strided convolution's output does not determine it).

    Returns:
      (B, H, W, C).
    """
    return _hybrid_input_grad(g, kernel, stride, in_hw)


def _input_grad_fwd(g, kernel, stride, in_hw):
    return input_grad(g, kernel, stride, in_hw), (g, kernel)


def _input_grad_bwd(stride, in_hw, res, ct):
    # <input_grad(g, k), ct> = T(ct, k, g): its derivatives are conv(ct, k) and kernel_grad(ct, g).
    g, kernel = res
    return conv_hybrid(ct, kernel, stride), kernel_grad(ct, g, stride)


input_grad.defvjp(_input_grad_fwd, _input_grad_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def kernel_grad(x, g, stride: int):
    """The cotangent of a convolution's kernel: ``d<conv(x, kernel), g>/dkernel``, natively.

    Args:
      x: (B, H, W, C) the convolution's input.
      g: (B, H', W', F) cotangent of its output.
      stride: the convolution's stride.

    Returns:
      (3, 3, C, F).
    """
    return _hybrid_kernel_grad(x, g, stride)


def _kernel_grad_fwd(x, g, stride):
    return kernel_grad(x, g, stride), (x, g)


def _kernel_grad_bwd(stride, res, ct):
    # <kernel_grad(x, g), ct> = T(x, ct, g): its derivatives are input_grad(g, ct), conv(x, ct).
    x, g = res
    return input_grad(g, ct, stride, x.shape[1:3]), conv_hybrid(x, ct, stride)


kernel_grad.defvjp(_kernel_grad_fwd, _kernel_grad_bwd)


def conv3x3(x, kernel, *, stride: int = 1, impl: ConvImpl = "patches"):
    """3x3 'SAME' convolution of ``x`` (B, H, W, C) with ``kernel`` (3, 3, C, F).

    Args:
      x: (B, H, W, C) inputs.
      kernel: (3, 3, C, F), of ``x``'s dtype.
      stride: the window's stride (1 or 2 in the backbones).
      impl: ``"patches"``, ``"xla"`` or ``"hybrid"`` (see the module docstring).

    Returns:
      (B, ceil(H / stride), ceil(W / stride), F).
    """
    if impl == "patches":
        return conv_patches(x, kernel, stride)
    if impl == "xla":
        return conv_native(x, kernel, stride)
    if impl == "hybrid":
        return conv_hybrid(x, kernel, stride)
    raise ValueError(f"unknown conv_impl {impl!r}; use one of {', '.join(CONV_IMPLS)}")


# The fastest impl per backend and algorithm, as measured by benchmarks/conv_impl.py (CPU:
# benchmarks/results/conv_impl_cpu.txt, tasks mapped one at a time, the CPU default).
# Other backends keep "patches", which also vmaps the task batch (their default): on an H200 it
# was the fastest on each of the 10 rows measured (benchmarks/results/peer_learn2learn_gpu_h200.txt,
# e.g. Omniglot MAML 0.007 s per step against 0.040 xla and 0.039 hybrid).
_FASTEST = {"cpu": {"maml": "hybrid", "fomaml": "hybrid", "anil": "hybrid"}}


def default_conv_impl(algo: str, backend: str | None = None,
                      task_chunk: int | None = None) -> ConvImpl:
    """The convolution implementation that meta-trains ``algo`` fastest on ``backend``.

    This is the one place the choice is made (``conv_impl="auto"`` of
    ``metajax.training.Config`` and of the benchmarks resolves here; the Config's default is
    still ``"patches"``).

    Args:
      algo: the algorithm's name (``Config.algo``); one not measured gets the backend's
        choice for MAML, the family most algorithms belong to.
      backend: ``"cpu"``, ``"gpu"``, ``"tpu"``; None: JAX's default backend.
      task_chunk: tasks vmapped at a time (``Config.task_chunk``; None: the backend's default,
        1 on a CPU). Vmapped tasks (anything but 1) get ``"patches"``: with per-task kernels a
        native convolution becomes a grouped one, which XLA:CPU runs slowly, where patches stay
        a batched matmul.

    Returns:
      ``"patches"``, ``"xla"`` or ``"hybrid"``.
    """
    backend = backend or jax.default_backend()
    fastest = _FASTEST.get(backend)
    sequential = task_chunk == 1 or (task_chunk is None and backend == "cpu")
    if fastest is None or not sequential:
        return "patches"
    return fastest.get(algo, fastest["maml"])


def resolve_conv_impl(conv_impl: str, algo: str, backend: str | None = None,
                      task_chunk: int | None = None) -> ConvImpl:
    """``conv_impl`` itself, or for ``"auto"`` :func:`default_conv_impl` of the other arguments."""
    if conv_impl == "auto":
        return default_conv_impl(algo, backend, task_chunk)
    return conv_impl


# XLA:CPU (jaxlib 0.10) hands reductions, dots and native convolutions to YNNPACK by default
# (``xla_cpu_experimental_ynn_fusion_type`` = REDUCE, INDIVIDUAL_DOT, INDIVIDUAL_CONVOLUTION: the
# list that compiles a meta-step to the same YNNPACK fusions as no option). "eigen" keeps the
# rest on YNNPACK and gives the convolutions back to XLA's own (Eigen) kernels.
_YNN_FUSION_TYPE = "xla_cpu_experimental_ynn_fusion_type"


def _ynn(*types: str) -> dict:
    return {_YNN_FUSION_TYPE: ",".join(f"LIBRARY_FUSION_TYPE_{t}" for t in types)}


_CPU_CONV_LIBRARY_OPTIONS = {
    "ynnpack": {},
    "eigen": _ynn("REDUCE", "INDIVIDUAL_DOT"),
}
CONV_LIBRARIES = tuple(_CPU_CONV_LIBRARY_OPTIONS)
# Faster on all 12 rows of benchmarks/results/conv_library_cpu.txt (meta-step 1.02-1.21x,
# adaptation 1.11-1.79x). Adding YNNPACK's ELTWISE or DOT fusions to it was not faster.
_FASTEST_CPU_CONV_LIBRARY = "eigen"


@functools.cache
def _accepts(backend: str, option: str, value: str) -> bool:
    """Whether this jaxlib's ``backend`` compiler knows ``option=value`` (a newer or older XLA
    may rename or drop an experimental option; then the step compiles with the defaults)."""
    try:
        x = jax.device_put(jnp.zeros(()), jax.devices(backend)[0])
        jax.jit(lambda x: x + 1, compiler_options={option: value}).lower(x).compile()
    except Exception:  # noqa: BLE001 - XLA reports an unknown option as a generic runtime error
        return False
    return True


def resolve_conv_library(conv_library: str, backend: str | None = None) -> str:
    """``conv_library`` itself, or for ``"auto"`` the library XLA:CPU meta-trains fastest with
    (on other backends: ``"auto"``, there is no choice)."""
    if conv_library not in ("auto", *CONV_LIBRARIES):
        raise ValueError(f"unknown conv_library {conv_library!r}; use auto or one of "
                         f"{', '.join(CONV_LIBRARIES)}")
    if (backend or jax.default_backend()) != "cpu":
        return "auto"
    return _FASTEST_CPU_CONV_LIBRARY if conv_library == "auto" else conv_library


def compiler_options(conv_library: str = "auto", backend: str | None = None) -> dict:
    """XLA compiler options that run native convolutions on ``conv_library`` on ``backend``.

    This is where the library is chosen: the steps of ``metajax.training`` are compiled with
    these options (``jax.jit(..., compiler_options=...)``, so nothing global is set).

    Args:
      conv_library: ``"ynnpack"`` (XLA:CPU's default), ``"eigen"``, or ``"auto"``: the one that
        meta-trains fastest on the backend (``benchmarks/meta_step.py --conv-library``).
      backend: ``"cpu"``, ``"gpu"``, ``"tpu"``; None: JAX's default backend. Only XLA:CPU has
        the choice; other backends get no options.

    Returns:
      A dict for ``jax.jit``'s ``compiler_options`` (empty: XLA's defaults).
    """
    backend = backend or jax.default_backend()
    library = resolve_conv_library(conv_library, backend)
    if library == "auto":
        return {}
    options = _CPU_CONV_LIBRARY_OPTIONS[library]
    if all(_accepts(backend, k, v) for k, v in options.items()):
        return dict(options)
    if conv_library == "auto":
        return {}  # this XLA lacks the option: its defaults
    raise ValueError(f"conv_library={conv_library!r} needs XLA options {options} that this "
                     f"jaxlib ({jax.lib.__version__}) rejects; use conv_library='auto'")
