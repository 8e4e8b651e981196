"""Meta-RL training and evaluation runs: what ``metajax train --env ...`` calls.

Same guarantees as the few-shot loop (:mod:`metajax.training.loop`): ``config.json``, an
append-only ``metrics.csv`` trimmed on resume, atomic msgpack checkpoints of the whole train
state (params, step, RNG key), so a resumed run equals an uninterrupted one.
"""
from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from metajax.rl.envs.registry import PHYSICS, make_env
from metajax.rl.meta_step import MetaRLSettings, evaluate_tasks, meta_iteration
from metajax.rl.policy import init_policy
from metajax.training import checkpoint
from metajax.training.config import Config
from metajax.training.loop import NonFiniteLossError
from metajax.training.metrics_log import MetricsLog
from metajax.training.state import TrainState

# Fixed task streams for evaluation, as in the few-shot loop.
_VAL_STREAM, _TEST_STREAM = 1, 2
DEFAULT_HIDDEN = 100  # the MAML paper's two hidden layers of 100 units


@functools.partial(jax.jit, static_argnums=(0, 1), donate_argnums=2)
def _train_step(env, settings: MetaRLSettings, state: TrainState):
    # Module level with static (hashable) env and settings: runs with equal settings share one
    # compiled step.
    rng, key = jax.random.split(state.rng)
    params, metrics = meta_iteration(env, settings, state.params, key=key)
    return state.replace(step=state.step + 1, params=params, rng=rng), metrics


_evaluate = jax.jit(evaluate_tasks, static_argnums=(0, 1), static_argnames="num_tasks")


class RLRun:
    """The environment, settings and compiled functions of one meta-RL run."""

    def __init__(self, cfg: Config):
        if cfg.env is None:
            raise ValueError("not a meta-RL config: set --env")
        if cfg.physics not in PHYSICS:
            raise ValueError(f"unknown --physics {cfg.physics!r}; choose one of: {', '.join(PHYSICS)}")
        for name in ("steps", "eval_tasks", "eval_batch", "log_every", "eval_every",
                     "checkpoint_every", "keep_checkpoints"):
            if getattr(cfg, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
        self.cfg = cfg
        self.settings = MetaRLSettings.from_config(cfg)
        self.env = make_env(cfg.env, physics=cfg.physics)
        self.hidden = (cfg.hidden or DEFAULT_HIDDEN,) * 2

    def initial_state(self) -> TrainState:
        init_key, train_key = jax.random.split(jax.random.PRNGKey(self.cfg.seed))
        params = init_policy(key=init_key, observation_size=self.env.observation_size,
                             action_size=self.env.action_size, hidden=self.hidden)
        # TRPO keeps no optimiser state; the empty dict keeps TrainState's layout.
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state={},
                          rng=train_key)

    def train_step(self, state: TrainState):
        """One meta-iteration: ``(state, metrics)``; ``state`` is donated."""
        return _train_step(self.env, self.settings, state)

    def evaluate(self, params, *, num_tasks: int, key) -> dict:
        """Mean undiscounted return over ``num_tasks`` tasks before and after adaptation, with
        95% confidence half-widths over tasks."""
        batch = min(self.cfg.eval_batch, num_tasks)
        chunks = [_evaluate(self.env, self.settings, params, key=jax.random.fold_in(key, i),
                            num_tasks=batch)
                  for i in range(math.ceil(num_tasks / batch))]
        if sum(float(c["nonfinite"]) for c in chunks):
            raise NonFiniteLossError("non-finite observations or rewards in the evaluation "
                                     "rollouts: the physics diverged or the policy produced NaN")
        summary = {}
        for name in ("return_pre", "return_post"):
            values = np.concatenate([np.asarray(c[name]) for c in chunks])[:num_tasks]
            summary[name] = float(values.mean())
            summary[name + "_ci95"] = float(1.96 * values.std(ddof=1) / math.sqrt(len(values))
                                            if len(values) > 1 else float("nan"))
        return summary


