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

from metajax.algorithms.base import MetaLearner
from metajax.algorithms.nil import nil
from metajax.algorithms.registry import algorithm_name, make_algorithm
from metajax.core.partition import freeze_mask
from metajax.data.host_stream import HostEpisodeStream, host_batch
from metajax.models.functional import as_model
from metajax.training import checkpoint
from metajax.training.config import Config
from metajax.training.metrics_log import MetricsLog
from metajax.training.sharding import TASK_AXIS, replicate, task_mesh
from metajax.training.state import TrainState, create_train_state
from metajax.training.steps import make_eval_step, make_meta_step, step_sample_keys
from metajax.training.tasks import make_task_source

# Fixed streams of evaluation tasks, so every run and checkpoint is scored on the same tasks.
_VAL_STREAM, _TEST_STREAM = 1, 2


class NonFiniteLossError(RuntimeError):
    """The meta-loss became NaN or infinite; training stopped without saving the bad state."""


class _Run:
    """The pieces of a run shared by training, evaluation and analysis.

    ``model``, ``data`` and ``learner`` are the user's objects, each replacing what the config
    names (see :func:`train_and_evaluate`).
    """

    def __init__(self, cfg: Config, *, model=None, data=None, learner=None):
        self.cfg = cfg.validate()
        self.source = make_task_source(cfg, model=model, data=data)
        self.model = as_model(self.source.model, head=cfg.head, eval_bn=cfg.eval_bn)
        self._algorithm = learner if learner is not None else cfg.algo
        self.learner = self.make_learner()
        self.optimizer = self.learner.outer(_outer_optimizer(cfg))
        self._eval_steps = {}  # (learner, inner_steps) -> jitted step, so validation compiles once

    def make_learner(self, model=None, **changes):
        """The run's algorithm; ``changes`` override its options (e.g. ``first_order=True``),
        ``model`` its model (e.g. with other evaluation statistics)."""
        cfg = self.cfg
        if isinstance(self._algorithm, MetaLearner):
            if changes or model is not None:
                raise ValueError(f"this run's algorithm was given as a built MetaLearner, which "
                                 f"cannot be rebuilt with {', '.join(changes) or 'another model'}"
                                 "; pass its factory (e.g. learner=metajax.maml) instead")
            return self._algorithm
        return make_algorithm(self._algorithm, model or self.model, self.source.objective,
                              inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps,
                              unroll=cfg.unroll, **{**cfg.algorithm_options(), **changes})

    def initial_state(self) -> TrainState:
        init_key, train_key = jax.random.split(jax.random.PRNGKey(self.cfg.seed))
        params, model_state = self.model.init(init_key, self.source.sample_input)
        return create_train_state(self.learner, self.optimizer, params, train_key, model_state)

    def restore(self, workdir) -> tuple[TrainState, int]:
        """The newest checkpoint of ``workdir`` and its step; FileNotFoundError if it has none."""
        state, step = checkpoint.restore_checkpoint(workdir, self.initial_state())
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {checkpoint.checkpoint_dir(workdir)}; "
                                    "train first with `metajax train --workdir DIR`")
        return state, step

    def evaluate(self, params, split: str, num_tasks: int, inner_steps: int, key,
                 batch: int | None = None, learner=None, model_state=None) -> dict:
        """Mean and 95% confidence half-width of each metric over ``num_tasks`` tasks of ``split``.

        ``learner`` replaces the run's algorithm at test time (e.g. NIL, or frozen layers);
        ``model_state`` is the model's state (running averages) to evaluate with.
        """
        batch = min(batch or self.cfg.eval_batch, num_tasks)
        learner = learner or self.learner
        host = self.source.placement == "host"
        if (learner, inner_steps) not in self._eval_steps:
            self._eval_steps[learner, inner_steps] = make_eval_step(
                learner, self.source.sample, inner_steps, task_chunk=self.cfg.task_chunk,
                presampled=host)
        eval_step = self._eval_steps[learner, inner_steps]
        data = self.source.splits[split]
        # Pad the last chunk to a full batch so one compiled shape serves every chunk.
        keys = jax.vmap(functools.partial(jax.random.fold_in, key))(
            jnp.arange(math.ceil(num_tasks / batch) * batch))
        chunks = []
        for i in range(0, len(keys), batch):
            chunk_keys = keys[i:i + batch]
            tasks = (jax.device_put(host_batch(data, chunk_keys, ways=self.cfg.ways,
                                               shots=self.cfg.shots, queries=self.cfg.query))
                     if host else data)
            chunks.append(eval_step(params, model_state or {}, tasks, chunk_keys))
        per_task = {k: np.concatenate([np.asarray(c[k]) for c in chunks])[:num_tasks]
                    for k in chunks[0]}
        summary = {}
        for name, values in per_task.items():
            summary[name] = float(values.mean())
            summary[name + "_ci95"] = float(1.96 * values.std(ddof=1) / math.sqrt(len(values))
                                            if len(values) > 1 else float("nan"))
        return summary


