"""Meta-RL environments: pure reset/step functions and a task distribution per family."""
from metajax.rl.envs.base import Env
from metajax.rl.envs.nav2d import make_nav2d
from metajax.rl.envs.registry import ENVS, PHYSICS, make_env

__all__ = ["ENVS", "Env", "PHYSICS", "make_env", "make_nav2d"]
