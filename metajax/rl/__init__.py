"""Meta-RL in pure JAX: MAML/ANIL with TRPO on 2D navigation and HalfCheetah-Dir/Vel."""
from metajax.rl.configs import rl_config
from metajax.rl.envs import ENVS, Env, make_env
from metajax.rl.meta_step import (MetaRLSettings, adapt_policy, evaluate_tasks, meta_iteration,
                                  reinforce_loss)
from metajax.rl.policy import init_policy, policy_distribution
from metajax.rl.rollout import Trajectories, rollout
from metajax.rl.trainer import evaluate_rl_run, train_rl
from metajax.rl.trpo import conjugate_gradient, trpo_update

__all__ = [
    "ENVS", "Env", "MetaRLSettings", "Trajectories", "adapt_policy", "conjugate_gradient",
    "evaluate_rl_run", "evaluate_tasks", "init_policy", "make_env", "meta_iteration",
    "policy_distribution", "reinforce_loss", "rl_config", "rollout", "train_rl", "trpo_update",
]
