"""One meta-iteration of MAML / ANIL with a TRPO outer step, compiled whole with ``jit``.

For a batch of tasks T_i and policy params theta (Finn et al. 2017, Algorithm 3):

  1. sample trajectories D_i with pi_theta, compute advantages (fitted baseline, GAE, normalised);
  2. adapt: theta'_i = theta - alpha grad_theta L_i(theta; D_i), with the policy-gradient loss

         L(theta; D) = - mean_b [ sum_t log pi_theta(a_t | s_t) A_t m_t / sum_t m_t ]

     (ANIL: only the head moves), via :func:`metajax.core.adapt`;
  3. sample trajectories D'_i with pi_theta'_i and their advantages;
  4. TRPO on the surrogate  mean_i - mean_b [ sum_t r_t(theta) A'_t m_t / len_b ],
     r_t = pi_{theta'_i(theta)}(a_t | s_t) / pi_old(a_t | s_t), under mean_i KL(pi_theta'_i || pi_old) <= delta.
     theta'_i(theta) is differentiated through the inner step (second order), in the gradient
     and in the KL's Hessian-vector products alike.

Rollouts are vmapped over tasks and trajectories and scanned over time (``rollout``).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from metajax.core.adapt import adapt
from metajax.core.partition import head_only_mask
from metajax.rl.baseline import fit_baseline, predict_baseline
from metajax.rl.envs.base import Env
from metajax.rl.policy import gaussian_kl, gaussian_log_prob, log_prob, policy_distribution
from metajax.rl.returns import discounted_returns, gae, masked_mean, normalize_advantages
from metajax.rl.rollout import Trajectories, episode_returns, rollout
from metajax.rl.trpo import trpo_update

ALGOS = ("maml", "anil")


@dataclasses.dataclass(frozen=True)
class MetaRLSettings:
    """The hyperparameters of a meta-iteration (static under ``jit``).

    Defaults are the protocol of MAML's RL experiments as pytorch-maml-rl runs them.
    """

    algo: str = "maml"          # maml (adapt everything) | anil (adapt the head only)
    meta_batch: int = 20        # tasks per meta-iteration
    trajectories: int = 20      # trajectories per task, before and after adaptation
    horizon: int = 100
    inner_lr: float = 0.1
    inner_steps: int = 1
    gamma: float = 0.99
    gae_lambda: float = 1.0
    max_kl: float = 1e-2
    cg_iters: int = 10
    cg_damping: float = 1e-5
    ls_steps: int = 15
    ls_ratio: float = 0.8
    first_order: bool = False   # treat the inner gradient as a constant (first-order MAML)

    def __post_init__(self):
        if self.algo not in ALGOS:
            raise ValueError(f"meta-RL supports --algo {' or '.join(ALGOS)}, got {self.algo!r}")
        for name in ("meta_batch", "trajectories", "horizon", "ls_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.inner_steps < 0:
            raise ValueError(f"--inner-steps must be >= 0, got {self.inner_steps}")
        if not 0 < self.ls_ratio < 1:
            raise ValueError(f"--ls-ratio must be in (0, 1), got {self.ls_ratio}")
        if self.max_kl <= 0:
            raise ValueError(f"--max-kl must be > 0, got {self.max_kl}")

    @classmethod
    def from_config(cls, cfg) -> "MetaRLSettings":
        """The settings named by the fields of a :class:`metajax.training.Config`."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)
                      if hasattr(cfg, f.name)})


def advantages(traj: Trajectories, *, gamma: float, lam: float) -> jax.Array:
    """Normalised GAE advantages of one task's batch, with a baseline fit on that batch."""
    returns = discounted_returns(traj.rewards, traj.mask, gamma=gamma)
    weights = fit_baseline(traj.observations, returns, traj.mask)
    values = predict_baseline(weights, traj.observations, traj.mask)
    return normalize_advantages(gae(traj.rewards, values, traj.mask, gamma=gamma, lam=lam),
                                traj.mask)


def reinforce_loss(params, batch) -> jax.Array:
    """The inner loss L(theta; D): minus the advantage-weighted log-likelihood (see module doc).

    Args:
      params: policy params.
      batch: ``(trajectories, advantages)`` of one task.
    """
    traj, adv = batch
    return -masked_mean(log_prob(params, traj.observations, traj.actions) * adv, traj.mask)


