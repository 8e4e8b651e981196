"""Trust-region policy optimisation's update (Schulman et al. 2015) for any pytree of params.

    minimise_theta  L(theta)   s.t.   KL(theta) <= delta,

approximated around theta_0 by a natural-gradient step: solve F x = g by conjugate gradient
(F v = Hessian-vector product of the KL, plus damping), scale x to the trust-region boundary,

    step = x / sqrt(x^T F x / (2 delta)),

then backtrack theta_0 - ratio^i step until the loss decreases and the KL stays within delta.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree


def conjugate_gradient(matvec: Callable[[jax.Array], jax.Array], b: jax.Array, *, iters: int,
                       residual_tol: float = 1e-10) -> jax.Array:
    """Approximately solves A x = b for symmetric positive definite A given x -> A x.

    Runs at most ``iters`` iterations from x = 0; stops early once r^T r < ``residual_tol``.
    """
    def cond(carry):
        i, _, _, _, rdotr = carry
        return (i < iters) & (rdotr >= residual_tol)

    def body(carry):
        i, x, r, p, rdotr = carry
        z = matvec(p)
        alpha = rdotr / jnp.vdot(p, z)
        x = x + alpha * p
        r = r - alpha * z
        new_rdotr = jnp.vdot(r, r)
        p = r + (new_rdotr / rdotr) * p
        return i + 1, x, r, p, new_rdotr

    init = (jnp.zeros((), jnp.int32), jnp.zeros_like(b), b, b, jnp.vdot(b, b))
    return jax.lax.while_loop(cond, body, init)[1]


class TRPOInfo(NamedTuple):
    """What one TRPO update did (all scalars)."""

    loss_before: jax.Array
    loss_after: jax.Array
    kl: jax.Array            # KL at the accepted params (0 if no step was accepted)
    accepted: jax.Array      # bool: some backtracking step satisfied both conditions
    backtracks: jax.Array    # line-search steps evaluated


def trpo_update(loss_and_kl: Callable, params, *, max_kl: float, cg_iters: int,
                cg_damping: float, ls_steps: int, ls_ratio: float,
                loss_and_grad: tuple | None = None, fisher_vp: Callable | None = None):
    """One TRPO update of ``params``.

    Args:
      loss_and_kl: ``params -> (loss, kl)``, where kl is the divergence of the policy at params
        from the (fixed) policy at the current params, so kl = 0 and grad kl = 0 there.
      params: current params theta_0 (any pytree).
      max_kl: trust-region size delta.
      cg_iters: conjugate-gradient iterations.
      cg_damping: lambda in (F + lambda I) x = g.
      ls_steps: maximum number of backtracking steps.
      ls_ratio: step shrink factor per backtrack.
      loss_and_grad: ``(loss, grad)`` at ``params`` if the caller has them cheaper than
        ``jax.value_and_grad`` of ``loss_and_kl`` (grad a pytree like ``params``).
      fisher_vp: ``v -> H v`` with H the KL's Hessian at ``params`` (pytrees like ``params``);
        default: forward-over-reverse autodiff of ``loss_and_kl``'s KL.

    Returns:
      ``(new_params, TRPOInfo)``; ``new_params`` is ``params`` when no step was accepted.
    """
    flat, unravel = ravel_pytree(params)

    def loss_fn(x):
        return loss_and_kl(unravel(x))[0]

    def kl_fn(x):
        return loss_and_kl(unravel(x))[1]

    if loss_and_grad is None:
        loss_before, grad = jax.value_and_grad(loss_fn)(flat)
    else:
        loss_before, grad = loss_and_grad[0], ravel_pytree(loss_and_grad[1])[0]
    if fisher_vp is None:
        kl_grad = jax.grad(kl_fn)

        def hvp(v):
            # Forward-over-reverse Hessian-vector product of the KL at theta_0.
            return jax.jvp(kl_grad, (flat,), (v,))[1]
    else:
        def hvp(v):
            return ravel_pytree(fisher_vp(unravel(v)))[0]

    def damped_hvp(v):
        return hvp(v) + cg_damping * v

    direction = conjugate_gradient(damped_hvp, grad, iters=cg_iters)
    # 1/2 x^T F x; floored so a zero gradient gives a zero (not NaN) step.
    shs = 0.5 * jnp.vdot(direction, damped_hvp(direction))
    step = direction / jnp.sqrt(jnp.maximum(shs, 1e-30) / max_kl)

    def cond(carry):
        i, accepted = carry[0], carry[1]
        return (i < ls_steps) & ~accepted

    def body(carry):
        i, _, _, _ = carry
        candidate = flat - (ls_ratio ** i.astype(flat.dtype)) * step
        loss, kl = loss_and_kl(unravel(candidate))
        accepted = (loss < loss_before) & (kl < max_kl)
        return i + 1, accepted, loss, kl

    zero = jnp.zeros((), flat.dtype)
    n, accepted, loss, kl = jax.lax.while_loop(
        cond, body, (jnp.zeros((), jnp.int32), jnp.zeros((), bool), loss_before, zero))
    scale = jnp.where(accepted, ls_ratio ** (n - 1).astype(flat.dtype), 0.0)
    new_flat = flat - scale * step
    info = TRPOInfo(loss_before=loss_before, loss_after=jnp.where(accepted, loss, loss_before),
                    kl=jnp.where(accepted, kl, zero), accepted=accepted, backtracks=n)
    return unravel(new_flat), info
