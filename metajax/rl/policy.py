"""The Gaussian MLP policy of MAML's RL experiments, as pure functions on a params dict.

    mu(s) = W_out tanh(... tanh(W_1 s + b_1) ...) + b_out,    pi(a | s) = N(a; mu(s), diag(sigma^2)),

with a learned state-independent ``log sigma`` that starts at 0 (sigma = 1). Params are
``{"body": {"layer1", "layer2", ...}, "head": {"mean": {...}, "log_std": ...}}``, so ANIL's
``head_only_mask`` adapts the output layer and the log-std (the whole output distribution) and
leaves the hidden layers to the outer loop.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

# sigma = exp(log_std) is floored here, as the reference does, so log-probs stay finite.
MIN_LOG_STD = math.log(1e-6)


def _dense(key, fan_in: int, fan_out: int, dtype) -> dict:
    # Glorot-uniform weights and zero biases (the reference's initialisation).
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    kernel = jax.random.uniform(key, (fan_in, fan_out), dtype, -limit, limit)
    return {"kernel": kernel, "bias": jnp.zeros((fan_out,), dtype)}


def init_policy(*, key, observation_size: int, action_size: int,
                hidden: Sequence[int] = (100, 100), dtype=jnp.float32) -> dict:
    """Initial policy params.

    Args:
      key: PRNG key.
      observation_size: length of an observation vector.
      action_size: length of an action vector.
      hidden: widths of the tanh hidden layers.
      dtype: parameter dtype.

    Returns:
      ``{"body": {"layer1": {"kernel", "bias"}, ...}, "head": {"mean": {...}, "log_std": (A,)}}``.
    """
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden layer widths must be >= 1, got {tuple(hidden)}")
    widths = [observation_size, *hidden]
    keys = jax.random.split(key, len(hidden) + 1)
    body = {f"layer{i + 1}": _dense(keys[i], widths[i], widths[i + 1], dtype)
            for i in range(len(hidden))}
    head = {"mean": _dense(keys[-1], widths[-1], action_size, dtype),
            "log_std": jnp.zeros((action_size,), dtype)}
    return {"body": body, "head": head}


def policy_distribution(params: dict, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(mean, log_std)`` of pi(. | s) for observations of shape ``(..., S)``.

    Returns:
      ``mean`` of shape ``(..., A)`` and ``log_std`` of shape ``(A,)`` (floored at log 1e-6).
    """
    x = observations
    for name in sorted(params["body"], key=lambda n: int(n.removeprefix("layer"))):
        layer = params["body"][name]
        x = jnp.tanh(x @ layer["kernel"] + layer["bias"])
    head = params["head"]
    mean = x @ head["mean"]["kernel"] + head["mean"]["bias"]
    return mean, jnp.maximum(head["log_std"], MIN_LOG_STD)


def gaussian_log_prob(mean, log_std, actions) -> jax.Array:
    """log N(a; mu, diag(sigma^2)), summed over the last (action) axis.

    log pi(a | s) = -sum_i [ (a_i - mu_i)^2 / (2 sigma_i^2) + log sigma_i + log(2 pi) / 2 ].
    """
    z = (actions - mean) * jnp.exp(-log_std)
    return -jnp.sum(0.5 * z * z + log_std + 0.5 * math.log(2 * math.pi), axis=-1)


def gaussian_kl(mean_p, log_std_p, mean_q, log_std_q) -> jax.Array:
    """KL(p || q) of two diagonal Gaussians, summed over the last axis.

    KL = sum_i [ log(sigma_q,i / sigma_p,i) + (sigma_p,i^2 + (mu_p,i - mu_q,i)^2) / (2 sigma_q,i^2) - 1/2 ].
    """
    var_ratio = jnp.exp(2 * (log_std_p - log_std_q))
    mean_term = jnp.square((mean_p - mean_q) * jnp.exp(-log_std_q))
    return jnp.sum(log_std_q - log_std_p + 0.5 * (var_ratio + mean_term) - 0.5, axis=-1)


def log_prob(params: dict, observations, actions) -> jax.Array:
    """log pi_params(a | s) for matching leading shapes of observations and actions."""
    mean, log_std = policy_distribution(params, observations)
    return gaussian_log_prob(mean, log_std, actions)


def sample_actions(params: dict, observations, *, key) -> jax.Array:
    """a = mu(s) + sigma * eps, eps ~ N(0, I); no gradient flows into the sample."""
    mean, log_std = policy_distribution(jax.lax.stop_gradient(params), observations)
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