def adapt_policy(params, batch, settings: MetaRLSettings):
    """theta' after ``settings.inner_steps`` policy-gradient steps on ``batch`` (one task)."""
    mask = head_only_mask(params) if settings.algo == "anil" else None
    return adapt(params, reinforce_loss, batch, inner_lr=settings.inner_lr,
                 steps=settings.inner_steps, mask=mask, first_order=settings.first_order)


def sample_and_adapt(env: Env, params, tasks, *, key, settings: MetaRLSettings):
    """Steps 1-3 for a batch of tasks (leading axis of ``tasks``).

    Returns:
      ``(train, adapted, valid)``: ``train`` and ``valid`` are ``(trajectories, advantages)``
      before and after adaptation, ``adapted`` the per-task adapted params.
    """
    num_tasks = jax.tree_util.tree_leaves(tasks)[0].shape[0]
    train_key, valid_key = jax.random.split(key)
    sample = lambda p, task, k: rollout(env, p, task, key=k, num_trajectories=settings.trajectories,
                                        horizon=settings.horizon)
    process = jax.vmap(lambda t: advantages(t, gamma=settings.gamma, lam=settings.gae_lambda))

    train_traj = jax.vmap(sample, in_axes=(None, 0, 0))(
        params, tasks, jax.random.split(train_key, num_tasks))
    train = (train_traj, process(train_traj))
    adapted = jax.vmap(adapt_policy, in_axes=(None, 0, None))(params, train, settings)
    valid_traj = jax.vmap(sample)(adapted, tasks, jax.random.split(valid_key, num_tasks))
    return train, adapted, (valid_traj, process(valid_traj))


def surrogate_and_kl(settings: MetaRLSettings, params, *, train, valid, old_dist):
    """The TRPO objective and constraint of a task batch as functions of theta.

        loss(theta) = mean_i - masked_mean( pi_{theta'_i}(a | s) / pi_old(a | s) A' ),
        kl(theta) = mean_i masked_mean( KL(pi_{theta'_i}(. | s) || pi_old(. | s)) ),

    over the valid trajectories, with theta'_i = adapt(theta; train_i) (differentiable).

    Args:
      settings: the meta-iteration settings.
      params: theta.
      train, valid: per-task ``(trajectories, advantages)`` before and after adaptation.
      old_dist: per-task ``(mean, log_std)`` of pi_old on the valid observations.

    Returns:
      ``(loss, kl)``, scalars.
    """
    def task(train_batch, traj, adv, mean_old, log_std_old):
        mean, log_std = policy_distribution(adapt_policy(params, train_batch, settings),
                                            traj.observations)
        log_ratio = (gaussian_log_prob(mean, log_std, traj.actions)
                     - gaussian_log_prob(mean_old, log_std_old, traj.actions))
        loss = -masked_mean(jnp.exp(log_ratio) * adv, traj.mask)
        kl = masked_mean(gaussian_kl(mean, log_std, mean_old, log_std_old), traj.mask)
        return loss, kl

    losses, kls = jax.vmap(task)(train, *valid, *old_dist)
    return losses.mean(), kls.mean()


