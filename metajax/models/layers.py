"""Layers of the few-shot backbones.

The 3x3 convolution has three implementations, chosen by ``conv_impl`` and defined in
``metajax.models.conv``: ``"patches"`` (shifted slices + one matmul; under ``vmap`` over
per-task weights a batched matmul, fast on CPU and GPU alike, where the native convolution
becomes a grouped convolution XLA:CPU runs slowly, see ``../shared/notes/performance-findings.md``),
``"xla"`` (the native op) and ``"hybrid"`` (a ``custom_vjp``: native forward and input-gradient,
patches kernel-gradient, at every derivative order).
"""
from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.models.conv import ConvImpl, conv3x3  # noqa: F401  (re-exported)


def _max_pool_by_reshape(x):
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2, :]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _pool_quarters(x):
    """A 2x2 window's four positions as strided slices (an odd last row/column dropped)."""
    _, h, w, _ = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2, :]
    return x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2]


def _max_pool_by_slices(x):
    top_left, top_right, bottom_left, bottom_right = _pool_quarters(x)
    return jnp.maximum(jnp.maximum(top_left, top_right), jnp.maximum(bottom_left, bottom_right))


@jax.custom_jvp
def max_pool_2x2(x):
    """2x2 max-pool with stride 2 ('VALID': an odd last row/column is dropped).

    The two formulations give the same values; each is used where XLA:CPU runs it faster
    (``benchmarks/results/max_pool_cpu.txt``). Undifferentiated (ANIL's body at test time, any
    inference) it is the maximum of four strided slices, an elementwise op: a reshape + max
    there becomes a library reduction that materialises the batch norm's broadcasts. Under
    differentiation (any order) it is the reshape + max, whose backward pass is cheaper than
    the slices' and than ``reduce_window``'s.
    """
    return _max_pool_by_slices(x)


@max_pool_2x2.defjvp
def _max_pool_2x2_jvp(primals, tangents):
    return jax.jvp(_max_pool_by_reshape, primals, tangents)


BN_PARAMS = ("scale-offset", "offset-only")  # the learned params of batch norm


def batch_moments(x):
    """Per-channel mean and (biased) variance of a batch ``(B, H, W, C)``."""
    mean = x.mean(axis=(0, 1, 2))
    return mean, jnp.square(x - mean).mean(axis=(0, 1, 2))


def batch_norm(x, scale, offset, *, mean=None, var=None, eps: float = 1e-5):
    """Batch norm; by default with the statistics of the current batch, as in the original MAML.

    There are no running statistics unless the caller passes ``mean`` and ``var`` (MAML++'s
    per-step running statistics); without them train and test use the batch at hand
    (transductive).
    """
    if mean is None or var is None:
        mean, var = batch_moments(x)
    # Folded into one per-channel scale and shift, the full-size work is a single multiply-add
    # whose reverse pass needs only ``x``, which the convolution's gradient keeps anyway: the
    # first Conv4-pool block 4-17% faster, the second up to 32% with XLA's convolution, and a
    # lower XLA memory estimate for every benchmarked meta-step (README, "Batch norm folded";
    # benchmarks/results/conv_block_cpu.txt). The cancellation in x*a - mean*a
    # costs about float32's epsilon times (1 + 2 |mean| / std) of the output's unit scale; at
    # initialisation on [0, 1] images the Conv4s' |mean| / std is at most 4.1 (conv1), and
    # ``tests/test_models.py`` bounds the error at a ratio of 10.
    a = scale * jax.lax.rsqrt(var + eps)
    return x * a + (offset - mean * a)


class ConvBlock(nn.Module):
    """3x3 conv -> batch norm -> ReLU -> (stride 2 | 2x2 max-pool) on a batch (B, H, W, C).

    Batch norm normalises with the batch's own statistics, unless the variables passed to
    ``apply`` hold a ``"bn_stats"`` collection (``{"mean", "var"}`` per block): then with those.
    With ``mutable=["moments"]`` the batch statistics used are returned (sown), which is how
    MAML++ accumulates running statistics; otherwise sowing costs nothing.

    ``bn="offset-only"`` learns only batch norm's offset (its scale is fixed at 1), as MAML's
    reference implementation does; ``"scale-offset"`` learns both.
    """

    features: int
    downsample: Literal["stride", "pool"] = "stride"
    conv_impl: ConvImpl = "patches"
    bn: Literal["scale-offset", "offset-only"] = "scale-offset"

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, c, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if self.bn not in BN_PARAMS:
            raise ValueError(f"unknown --bn {self.bn!r}; choose one of: {', '.join(BN_PARAMS)}")
        scale = (self.param("scale", nn.initializers.ones, (self.features,))
                 if self.bn == "scale-offset" else 1.0)
        offset = self.param("offset", nn.initializers.zeros, (self.features,))
        stride = 2 if self.downsample == "stride" else 1
        # The block is BN(z + bias) with z the convolution. The bias is folded into batch norm's
        # per-channel constant, (z + bias - mean) a + offset = z a + (offset - (mean - bias) a),
        # so no full-size pass adds it; with the batch's own statistics mean - bias is z's own
        # mean and the bias cancels exactly (its gradient is zero, as it is mathematically).
        z = conv3x3(x, kernel.astype(x.dtype), stride=stride, impl=self.conv_impl)
        z = z.astype(jnp.promote_types(z.dtype, bias.dtype))  # the dtype z + bias would have
        if self.has_variable("bn_stats", "mean"):
            mean = self.get_variable("bn_stats", "mean")  # statistics of z + bias
            var = self.get_variable("bn_stats", "var")
            centre = mean - bias
        else:
            centre, var = batch_moments(z)
            self.sow("moments", "mean", centre + bias,
                     reduce_fn=lambda _, v: v, init_fn=lambda: None)
            self.sow("moments", "var", var, reduce_fn=lambda _, v: v, init_fn=lambda: None)
        y = jax.nn.relu(batch_norm(z, scale, offset, mean=centre, var=var))
        if self.downsample == "pool":
            y = max_pool_2x2(y)
        return y
