"""The linear feature baseline (Duan et al. 2016): V(s_t) = phi(s_t, t) . w, fit by ridge regression.

    phi = [s m, s^2 m, t m, t^2 m, t^3 m, m],   t = step / 100,   m = mask,

    w = argmin_w ||Phi w - R||^2 + c ||w||^2 = (Phi^T Phi + c I)^{-1} Phi^T R,

fit on one task's batch of trajectories and used for that batch's advantages only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Ridge coefficients tried in turn: the first whose Cholesky factorisation succeeds is used
# (the reference raises c tenfold, up to five times, when the normal equations are singular).
RIDGE_COEFFS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def baseline_features(observations: jax.Array, mask: jax.Array) -> jax.Array:
    """phi of every step: ``(T, B, 2 S + 4)`` from observations ``(T, B, S)`` and mask ``(T, B)``."""
    horizon = observations.shape[0]
    m = mask[..., None]
    obs = observations * m
    t = jnp.arange(horizon, dtype=obs.dtype)[:, None, None] / 100.0 * m
    return jnp.concatenate([obs, obs * obs, t, t * t, t * t * t, m], axis=-1)


def fit_baseline(observations: jax.Array, returns: jax.Array, mask: jax.Array) -> jax.Array:
    """Ridge weights w of shape ``(2 S + 4,)`` regressing the returns on the features."""
    phi = baseline_features(observations, mask).reshape(-1, 2 * observations.shape[-1] + 4)
    gram = phi.T @ phi
    target = phi.T @ returns.reshape(-1)
    eye = jnp.eye(gram.shape[0], dtype=gram.dtype)

    def solve(coeff):
        chol = jnp.linalg.cholesky(gram + coeff * eye)
        return jax.scipy.linalg.cho_solve((chol, True), target)

    candidates = jax.vmap(solve)(jnp.asarray(RIDGE_COEFFS, gram.dtype))
    ok = jnp.all(jnp.isfinite(candidates), axis=1)
    # The first finite solution; if none is (all NaN), that NaN surfaces as a non-finite return.
    return candidates[jnp.argmax(ok)]


def predict_baseline(weights: jax.Array, observations: jax.Array, mask: jax.Array) -> jax.Array:
    """V(s_t) of every step, ``(T, B)``."""
    return baseline_features(observations, mask) @ weights
