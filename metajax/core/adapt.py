"""The inner loop: a few SGD steps on one task's support set, written as ``lax.scan`` over ``grad``.

Everything here handles ONE task; the training step vmaps over the task batch.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from metajax.checks import (InputError, check_key, check_scalar_loss, check_static_int, describe,
                            tree_path)
from metajax.core.partition import combine, partition

PyTree = Any
LossFn = Callable[[PyTree, Any], jax.Array]


def _lr_tree(inner_lr, params: PyTree, mask: PyTree | None, where: str = "inner_loop") -> PyTree:
    """Inner learning rates as a tree over the adapted leaves.

    A scalar is shared by every leaf; a tree with the structure of ``params`` gives one rate per
    leaf (or per element, Meta-SGD style), partitioned like ``params``.
    """
    if jax.tree_util.tree_structure(inner_lr) == jax.tree_util.tree_structure(params):
        def check(path, rate, p):
            rate_shape, shape = jnp.shape(rate), jnp.shape(p)
            try:
                ok = np.broadcast_shapes(rate_shape, shape) == tuple(shape)
            except ValueError:
                ok = False
            if not ok:
                raise InputError(
                    f"{where}: inner_lr{tree_path(path)} is {describe(rate)}, which does not "
                    f"broadcast to the param's shape {tuple(shape)}; give a scalar or an array of "
                    f"the param's shape per leaf")
        jax.tree_util.tree_map_with_path(check, inner_lr, params)
        return partition(inner_lr, mask)[0]
    if not (isinstance(inner_lr, (int, float)) or
            (hasattr(inner_lr, "shape") and hasattr(inner_lr, "dtype"))):
        raise InputError(
            f"{where}: inner_lr must be a scalar or a pytree with the structure of params; got "
            f"{describe(inner_lr)} of structure {jax.tree_util.tree_structure(inner_lr)}, params "
            f"have {jax.tree_util.tree_structure(params)}")
    if jnp.ndim(inner_lr) != 0:
        raise InputError(f"{where}: inner_lr must be a scalar or a pytree with the structure of "
                         f"params; got shape {jnp.shape(inner_lr)} ({describe(inner_lr)})")
    adapted = partition(params, mask)[0]
    return jax.tree_util.tree_map(lambda _: inner_lr, adapted)


def _check_adapted(adapted: PyTree, where: str) -> None:
    """The inner loop differentiates the adapted leaves: they must be floating point."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(adapted):
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and not jnp.issubdtype(dtype, jnp.inexact):
            raise InputError(
                f"{where}: params{tree_path(path)} is {describe(leaf)}; the inner loop "
                f"differentiates every adapted leaf, so it must be floating point (exclude it "
                f"with mask=..., or keep non-trainable values out of params)")


def _check_minibatches(support, where: str) -> None:
    leaves = jax.tree_util.tree_leaves_with_path(support)
    sizes = {tuple(getattr(leaf, "shape", ()))[:1] for _, leaf in leaves}
    if not leaves or len(sizes) != 1 or sizes == {()} or sizes == {(0,)}:
        shown = ", ".join(f"support{tree_path(p)} {describe(leaf)}" for p, leaf in leaves[:4])
        raise InputError(f"{where}: with minibatches=True every leaf of support needs the same "
                         f"leading minibatch axis of size >= 1, got {shown or describe(support)}")


def inner_loop(params: PyTree, loss_fn: LossFn, support, *, inner_lr, steps: int,
               mask: PyTree | None = None, first_order: bool = False, unroll: int | bool = 1,
               remat: bool = False, minibatches: bool = False, key=None):
    """Adapts ``params`` to one task and also returns the support loss seen at each step.

    theta_0 = params,  theta_{t+1} = theta_t - alpha * grad_theta L_support(theta_t),  t < steps,

    where only the leaves selected by ``mask`` move. With ``first_order=True`` the gradient in that
    update is wrapped in ``stop_gradient``, so d theta_T / d theta_0 = I (first-order MAML).

    Args:
      params: the model params (the meta-initialisation).
      loss_fn: ``loss_fn(params, support) -> scalar``.
      support: the support set, passed to ``loss_fn`` as is.
      inner_lr: alpha: a scalar, or a pytree like ``params`` (per-leaf rates).
      steps: number of inner SGD steps (static). 0 returns ``params`` unchanged.
      mask: pytree of bools like ``params`` (or a prefix); ``None`` adapts every leaf.
      first_order: treat inner gradients as constants.
      unroll: passed to ``lax.scan``. Unrolling lets XLA fuse across steps; on CPU rolled loops
        of convolution gradients are much slower (see the performance notes).
      remat: rematerialise each inner step (``jax.checkpoint``): the outer backward pass
        recomputes a step's activations instead of storing them, so the memory of a second-order
        meta-gradient stays nearly flat in ``steps`` at the price of about one more forward pass.
      minibatches: ``support`` is a stack of minibatches (every leaf has a leading minibatch
        axis of size M) and step t uses minibatch t mod M (Reptile's inner loop).
      key: an RNG key for a stochastic model (dropout): step t calls
        ``loss_fn(params, batch, key=fold_in(key, t))``. ``None``: ``loss_fn(params, batch)``.

    Returns:
      ``(adapted_params, losses)`` with ``losses[t] = L_support(theta_t)``, shape ``(steps,)``.
    """
    return _inner_loop(params, loss_fn, support, inner_lr=inner_lr, steps=steps, mask=mask,
                       first_order=first_order, unroll=unroll, remat=remat,
                       minibatches=minibatches, key=key, where="inner_loop")