class _KeyChain:
    """The task-sampling keys of consecutive steps, derived on the host exactly as the meta step
    derives them from the state's key, so the host can draw a step's tasks ahead of it."""

    def __init__(self, rng, meta_batch: int):
        self._rng = jax.device_put(rng, jax.devices("cpu")[0])
        self._next = jax.jit(functools.partial(step_sample_keys, meta_batch=meta_batch))

    def __call__(self, step: int):
        del step  # called once per step, in order (HostEpisodeStream's thread)
        self._rng, keys = self._next(self._rng)
        return keys


def train_and_evaluate(cfg: Config, workdir, *, resume: bool = False, progress: bool = True,
                       model=None, data=None, learner=None) -> TrainState:
    """Meta-trains per ``cfg``, writing config, metrics and checkpoints to ``workdir``.

    With ``resume=True`` training continues from the newest checkpoint in ``workdir``; since the
    RNG key is part of the checkpointed state, the result equals an uninterrupted run's.

    Args:
      cfg: the run's ``Config``.
      workdir: the run directory.
      resume: continue the run in ``workdir``.
      progress: show a progress bar.
      model: a ``flax.linen`` module (or ``metajax.as_model(module, head=...)``) to train instead
        of ``cfg.model``.
      data: a ``TaskSource`` or ``{"train", "val", "test"}`` splits (dense
        ``(classes, examples, H, W, C)`` arrays or ``metajax.data.RaggedImages``) instead of
        ``cfg.dataset``.
      learner: an algorithm factory (``metajax.maml``, or your own with its signature) or a
        built ``MetaLearner`` instead of ``cfg.algo``.

    Objects given here are not in ``config.json``: pass the same ones to :func:`evaluate_run`
    (or give import paths, ``cfg.model = "pkg.mod:factory"``, which are).

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
    if callable(learner) and not isinstance(learner, MetaLearner):
        # A factory is recorded by name or import path, so eval/analyze/--resume rebuild it.
        cfg = cfg.replace(algo=algorithm_name(learner))
    run = _Run(cfg, model=model, data=data, learner=learner)
    cfg.save(workdir)
    state, start = checkpoint.restore_checkpoint(workdir, run.initial_state())
    start = start or 0
    log = MetricsLog(workdir, resume_step=start if resume else None)
    mesh = task_mesh() if cfg.shard_tasks and jax.device_count() > 1 else None
    if mesh is not None and cfg.meta_batch % mesh.size:
        warnings.warn(f"--meta-batch {cfg.meta_batch} does not split over {mesh.size} devices; "
                      f"running on one device (use a multiple of {mesh.size} to shard tasks)")
        mesh = None
    host = run.source.placement == "host"
    train_data = run.source.splits["train"]
    if mesh is not None:
        state = replicate(state, mesh)
        if not host:  # placed once, so no step copies the split between devices
            train_data = replicate(train_data, mesh)
    meta_step = make_meta_step(run.learner, run.optimizer, run.source.sample, cfg.meta_batch,
                               mesh=mesh, task_chunk=cfg.task_chunk, presampled=host)
    # MAML++'s derivative-order annealing: a second compiled step, first order, for the first
    # da_steps steps; switching between two compiled functions retraces nothing.
    first_order_step = (make_meta_step(run.make_learner(first_order=True), run.optimizer,
                                       run.source.sample, cfg.meta_batch, mesh=mesh,
                                       task_chunk=cfg.task_chunk, presampled=host)
                        if cfg.da_steps > start else None)
    stream = None
    if host:
        sharding = (jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(TASK_AXIS))
                    if mesh is not None else None)
        stream = HostEpisodeStream(train_data, ways=cfg.ways, shots=cfg.shots, queries=cfg.query,
                                   keys_for_step=_KeyChain(state.rng, cfg.meta_batch),
                                   start_step=start, sharding=sharding)
    val_key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), _VAL_STREAM)
    last_saved = start if existing else None

    bar = tqdm(total=cfg.steps, initial=start, disable=not progress, desc=f"{cfg.algo}",
               dynamic_ncols=True)
    try:
        state = _train_steps(cfg, run, workdir, state, start, meta_step, first_order_step,
                             train_data, stream, log, bar, val_key, last_saved)
    finally:
        if stream is not None:
            stream.close()
        bar.close()
    return state


def _train_steps(cfg, run, workdir, state, start, meta_step, first_order_step, train_data,
                 stream, log, bar, val_key, last_saved):
    tic, window_start = time.perf_counter(), start
    for step in range(start + 1, cfg.steps + 1):
        step_fn = first_order_step if step <= cfg.da_steps else meta_step
        if stream is not None:
            stream_step, tasks = next(stream)
            assert stream_step == step, (stream_step, step)
            state, metrics = step_fn(state, tasks)
        else:
            state, metrics = step_fn(state, train_data)
        loss = float(metrics["outer/loss"])
        if not math.isfinite(loss):
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
            val = run.evaluate(state.params, "val", cfg.eval_tasks, cfg.eval_inner_steps, val_key,
                               model_state=state.model_state)
            log.write(step, {f"val/{k}": v for k, v in val.items() if not k.endswith("_ci95")})
            bar.write(f"step {step}: " + ", ".join(f"val/{k}={v:.4f}" for k, v in val.items()
                                                   if not k.endswith("_ci95")))
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint.save_checkpoint(workdir, state, step, keep=cfg.keep_checkpoints)
            last_saved = step
        if step % cfg.log_every == 0:
            tic, window_start = time.perf_counter(), step
    return state


def evaluate_run(workdir, *, tasks: int = 600, inner_steps: int | None = None,
                 split: str = "test", seed: int = 0, batch: int | None = None,
                 head: str = "learned", freeze=(), bn_stats: str | None = None,
                 model=None, data=None, learner=None, **overrides) -> dict:
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
      bn_stats: what batch norm normalises with at test time: ``"running"`` (running averages:
        MAML++'s BNRS statistics, or stock ``nn.BatchNorm``'s) or ``"batch"`` (each batch's
        own, transductive). Default: the run's (``eval_bn``; MAML++ BNRS: running).
      model, data, learner: the objects the run was trained with, when they were passed to
        :func:`train_and_evaluate` as objects rather than named in its config.
      **overrides: config fields to change, e.g. ``data_dir``.

    Returns:
      A dict with ``accuracy`` (classification) or ``mse`` (regression), ``ci95`` (half-width of
      its 95% confidence interval), ``loss``, and what was evaluated.
    """
    cfg = Config.load(workdir).replace(**{k: v for k, v in overrides.items() if v is not None})
    if split not in ("val", "test"):
        raise ValueError(f"unknown split {split!r}; use 'test' or 'val'")
    run = _Run(cfg, model=model, data=data, learner=learner)
    state, step = run.restore(workdir)
    steps = cfg.eval_inner_steps if inner_steps is None else inner_steps
    learner, changes, eval_model = run.learner, {}, None
    if bn_stats is not None:
        if cfg.algo == "mamlpp" and cfg.options.get("bnrs"):
            changes["test_stats"] = bn_stats
        elif state.model_state:
            eval_model = as_model(run.model, eval_bn=bn_stats)
        else:
            raise ValueError("--bn-stats needs running statistics: a model with stock "
                             "nn.BatchNorm, or MAML++ trained with --bnrs true; this run's "
                             f"model ({cfg.model or 'default'}, {cfg.algo}) keeps none")
    params = learner.params_of(state.params)
    frozen = [_layer_path(run.model, params, layer) for layer in freeze]
    if frozen:
        changes["mask"] = freeze_mask(params, frozen)
    if changes or eval_model is not None:
        learner = run.make_learner(model=eval_model, **changes)
    if head == "nil":
        if cfg.dataset == "sinusoid":
            raise ValueError("--head nil needs a classification run (it votes with support labels)")
        learner = nil(learner, eval_model or run.model, cfg.ways)
    elif head != "learned":
        raise ValueError(f"unknown head {head!r}; use 'learned' or 'nil'")
    key = jax.random.fold_in(jax.random.PRNGKey(seed), _TEST_STREAM)
    summary = run.evaluate(state.params, split, tasks, steps, key, batch, learner=learner,
                           model_state=state.model_state)
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


def _layer_path(model, params, layer) -> str:
    """``"2"`` -> the second body layer's path (``"body/conv2"``); paths pass through."""
    text = str(layer).strip()
    if not text.isdigit():
        return text
    layers = ["/".join(path) for path in model.layers(params)]
    index = int(text)
    if not 1 <= index <= len(layers):
        raise ValueError(f"--freeze {text}: the body has layers 1..{len(layers)} "
                         f"({', '.join(layers)})")
    return layers[index - 1]
