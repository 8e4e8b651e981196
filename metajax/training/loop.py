"""``train_and_evaluate(config, workdir)`` and ``evaluate_run(workdir)``: what the CLI calls."""
from __future__ import annotations

import functools
import math
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from metajax.algorithms.nil import nil
from metajax.algorithms.registry import make_algorithm
from metajax.core.partition import freeze_mask
from metajax.models.registry import init_params
from metajax.training import checkpoint
from metajax.training.config import Config
from metajax.training.metrics_log import MetricsLog
from metajax.training.sharding import replicate, task_mesh
from metajax.training.state import TrainState, create_train_state
from metajax.training.steps import make_eval_step, make_meta_step
from metajax.training.tasks import make_task_source

# Fixed streams of evaluation tasks, so every run and checkpoint is scored on the same tasks.
_VAL_STREAM, _TEST_STREAM = 1, 2


class NonFiniteLossError(RuntimeError):
    """The meta-loss became NaN or infinite; training stopped without saving the bad state."""


class _Run:
    """The pieces of a run shared by training and evaluation."""

    def __init__(self, cfg: Config):
        self.cfg = cfg.validate()
        self.source = make_task_source(cfg)
        self.learner = self.make_learner()
        self.optimizer = self.learner.outer(_outer_optimizer(cfg))
        self._eval_steps = {}  # (learner, inner_steps) -> jitted step, so validation compiles once

    def make_learner(self, **changes):
        """The run's algorithm; ``changes`` override its options (e.g. ``first_order=True``)."""
        cfg = self.cfg
        return make_algorithm(cfg.algo, self.source.model, self.source.objective,
                              inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps,
                              unroll=cfg.unroll, **{**cfg.algorithm_options(), **changes})

    def initial_state(self) -> TrainState:
        init_key, train_key = jax.random.split(jax.random.PRNGKey(self.cfg.seed))
        params = init_params(self.source.model, init_key, self.source.sample_input)
        return create_train_state(self.learner, self.optimizer, params, train_key)

    def restore(self, workdir) -> tuple[TrainState, int]:
        """The newest checkpoint of ``workdir`` and its step; FileNotFoundError if it has none."""
        state, step = checkpoint.restore_checkpoint(workdir, self.initial_state())
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {checkpoint.checkpoint_dir(workdir)}; "
                                    "train first with `metajax train --workdir DIR`")
        return state, step

    def evaluate(self, params, split: str, num_tasks: int, inner_steps: int, key,
                 batch: int | None = None, learner=None) -> dict:
        """Mean and 95% confidence half-width of each metric over ``num_tasks`` tasks of ``split``.

        ``learner`` replaces the run's algorithm at test time (e.g. NIL, or frozen layers).
        """
        batch = min(batch or self.cfg.eval_batch, num_tasks)
        learner = learner or self.learner
        if (learner, inner_steps) not in self._eval_steps:
            self._eval_steps[learner, inner_steps] = make_eval_step(
                learner, self.source.sample, inner_steps, task_chunk=self.cfg.task_chunk)
        eval_step = self._eval_steps[learner, inner_steps]
        data = self.source.splits[split]
        # Pad the last chunk to a full batch so one compiled shape serves every chunk.
        keys = jax.vmap(functools.partial(jax.random.fold_in, key))(
            jnp.arange(math.ceil(num_tasks / batch) * batch))
        chunks = [eval_step(params, data, keys[i:i + batch]) for i in range(0, len(keys), batch)]
        per_task = {k: np.concatenate([np.asarray(c[k]) for c in chunks])[:num_tasks]
                    for k in chunks[0]}
        summary = {}
        for name, values in per_task.items():
            summary[name] = float(values.mean())
            summary[name + "_ci95"] = float(1.96 * values.std(ddof=1) / math.sqrt(len(values))
                                            if len(values) > 1 else float("nan"))
        return summary