def _inner_loop(params, loss_fn, support, *, inner_lr, steps, mask, first_order, unroll, remat,
                minibatches, key, where):
    # Static checks (shapes, dtypes, structures): they run while JAX traces, never at run time.
    steps = check_static_int(steps, "steps", where, why="the number of inner steps is a static "
                             "loop length")
    if not callable(loss_fn):
        raise InputError(f"{where}: loss_fn must be a function loss_fn(params, batch) -> scalar, "
                         f"got {describe(loss_fn)}")
    check_key(key, "key", where)
    if minibatches:
        _check_minibatches(support, where)
    adapted, frozen = partition(params, mask)
    _check_adapted(adapted, where)
    lrs = _lr_tree(inner_lr, params, mask, where)

    def support_loss(theta, batch, t):
        if key is None:
            loss = loss_fn(combine(theta, frozen), batch)
        else:
            loss = loss_fn(combine(theta, frozen), batch, key=jax.random.fold_in(key, t))
        check_scalar_loss(loss, f"{where}: loss_fn(params, support)")
        return loss

    def step(theta, t):
        batch = support
        if minibatches:
            count = jax.tree_util.tree_leaves(support)[0].shape[0]
            batch = jax.tree_util.tree_map(lambda a: a[t % count], support)
        loss, grads = jax.value_and_grad(support_loss)(theta, batch, t)
        if first_order:
            grads = jax.lax.stop_gradient(grads)
        theta = jax.tree_util.tree_map(lambda p, g, a: p - a * g, theta, grads, lrs)
        return theta, loss

    if remat:
        step = jax.checkpoint(step)
    adapted, losses = jax.lax.scan(step, adapted, jnp.arange(steps), unroll=unroll)
    return combine(adapted, frozen), losses


def adapt(params: PyTree, loss_fn: LossFn, support, *, inner_lr, steps: int,
          mask: PyTree | None = None, first_order: bool = False, unroll: int | bool = 1,
          remat: bool = False) -> PyTree:
    """Returns the params after ``steps`` inner SGD steps on ``loss_fn(params, support)``.

    See :func:`inner_loop` for the arguments; this drops the per-step losses.
    """
    return _inner_loop(params, loss_fn, support, inner_lr=inner_lr, steps=steps, mask=mask,
                       first_order=first_order, unroll=unroll, remat=remat, minibatches=False,
                       key=None, where="adapt")[0]


def meta_loss(params: PyTree, loss_fn: LossFn, task, *, inner_lr, steps: int,
              mask: PyTree | None = None, first_order: bool = False, unroll: int | bool = 1,
              remat: bool = False):
    """The MAML objective of one task: L_query(adapt(params, support)).

    ``jax.grad`` of this is the MAML meta-gradient: second order (it differentiates through the
    inner gradients) unless ``first_order=True``.

    Args:
      params: the meta-initialisation.
      loss_fn: ``loss_fn(params, batch) -> scalar``, used for support and query.
      task: ``(support, query)``.
      Others: as :func:`inner_loop`.
    """
    if not isinstance(task, (tuple, list)) or len(task) != 2:
        raise InputError(f"meta_loss: task must be a (support, query) pair, each passed to "
                         f"loss_fn as is; got {describe(task)}")
    support, query = task
    adapted = _inner_loop(params, loss_fn, support, inner_lr=inner_lr, steps=steps, mask=mask,
                          first_order=first_order, unroll=unroll, remat=remat, minibatches=False,
                          key=None, where="meta_loss")[0]
    loss = loss_fn(adapted, query)
    check_scalar_loss(loss, "meta_loss: loss_fn(params, query)")
    return loss
