"""The kernel-gradient of a 3x3 convolution inside a meta-step, in three forms.

``"hybrid"`` (``metajax.models.conv``) computes a convolution's kernel-gradient ``dk =
sum_{b,h,w} x_pad[b, h+i, w+j, c] g[b, h, w, f]`` with one function,
``conv._hybrid_kernel_grad``. This benchmark swaps it for each form below and times the whole
compiled meta-step side by side (``benchmarks/hybrid_forms.py``):

* ``patches``: patches^T g, one matmul (hybrid's form until native convolutions ran on Eigen);
* ``jax-transpose``: JAX's own transpose rule of the forward convolution, the form ``--conv-impl
  xla`` runs: one convolution with ``dim_labels=f01b_i01o->01bf``;
* ``canonical``: hybrid's form now: the same contraction written as a convolution in the layout
  XLA:CPU's fast (Eigen) path takes, ``b01f_01io->b01f``: x as (C, H, W, B), g as a (H', W', B, F) window;
* ``shifted-dots``: nine dots, one per kernel tap, of a strided slice of the padded input with
  g, without the patches' concatenation.

It also prints the ``dim_labels`` XLA compiled each kernel-gradient convolution to, inside the
step and for the same convolution compiled on its own, which is what explains the timings.

    python benchmarks/kernel_grad.py
    python benchmarks/kernel_grad.py --workloads table4-mini-5w5s --algos anil
"""
from __future__ import annotations

import argparse
import re

import jax
import jax.numpy as jnp

import hybrid_forms  # beside this file
import metajax.models.conv as conv


def jax_transpose_kernel_grad(x, g, stride: int):
    c, f = x.shape[-1], g.shape[-1]
    _, pullback = jax.vjp(lambda k: conv.conv_native(x, k, stride),
                          jnp.zeros((3, 3, c, f), x.dtype))
    return pullback(g)[0]


def shifted_dots_kernel_grad(x, g, stride: int):
    _, h, w, _ = x.shape
    out_h, (top, bottom) = conv.same_padding(h, stride)
    out_w, (left, right) = conv.same_padding(w, stride)
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    taps = [jnp.einsum("bhwc,bhwf->cf", xp[:, di:di + (out_h - 1) * stride + 1:stride,
                                          dj:dj + (out_w - 1) * stride + 1:stride, :], g)
            for di in range(3) for dj in range(3)]
    return jnp.stack(taps).reshape(3, 3, *taps[0].shape)


FORMS = {"patches": conv._patches_kernel_grad, "jax-transpose": jax_transpose_kernel_grad,
         "canonical": conv._native_kernel_grad, "shifted-dots": shifted_dots_kernel_grad}


def kernel_grad_dim_labels(hlo_text: str) -> list[str]:
    """The dim_labels of every convolution whose output is a (3, 3, C, F)-sized kernel."""
    labels = []
    for line in hlo_text.splitlines():
        match = re.search(
            r"= f32\[(\d+),(\d+),(\d+),(\d+)\]\S* convolution\(.*dim_labels=([^,\s]+)", line)
        if match and sorted(map(int, match.groups()[:4])).count(3) >= 2:
            labels.append(match.group(5))
    return sorted(set(labels))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    hybrid_forms.add_arguments(parser, workloads="table4-mini-5w5s,miniimagenet-5w1s",
                               algos="anil,fomaml")
    parser.add_argument("--forms", default=",".join(FORMS),
                        help=f"comma-separated, of {','.join(FORMS)}")
    args = parser.parse_args(argv)
    hybrid_forms.configure(args)
    forms = {name: FORMS[name] for name in args.forms.split(",")}
    x, g = jnp.ones((25, 42, 42, 32)), jnp.ones((25, 42, 42, 32))
    for name in [n for n in ("jax-transpose", "canonical") if n in forms]:
        alone = jax.jit(FORMS[name], static_argnums=2).lower(x, g, 1).compile().as_text()
        print(f"# {name} compiled alone: dim_labels {kernel_grad_dim_labels(alone)}")
    hybrid_forms.run("_hybrid_kernel_grad", forms, args, kernel_grad_dim_labels, "labels")

if __name__ == "__main__":
    main()