def train_and_evaluate(cfg: Config, workdir, *, resume: bool = False,
                       progress: bool = True) -> TrainState:
    """Meta-trains per ``cfg``, writing config, metrics and checkpoints to ``workdir``.

    With ``resume=True`` training continues from the newest checkpoint in ``workdir``; since the
    RNG key is part of the checkpointed state, the result equals an uninterrupted run's.

    Raises:
      NonFiniteLossError: the meta-loss became NaN/inf. The last good checkpoint is kept.
      FileExistsError: ``workdir`` holds a run and ``resume`` is False.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    existing = checkpoint.list_checkpoints(workdir)
    if existing and not resume:
        raise FileExistsError(f"{workdir} already holds a run (checkpoint at step "
                              f"{existing[-1][0]}); pass --resume to continue it or choose "
                              "another --workdir")
    run = _Run(cfg)
    cfg.save(workdir)
    state, start = checkpoint.restore_checkpoint(workdir, run.initial_state())
    start = start or 0
    log = MetricsLog(workdir, resume_step=start if resume else None)
    mesh = task_mesh() if cfg.shard_tasks and jax.device_count() > 1 else None
    if mesh is not None and cfg.meta_batch % mesh.size:
        warnings.warn(f"--meta-batch {cfg.meta_batch} does not split over {mesh.size} devices; "
                      f"running on one device (use a multiple of {mesh.size} to shard tasks)")
        mesh = None
    if mesh is not None:
        state = replicate(state, mesh)
    meta_step = make_meta_step(run.learner, run.optimizer, run.source.sample, cfg.meta_batch,
                               mesh=mesh, task_chunk=cfg.task_chunk)
    # MAML++'s derivative-order annealing: a second compiled step, first order, for the first
    # da_steps steps; switching between two compiled functions retraces nothing.
    first_order_step = (make_meta_step(run.make_learner(first_order=True), run.optimizer,
                                       run.source.sample, cfg.meta_batch, mesh=mesh,
                                       task_chunk=cfg.task_chunk)
                        if cfg.da_steps > start else None)
    train_data = run.source.splits["train"]
    val_key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), _VAL_STREAM)
    last_saved = start if existing else None

    bar = tqdm(total=cfg.steps, initial=start, disable=not progress, desc=f"{cfg.algo}",
               dynamic_ncols=True)
    tic, window_start = time.perf_counter(), start
    for step in range(start + 1, cfg.steps + 1):
        step_fn = first_order_step if step <= cfg.da_steps else meta_step
        state, metrics = step_fn(state, train_data)
        loss = float(metrics["outer/loss"])
        if not math.isfinite(loss):
            bar.close()
            kept = (f"the last good checkpoint (step {last_saved}) is kept in "
                    f"{checkpoint.checkpoint_dir(workdir)}" if last_saved is not None
                    else "no checkpoint had been written yet")
            raise NonFiniteLossError(
                f"meta-loss is {loss} at step {step}; stopped without saving this state, {kept}. "
                "Lower --meta-lr or --inner-lr (or resume with --resume after changing them).")
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            metrics = jax.device_get(metrics)
            # Training time per step since the last log; validation and checkpoints excluded.
            seconds = (time.perf_counter() - tic) / (step - window_start)
            log.write(step, {**{f"train/{k}": v for k, v in metrics.items()}, "time/step_s": seconds})
            bar.set_postfix({k.split("/")[-1]: f"{float(v):.3f}" for k, v in metrics.items()
                             if k.startswith("outer/") and not k.endswith("norm")})
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val = run.evaluate(state.params, "val", cfg.eval_tasks, cfg.eval_inner_steps, val_key)
            log.write(step, {f"val/{k}": v for k, v in val.items() if not k.endswith("_ci95")})
            bar.write(f"step {step}: " + ", ".join(f"val/{k}={v:.4f}" for k, v in val.items()
                                                   if not k.endswith("_ci95")))
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint.save_checkpoint(workdir, state, step, keep=cfg.keep_checkpoints)
            last_saved = step
        if step % cfg.log_every == 0:
            tic, window_start = time.perf_counter(), step
    bar.close()
    return state


def evaluate_run(workdir, *, tasks: int = 600, inner_steps: int | None = None,
                 split: str = "test", seed: int = 0, batch: int | None = None,
                 head: str = "learned", freeze=(), bn_stats: str | None = None,
                 **overrides) -> dict:
    """Scores the newest checkpoint of a run on ``tasks`` tasks of ``split``.

    Args:
      workdir: a run directory written by :func:`train_and_evaluate`.
      tasks: number of test tasks.
      inner_steps: test-time adaptation steps (default: the run's ``eval_inner_steps``).
      split: ``test`` or ``val``.
      seed: selects the stream of test tasks (the same seed gives the same tasks).
      head: ``"learned"`` (the trained head, adapted) or ``"nil"`` (no head, no inner loop:
        cosine-similarity-weighted support labels).
      freeze: body layers not to adapt at test time: 1-based indices (``"1"`` is the first block)
        or paths such as ``"body/conv2"``.
      bn_stats: MAML++ with BNRS: ``"running"`` (its default) or ``"batch"`` statistics for the
        test queries (see ``metajax.algorithms.mamlpp``).
      **overrides: config fields to change, e.g. ``data_dir``.

    Returns:
      A dict with ``accuracy`` (classification) or ``mse`` (regression), ``ci95`` (half-width of
      its 95% confidence interval), ``loss``, and what was evaluated.
    """
    cfg = Config.load(workdir).replace(**{k: v for k, v in overrides.items() if v is not None})
    if split not in ("val", "test"):
        raise ValueError(f"unknown split {split!r}; use 'test' or 'val'")
    run = _Run(cfg)
    state, step = run.restore(workdir)
    steps = cfg.eval_inner_steps if inner_steps is None else inner_steps
    learner, changes = run.learner, {}
    if bn_stats is not None:
        if not (cfg.algo == "mamlpp" and cfg.bnrs):
            raise ValueError("--bn-stats applies to MAML++ runs trained with --bnrs true; this "
                             f"run is {cfg.algo} without per-step running statistics")
        changes["test_stats"] = bn_stats
    params = learner.params_of(state.params)
    frozen = [_layer_path(params, layer) for layer in freeze]
    if frozen:
        changes["mask"] = freeze_mask(params, frozen)
    if changes:
        learner = run.make_learner(**changes)
    if head == "nil":
        if cfg.dataset == "sinusoid":
            raise ValueError("--head nil needs a classification run (it votes with support labels)")
        learner = nil(learner, run.source.model, cfg.ways)
    elif head != "learned":
        raise ValueError(f"unknown head {head!r}; use 'learned' or 'nil'")
    key = jax.random.fold_in(jax.random.PRNGKey(seed), _TEST_STREAM)
    summary = run.evaluate(state.params, split, tasks, steps, key, batch, learner=learner)
    main = "acc" if "outer/acc" in summary else "mse"
    result = {
        "accuracy" if main == "acc" else "mse": summary[f"outer/{main}"],
        "ci95": summary[f"outer/{main}_ci95"],
        "loss": summary["outer/loss"],
        "loss_ci95": summary["outer/loss_ci95"],
        "tasks": tasks, "inner_steps": steps, "split": split, "checkpoint_step": step,
        "algo": cfg.algo, "dataset": cfg.dataset, "head": head,
        "frozen": frozen,
    }
    if bn_stats is not None:
        result["bn_stats"] = bn_stats
    if cfg.dataset != "sinusoid":
        result.update(ways=cfg.ways, shots=cfg.shots)
    return result



def _outer_optimizer(cfg: Config) -> optax.GradientTransformation:
    """The outer optimiser, with a cosine-annealed rate under ``meta_lr_schedule="cosine"``."""
    rate = cfg.meta_lr
    if cfg.meta_lr_schedule == "cosine":
        rate = optax.cosine_decay_schedule(cfg.meta_lr, cfg.steps,
                                           alpha=min(cfg.min_meta_lr / cfg.meta_lr, 1.0))
    return {"adam": optax.adam, "sgd": optax.sgd}[cfg.outer_optimizer](rate)


def _layer_path(params, layer) -> str:
    """``"2"`` -> the second body layer's path (``"body/conv2"``); paths pass through."""
    text = str(layer).strip()
    if not text.isdigit():
        return text
    names = sorted(params["body"])
    index = int(text)
    if not 1 <= index <= len(names):
        raise ValueError(f"--freeze {text}: the body has layers 1..{len(names)} ({', '.join(names)})")
    return f"body/{names[index - 1]}"
