"""One Conv4-pool block (3x3 conv -> batch norm -> ReLU -> 2x2 max-pool), forward + gradient.

Times ``d/d(kernel, bias, scale, offset[, input]) <block(x), r>`` on the MiniImageNet Conv4's
first two block shapes at a few batch sizes, for each convolution implementation and two forms of
batch norm: ``centred``, ``(y - mean) * rsqrt(var + eps) * scale + offset`` as written in the
textbook, and ``folded``, metajax's ``batch_norm`` (one per-channel scale and shift). With
``--peer torch`` the same block in PyTorch (``Conv2d``, ``BatchNorm2d`` with batch statistics,
``relu``, ``max_pool2d``), timed after the JAX rows in the same process. The input gradient is
taken for the 32-channel block only (the first block's input is the image).

    python benchmarks/conv_block.py
    /work/peer/bin/python benchmarks/conv_block.py --impls patches,xla,hybrid --peer torch
"""
from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp

from metajax.models.conv import CONV_IMPLS, conv3x3
from metajax.models.layers import batch_moments, batch_norm, max_pool_2x2
from timing import interleaved_medians, median_seconds  # beside this file

SHAPES = {"conv1": (84, 3), "conv2": (42, 32)}  # block: (input height = width, channels)


def centred_batch_norm(y, scale, offset, eps: float = 1e-5):
    mean, var = batch_moments(y)
    return (y - mean) * jax.lax.rsqrt(var + eps) * scale + offset


def jax_block_grad(impl: str, form: str, batch: int, size: int, channels: int):
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    params = (jax.random.normal(keys[0], (3, 3, channels, 32)) * 0.1, jnp.zeros(32),
              jnp.ones(32), jnp.zeros(32))
    x = jax.random.normal(keys[1], (batch, size, size, channels))
    r = jax.random.normal(keys[2], (batch, size // 2, size // 2, 32))
    norm = centred_batch_norm if form == "centred" else batch_norm

    def loss(p, x):
        kernel, bias, scale, offset = p
        y = norm(conv3x3(x, kernel, impl=impl) + bias, scale, offset)
        return jnp.sum(max_pool_2x2(jax.nn.relu(y)) * r)

    grad = jax.jit(jax.grad(loss, argnums=(0,) if channels == 3 else (0, 1)))
    jax.block_until_ready(grad(params, x))
    return lambda: jax.block_until_ready(grad(params, x))


def torch_block_grad(batch: int, size: int, channels: int, threads: int | None):
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(channels, 32, 3, padding=1)
    norm = torch.nn.BatchNorm2d(32, track_running_stats=False)
    x = torch.randn(batch, channels, size, size, requires_grad=channels != 3)
    r = torch.randn(batch, 32, size // 2, size // 2)

    def step():
        (F.max_pool2d(F.relu(norm(conv(x))), 2) * r).sum().backward()

    step()
    return step


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impls", default="patches", help=f"of {','.join(CONV_IMPLS)}")
    parser.add_argument("--forms", default="centred,folded")
    parser.add_argument("--batches", default="5,25,80")
    parser.add_argument("--blocks", default="conv1,conv2")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--peer", default=None, choices=("torch",))
    parser.add_argument("--torch-threads", type=int, default=None)
    args = parser.parse_args(argv)
    rows = []
    for block in args.blocks.split(","):
        size, channels = SHAPES[block]
        for batch in map(int, args.batches.split(",")):
            fns = {(impl, form): jax_block_grad(impl, form, batch, size, channels)
                   for impl in args.impls.split(",") for form in args.forms.split(",")}
            times = {f"{impl}/{form}": s for (impl, form), s in
                     interleaved_medians(fns, args.repeats).items()}
            if args.peer:
                times["torch"] = median_seconds(
                    torch_block_grad(batch, size, channels, args.torch_threads), args.repeats)
            row = {"block": block, "batch": batch, "shape": [batch, size, size, channels],
                   "ms": {k: round(1e3 * v, 2) for k, v in times.items()}}
            rows.append(row)
            print(f"{block} batch {batch:3d} ({size}x{size}x{channels})  " + "  ".join(
                f"{k} {v:7.2f} ms" for k, v in row["ms"].items()), flush=True)
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
