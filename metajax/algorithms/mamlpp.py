"""MAML++ (Antoniou et al. 2019, "How to train your MAML"), each part behind its own switch.

With every switch off this is MAML (tested: same value and gradient). The parts:

- MSL (multi-step loss): the meta-objective is sum_i w_i(t) L_Q(theta_i), i = 1..S, the query loss
  after every inner step, with importance weights w(t) annealed from uniform to "last step only"
  over ``msl_anneal_steps`` outer steps (t is the outer step).
- BNWB (per-step batch-norm weights): batch norm's scale and offset are meta-learned per parameter
  state theta_0..theta_S instead of shared; they are not adapted in the inner loop.
- BNRS (per-step running statistics): per-state running means and variances, updated from the
  training batches' statistics as exponential moving averages. At test time the query examples
  are normalised with the running statistics of the final state instead of the query batch's, so
  a query prediction depends only on the example itself and the adapted weights, not on the other
  query examples (``test_stats="batch"`` evaluates transductively instead, with the query batch's
  statistics, as the reference implementation does: `metajax eval --bn-stats batch`). The inner
  loop normalises the support set with its own statistics in training
  and at test time alike (as the reference implementation does throughout): normalising it with
  running statistics changes the inner gradients the learned rates were trained for, and was
  measured to diverge (Omniglot 20-way: loss 247 after two test-time steps).
- LSLR (learned per-layer per-step rates): one inner learning rate per parameter tensor per inner
  step, meta-learned; negative values are allowed.
- DA (derivative-order annealing): first order for the first ``da_steps`` outer steps, then second
  order. It is a training-loop concern: the loop builds this learner twice (``first_order`` False
  and True) and switches between the two compiled steps, so nothing is retraced.
- CA (cosine annealing of the meta learning rate) is an optax schedule of the outer optimiser
  (``Config.meta_lr_schedule = "cosine"``), available to every algorithm.

Forward passes with theta_i use batch-norm set i (i = 0..S): the support pass of inner step i and
the query passes after i steps. Running statistics of set i are estimated from the batches seen
with theta_i in training (the support batch for i < S, the query batch for i = S). Support and
query are always forwarded separately, so query examples never enter the statistics that support
predictions (and thus the adapted weights) are computed with.

Meta-parameters: ``{"params": theta (without BN scale/offset under BNWB), "lslr": per-tensor rates
of shape (S,), "bn": per-state scale/offset of shape (S+1, C), "bn_stats": per-state running
mean/var of shape (S+1, C)}``, each present only when its part is on. Test-time adaptation with
more than S steps reuses the last step's rate and the last set of batch norm.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from metajax.algorithms.base import MetaLearner, task_keys
from metajax.algorithms.objectives import Objective, task_metrics
from metajax.core.partition import combine, partition
from metajax.models.functional import as_model

_BN_LEAVES = ("scale", "offset")


def msl_weights(step, num_steps: int, anneal_steps: int, *, min_nonfinal: float | None = None):
    """Importance of the query loss after each inner step, at outer step ``step``.

    Uniform at step 0; each non-final weight decays linearly to ``min_nonfinal`` (default
    0.03 / S, as in the reference implementation) at ``anneal_steps``, and the last step takes
    the rest, so the weights always sum to one.
    """
    if num_steps == 1:
        return jnp.ones((1,))
    floor = 0.03 / num_steps if min_nonfinal is None else min_nonfinal
    progress = jnp.clip(step / max(anneal_steps, 1), 0.0, 1.0)
    nonfinal = jnp.maximum((1.0 - progress) / num_steps, floor)
    weights = jnp.full((num_steps - 1,), nonfinal)
    return jnp.concatenate([weights, 1.0 - weights.sum(keepdims=True)])


def bn_leaf_mask(params):
    """True at every batch-norm scale/offset leaf of the model params."""
    def is_bn(path, _):
        return getattr(path[-1], "key", None) in _BN_LEAVES
    return jax.tree_util.tree_map_with_path(is_bn, params)


def _has_batch_norm(params) -> bool:
    return any(jax.tree_util.tree_leaves(bn_leaf_mask(params)))


def _initial_stats(params):
    """Running statistics (mean 0, variance 1) for every batch-norm layer, in the structure of
    the ``moments`` the model sows: one ``{"mean", "var"}`` per block holding a ``scale``."""
    if not isinstance(params, dict):
        return None
    if "scale" in params and "offset" in params:
        return {"mean": jnp.zeros_like(params["scale"]), "var": jnp.ones_like(params["scale"])}
    found = {k: _initial_stats(v) for k, v in params.items()}
    return {k: v for k, v in found.items() if v is not None} or None


def mamlpp(model, objective: Objective, *, inner_lr: float, inner_steps: int,
           msl: bool = False, msl_anneal_steps: int = 0, bnwb: bool = False,
           bnrs: bool = False, lslr: bool = False, first_order: bool = False,
           bn_momentum: float = 0.1, unroll: int | bool = True,
           remat: bool = False, test_stats: str = "running") -> MetaLearner:
    """MAML++ with the parts selected by the switches (all off: MAML).

    Args:
      model: a Flax module; BNWB/BNRS need metajax's batch norm (``Conv4``'s ``ConvBlock``: its
        ``scale``/``offset`` params and sown ``moments``); with them off any module works,
        stock ``nn.BatchNorm`` and ``nn.Dropout`` included (as in ``metajax.maml``).
      objective: ``classification()`` or ``regression()``.
      inner_lr: the inner rate (LSLR: every learned rate's start).
      inner_steps: S, inner steps in meta-training; sizes the per-step parameters.
      msl, msl_anneal_steps: multi-step loss and its annealing length in outer steps.
      bnwb, bnrs: per-step batch-norm weights / running statistics.
      lslr: learned per-layer per-step inner rates.
      first_order: drop second-order terms (DA's first phase).
      bn_momentum: m of the running statistics' update stats <- (1 - m) stats + m batch_stats.
      unroll: ``lax.scan`` unrolling of the inner loop.
      remat: recompute each inner step in the outer backward pass (``jax.checkpoint``).
      test_stats: under BNRS, what normalises the query examples at test time: ``"running"``
        (the final state's running statistics; each prediction depends on its example alone) or
        ``"batch"`` (the query batch's own statistics: transductive, as the reference
        implementation and every non-BNRS model here evaluate).

    Returns:
      A ``MetaLearner`` whose ``task_grad`` takes the outer step (for MSL's annealing) and whose
      ``outer`` updates the running statistics by their moving average instead of the optimiser.
    """
    if inner_steps < 1:
        raise ValueError(f"mamlpp needs --inner-steps >= 1, got {inner_steps}")
    if test_stats not in ("running", "batch"):
        raise ValueError(f"unknown test statistics {test_stats!r}; use 'running' or 'batch'")
    num_sets = inner_steps + 1  # batch-norm sets: one per parameter state theta_0..theta_S
    functional = as_model(model)
    module = functional.module

    def init(params):
        if (bnwb or bnrs) and _initial_stats(params) is None:
            raise ValueError("--bnwb/--bnrs need metajax's batch norm (ConvBlock: conv4, "
                             "conv4-pool); this model has none (stock nn.BatchNorm keeps its own "
                             "running averages). Turn them off with --bnwb false --bnrs false")
        bn, rest = partition(params, bn_leaf_mask(params)) if bnwb else (None, params)
        meta = {"params": rest}
        if bnwb:
            meta["bn"] = jax.tree_util.tree_map(
                lambda p: jnp.broadcast_to(p, (num_sets, *p.shape)), bn)
        if lslr:
            meta["lslr"] = jax.tree_util.tree_map(
                lambda p: jnp.full((inner_steps,), inner_lr, p.dtype), rest)
        if bnrs:
            meta["bn_stats"] = jax.tree_util.tree_map(
                lambda s: jnp.broadcast_to(s, (num_sets, *s.shape)), _initial_stats(params))
        return meta

    def model_params(meta, theta, i):
        """The model params for a forward pass with adapted weights ``theta`` at state ``i``."""
        if not bnwb:
            return theta
        index = jnp.minimum(i, num_sets - 1)
        return combine(theta, jax.tree_util.tree_map(lambda b: b[index], meta["bn"]))

    def forward(meta, theta, i, x, running: bool, state, key, train):
        """``(output, sown batch moments (BNRS), model state after the pass)``."""
        params = model_params(meta, theta, i)
        if running:
            index = jnp.minimum(i, num_sets - 1)
            stats = jax.tree_util.tree_map(lambda s: s[index], meta["bn_stats"])
            return module.apply({"params": params, "bn_stats": stats}, x), None, state
        if bnrs:
            out, aux = module.apply({"params": params}, x, mutable=["moments"])
            return out, aux.get("moments"), state
        out, new_state = functional.apply(params, x, state=state, key=key, train=train)
        return out, None, new_state

    def rate(meta, i):
        if not lslr:
            return jax.tree_util.tree_map(lambda _: inner_lr, meta["params"])
        index = jnp.minimum(i, inner_steps - 1)
        return jax.tree_util.tree_map(lambda r: r[index], meta["lslr"])

    def run_task(meta, task, steps, fo, running, weights, key, state, train):
        """Adapts on the support set; returns (objective, (metrics, batch statistics per state,
        model state))."""
        (xs, ys), (xq, yq) = task
        inner_key, query_key = task_keys(key)
        fold = lambda k, i: None if k is None else jax.random.fold_in(k, i)

        def support_loss(theta, i):
            # The support set is normalised with its own statistics, in training and at test
            # time alike: the inner loop's gradients (and the rates learned for them) stay those
            # of batch norm; see the module docstring.
            out, stats, _ = forward(meta, theta, i, xs, False, state, fold(inner_key, i), train)
            return objective.loss(out, ys), stats

        def step(theta, i):
            (loss, stats), grads = jax.value_and_grad(support_loss, has_aux=True)(theta, i)
            if fo:
                grads = jax.lax.stop_gradient(grads)
            theta = jax.tree_util.tree_map(lambda p, g, a: p - a * g, theta, grads,
                                           rate(meta, i))
            outputs = {"loss": loss}
            if bnrs and not running:  # only training updates the running statistics
                outputs["stats"] = stats
            if weights is not None:  # MSL: the query loss of theta_{i+1}
                out_q, _, _ = forward(meta, theta, i + 1, xq, running, state,
                                      fold(query_key, i + 1), train)
                outputs["query_loss"] = objective.loss(out_q, yq)
            return theta, outputs

        if remat:
            step = jax.checkpoint(step)
        theta, per_step = jax.lax.scan(step, meta["params"], jnp.arange(steps), unroll=unroll)
        pred, final_stats, new_state = forward(meta, theta, steps, xq, running, state,
                                               fold(query_key, 0), train)
        loss = objective.loss(pred, yq)
        total = loss if weights is None else jnp.dot(weights, per_step["query_loss"])
        metrics = task_metrics(objective, pred, yq, loss, per_step["loss"])
        if weights is not None:
            metrics["outer/msl_loss"] = total
        stats = None
        if not running and bnrs:
            stats = jax.tree_util.tree_map(lambda s, f: jnp.concatenate([s, f[None]]),
                                           per_step["stats"], final_stats)
        return total, (metrics, stats, new_state)

    def task_grad(meta, task, step=0, *, key=None, state=None):
        weights = msl_weights(step, inner_steps, msl_anneal_steps) if msl else None
        grads, (metrics, stats, new_state) = jax.grad(run_task, has_aux=True)(
            meta, task, inner_steps, first_order, False, weights, key, state, True)
        if bnrs:
            # A pseudo-gradient whose SGD step with rate m (see ``outer``) is the moving average
            # stats <- stats - m (stats - batch_stats).
            grads["bn_stats"] = jax.tree_util.tree_map(lambda s, b: s - b, meta["bn_stats"],
                                                       jax.lax.stop_gradient(stats))
        return grads, metrics, new_state

    def evaluate(meta, task, steps, *, key=None, state=None):
        del key
        meta = jax.lax.stop_gradient(meta)
        return run_task(meta, task, steps, True, bnrs and test_stats == "running", None, None,
                        state, False)[1][0]

    def adapt(meta, support, steps, *, key=None, state=None):
        del key
        xs, ys = support

        def loss(theta, i):
            return objective.loss(forward(meta, theta, i, xs, False, state, None, False)[0], ys)

        def step(theta, i):
            grads = jax.grad(loss)(theta, i)
            return jax.tree_util.tree_map(lambda p, g, a: p - a * g, theta, grads,
                                          rate(meta, i)), None

        theta = jax.lax.scan(step, meta["params"], jnp.arange(steps), unroll=unroll)[0]
        return model_params(meta, theta, steps)

    def params_of(meta):
        """Model params: theta with the batch-norm weights of state 0 (BNWB)."""
        return model_params(meta, meta["params"], 0)

    def outer(optimizer):
        if not bnrs:
            return optimizer
        labels = lambda meta: {k: "stats" if k == "bn_stats" else "meta" for k in meta}
        return optax.multi_transform({"meta": optimizer, "stats": optax.sgd(bn_momentum)}, labels)

    return MetaLearner(init=init, task_grad=task_grad, adapt=adapt, evaluate=evaluate,
                       params_of=params_of, outer=outer)