def train_rl(cfg: Config, workdir, *, resume: bool = False, progress: bool = True) -> TrainState:
    """Meta-trains a policy per ``cfg`` (``cfg.env`` set), writing to ``workdir``.

    Raises:
      NonFiniteLossError: a rollout produced NaN/inf; the last good checkpoint is kept.
      FileExistsError: ``workdir`` holds a run and ``resume`` is False.
      ValueError: an unknown environment, algorithm, or an impossible setting.
    """
    workdir = Path(workdir)
    run = RLRun(cfg)  # validates before anything is written
    workdir.mkdir(parents=True, exist_ok=True)
    existing = checkpoint.list_checkpoints(workdir)
    if existing and not resume:
        raise FileExistsError(f"{workdir} already holds a run (checkpoint at step "
                              f"{existing[-1][0]}); pass --resume to continue it or choose "
                              "another --workdir")
    cfg.save(workdir)
    state, start = checkpoint.restore_checkpoint(workdir, run.initial_state())
    start = start or 0
    log = MetricsLog(workdir, resume_step=start if resume else None)
    val_key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), _VAL_STREAM)
    last_saved = start if existing else None

    bar = tqdm(total=cfg.steps, initial=start, disable=not progress,
               desc=f"{cfg.algo} {cfg.env}", dynamic_ncols=True)
    tic, window_start = time.perf_counter(), start
    for step in range(start + 1, cfg.steps + 1):
        state, metrics = run.train_step(state)
        metrics = jax.device_get(metrics)
        if metrics["nonfinite"] or not math.isfinite(float(metrics["return_post"])):
            bar.close()
            kept = (f"the last good checkpoint (step {last_saved}) is kept in "
                    f"{checkpoint.checkpoint_dir(workdir)}" if last_saved is not None
                    else "no checkpoint had been written yet")
            raise NonFiniteLossError(
                f"non-finite values in the rollouts of meta-iteration {step} "
                f"({int(metrics['nonfinite'])} observations/rewards): the physics diverged or the "
                f"policy produced NaN; stopped without saving this state, {kept}.")
        bar.update(1)
        bar.set_postfix(pre=f"{metrics['return_pre']:.1f}", post=f"{metrics['return_post']:.1f}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            seconds = (time.perf_counter() - tic) / (step - window_start)
            log.write(step, {**{f"train/{k}": v for k, v in metrics.items() if k != "nonfinite"},
                             "time/step_s": seconds})
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val = run.evaluate(state.params, num_tasks=cfg.eval_tasks, key=val_key)
            log.write(step, {f"val/{k}": v for k, v in val.items() if not k.endswith("_ci95")})
            bar.write(f"iteration {step}: val return before adaptation {val['return_pre']:.2f}, "
                      f"after {val['return_post']:.2f}")
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint.save_checkpoint(workdir, state, step, keep=cfg.keep_checkpoints)
            last_saved = step
        if step % cfg.log_every == 0:
            tic, window_start = time.perf_counter(), step
    bar.close()
    return state


def evaluate_rl_run(workdir, *, tasks: int = 100, seed: int = 0) -> dict:
    """Returns before/after one adaptation step of the newest checkpoint on fresh test tasks."""
    cfg = Config.load(workdir)
    run = RLRun(cfg)
    state, step = checkpoint.restore_checkpoint(workdir, run.initial_state())
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {checkpoint.checkpoint_dir(workdir)}; train first "
                                "with `metajax train --env ... --workdir DIR`")
    key = jax.random.fold_in(jax.random.PRNGKey(seed), _TEST_STREAM)
    result = run.evaluate(state.params, num_tasks=tasks, key=key)
    result.update(tasks=tasks, checkpoint_step=step, algo=cfg.algo, env=cfg.env,
                  inner_steps=cfg.inner_steps, trajectories=cfg.trajectories)
    return result
