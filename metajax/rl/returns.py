"""Discounted returns, GAE and masked averages over padded, time-major trajectories ``(T, B)``."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _reverse_scan(fn, init, xs):
    return jax.lax.scan(fn, init, xs, reverse=True)[1]


def discounted_returns(rewards: jax.Array, mask: jax.Array, *, gamma: float) -> jax.Array:
    """R_t = sum_{k >= t} gamma^(k - t) r_k m_k, per trajectory; shape ``(T, B)``."""
    def step(future, x):
        ret = x[0] * x[1] + gamma * future
        return ret, ret
    return _reverse_scan(step, jnp.zeros_like(rewards[0]), (rewards, mask))


def gae(rewards: jax.Array, values: jax.Array, mask: jax.Array, *, gamma: float,
        lam: float) -> jax.Array:
    """Generalised advantage estimates (Schulman et al. 2016), shape ``(T, B)``.

        delta_t = r_t + gamma V(s_{t+1}) m_{t+1} - V(s_t) m_t,   A_t = sum_k (gamma lam)^k delta_{t+k},

    with V = 0 past the horizon and past the end of each episode. lam = 1 gives R_t - V(s_t).
    """
    values = values * mask
    next_values = jnp.concatenate([values[1:], jnp.zeros_like(values[:1])])
    deltas = rewards + gamma * next_values - values

    def step(future, delta):
        adv = delta + gamma * lam * future
        return adv, adv
    return _reverse_scan(step, jnp.zeros_like(rewards[0]), deltas)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over trajectories of each trajectory's mean over its own steps.

        mean_b [ sum_t x[t, b] m[t, b] / sum_t m[t, b] ],

    the reference's weighting: short (early-terminated) episodes count as much as long ones.
    """
    lengths = jnp.maximum(mask.sum(axis=0), 1.0)
    return jnp.mean(jnp.sum(x * mask, axis=0) / lengths)


def normalize_advantages(advantages: jax.Array, mask: jax.Array, *,
                         eps: float = 1e-8) -> jax.Array:
    """(A - mean) / (std + eps) with :func:`masked_mean` moments; 0 at masked steps."""
    centred = (advantages - masked_mean(advantages, mask)) * mask
    std = jnp.sqrt(masked_mean(centred * centred, mask))
    return centred / (std + eps)
