"""The meta-RL protocol of MAML's RL experiments as a :class:`metajax.training.Config` per env.

``metajax train --env E`` starts from ``rl_config(E)`` (unless ``--config`` names another), then
applies the other flags.
"""
from __future__ import annotations

from metajax.rl.envs.registry import ENVS
from metajax.training.config import Config


def rl_config(env: str) -> Config:
    """pytorch-maml-rl's settings for ``env``: 1 inner step of lr 0.1 on 20 trajectories per task,
    horizon 100, gamma 0.99, GAE lambda 1, TRPO (max KL 0.01, 10 CG iterations, damping 1e-5,
    15 backtracks of 0.8), a 2 x 64 tanh policy, 500 meta-iterations; 20 tasks per meta-batch
    for 2D navigation, 40 for HalfCheetah."""
    if env not in ENVS:
        raise ValueError(f"unknown --env {env!r}; choose one of: {', '.join(ENVS)}")
    cfg = Config(env=env, algo="maml", hidden=64, inner_lr=0.1, inner_steps=1, meta_batch=20,
                 steps=500, log_every=1, eval_every=25, eval_tasks=100, eval_batch=50,
                 checkpoint_every=10)
    if env.startswith("halfcheetah"):
        # A meta-iteration takes seconds to minutes here: checkpoint every one, evaluate rarely.
        cfg = cfg.replace(meta_batch=40, eval_every=25, eval_tasks=40, eval_batch=40,
                          checkpoint_every=1)
    return cfg