def outer_gradient_and_fisher(settings: MetaRLSettings, params, train, valid):
    """The TRPO surrogate's value and gradient at theta_0 and the KL's Hessian-vector product.

    With theta'_i(theta) the adapted params and J_i = d theta'_i / d theta (through the inner
    step, so J_i = I - alpha Hess L_i for MAML), at theta_0 the surrogate's gradient is
    mean_i J_i^T grad L'_i(theta'_i), and since the KL and its gradient vanish there its
    Hessian is exactly the Gauss-Newton form  mean_i J_i^T G_i^T M_i G_i J_i,  with G_i the
    Jacobian of the policy's (mean, log_std) on task i's valid observations and M_i the KL's
    curvature in those outputs (1 / sigma^2 per mean, 2 per log-std, times the masked-mean
    weights). J_i and G_i are linearised once and reused by every conjugate-gradient iteration:
    no third derivatives, and no recomputation of the forward passes.

    Args:
      settings: the meta-iteration settings.
      params: theta_0.
      train, valid: per-task ``(trajectories, advantages)`` before and after adaptation.

    Returns:
      ``(loss, grad, fisher_vp)`` with ``fisher_vp(v) = H_KL v`` on params-shaped pytrees.
    """
    valid_traj, valid_adv = valid
    num_tasks = valid_adv.shape[0]
    adapted, adapt_jvp = jax.linearize(
        lambda theta: jax.vmap(adapt_policy, in_axes=(None, 0, None))(theta, train, settings),
        params)
    adapt_vjp = jax.linear_transpose(adapt_jvp, params)
    (_, log_std), dist_jvp = jax.linearize(
        lambda p: jax.vmap(policy_distribution)(p, valid_traj.observations), adapted)
    dist_vjp = jax.linear_transpose(dist_jvp, adapted)

    # masked_mean(x) = sum_{t,b} w[t, b] x[t, b]; then the mean over tasks.
    mask = valid_traj.mask
    weights = mask / jnp.maximum(mask.sum(axis=1, keepdims=True), 1.0) / mask.shape[-1] / num_tasks
    mean_metric = weights[..., None] * jnp.exp(-2 * log_std)[:, None, None, :]
    log_std_metric = 2.0 * weights.sum(axis=(1, 2))[:, None]

    def fisher_vp(v):
        d_mean, d_log_std = dist_jvp(adapt_jvp(v))
        (d_adapted,) = dist_vjp((mean_metric * d_mean, log_std_metric * d_log_std))
        return adapt_vjp(d_adapted)[0]

    # At theta_0 the importance ratio is 1: the surrogate is -mean A', and its gradient in
    # theta'_i is the policy gradient on the valid trajectories.
    loss = -jax.vmap(masked_mean)(valid_adv, mask).mean()
    grad_adapted = jax.grad(lambda p: jax.vmap(reinforce_loss)(p, valid).mean())(adapted)
    return loss, adapt_vjp(grad_adapted)[0], fisher_vp


def _nonfinite(*trees) -> jax.Array:
    return sum(jnp.sum(~jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(trees))


def meta_iteration(env: Env, settings: MetaRLSettings, params, *, key):
    """One meta-iteration (steps 1-4). Returns ``(new_params, metrics)``."""
    task_key, sample_key = jax.random.split(key)
    tasks = jax.vmap(env.sample_task)(jax.random.split(task_key, settings.meta_batch))
    train, adapted, valid = sample_and_adapt(env, params, tasks, key=sample_key, settings=settings)
    valid_traj, valid_adv = valid
    old_mean, old_log_std = jax.lax.stop_gradient(
        jax.vmap(policy_distribution)(adapted, valid_traj.observations))

    loss_and_kl = functools.partial(surrogate_and_kl, settings, train=train, valid=valid,
                                    old_dist=(old_mean, old_log_std))
    loss, grad, fisher_vp = outer_gradient_and_fisher(settings, params, train, valid)
    new_params, info = trpo_update(loss_and_kl, params, max_kl=settings.max_kl,
                                   cg_iters=settings.cg_iters, cg_damping=settings.cg_damping,
                                   ls_steps=settings.ls_steps, ls_ratio=settings.ls_ratio,
                                   loss_and_grad=(loss, grad), fisher_vp=fisher_vp)
    metrics = {
        "return_pre": episode_returns(train[0]).mean(),
        "return_post": episode_returns(valid_traj).mean(),
        "surrogate_before": info.loss_before,
        "surrogate_after": info.loss_after,
        "kl": info.kl,
        "accepted": info.accepted.astype(jnp.float32),
        "backtracks": info.backtracks.astype(jnp.float32),
        "nonfinite": _nonfinite(train[0].observations, train[0].rewards,
                                valid_traj.observations, valid_traj.rewards).astype(jnp.float32),
    }
    return new_params, metrics


def evaluate_tasks(env: Env, settings: MetaRLSettings, params, *, key, num_tasks: int):
    """Undiscounted returns before and after adaptation on ``num_tasks`` tasks drawn from ``key``.

    Returns:
      ``{"return_pre": (num_tasks,), "return_post": (num_tasks,), "nonfinite": ()}``: each
      task's mean over its trajectories.
    """
    task_key, sample_key = jax.random.split(key)
    tasks = jax.vmap(env.sample_task)(jax.random.split(task_key, num_tasks))
    train, _, valid = sample_and_adapt(env, params, tasks, key=sample_key, settings=settings)
    return {"return_pre": episode_returns(train[0]).mean(axis=-1),
            "return_post": episode_returns(valid[0]).mean(axis=-1),
            "nonfinite": _nonfinite(train[0].rewards, valid[0].rewards)}
