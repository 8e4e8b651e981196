"""``train_and_evaluate(config, workdir)`` and ``evaluate_run(workdir)``: what the CLI calls."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from metajax.algorithms.base import MetaLearner, supports, trains_on
from metajax.algorithms.nil import nil
from metajax.algorithms.registry import algorithm_name, get_factory, make_algorithm
from metajax.core.partition import batch_norm_mask, freeze_mask, mask_and
from metajax.data.host_stream import HostEpisodeStream, host_batch, put_host_batch
from metajax.models.conv import compiler_options
from metajax.models.functional import as_model
from metajax.training import checkpoint, history, transfer
from metajax.training.checkpoint import CheckpointError
from metajax.training.config import Config
from metajax.training.metrics_log import MetricsLog
from metajax.training.sharding import TASK_AXIS, put_tasks, replicate, task_mesh
from metajax.training.state import TrainState, create_train_state
from metajax.training.steps import (make_eval_step, make_meta_step, stack_states,
                                    step_sample_keys, unstack_state)
from metajax.training.tasks import make_task_source
from metajax.training.workdir import (WorkdirError, WorkdirLock, check_contents, os_error_message,
                                      remove_debris, remove_own_temporaries, seed_dir)

# Fixed streams of evaluation tasks, so every run and checkpoint is scored on the same tasks.
_VAL_STREAM, _TEST_STREAM = 1, 2


class NonFiniteLossError(RuntimeError):
    """A training or validation metric became NaN or infinite; training stopped without saving
    the bad state."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C during training; the message says which checkpoint is kept and how to resume."""


class _Run:
    """The pieces of a run shared by training, evaluation and analysis.

    ``model``, ``data`` and ``learner`` are the user's objects, each replacing what the config
    names (see :func:`train_and_evaluate`).
    """

    def __init__(self, cfg: Config, *, model=None, data=None, learner=None):
        self.cfg = cfg.validate()
        self._algorithm = learner if learner is not None else cfg.algo
        factory = (learner if callable(learner) else
                   None if isinstance(learner, MetaLearner) else get_factory(cfg.algo))
        class_batches = factory is not None and trains_on(factory) == "class_batches"
        self.source = make_task_source(cfg, model=model, data=data, class_batches=class_batches)
        self.model = as_model(self.source.model, head=cfg.head, eval_bn=cfg.eval_bn,
                              compute_dtype=cfg.dtype)
        self.learner = self.make_learner()
        outer = _outer_optimizer(cfg)
        if cfg.train == "head":  # the body stays where it started, in the outer loop too
            outer = transfer.head_only(outer, self.model, self.learner)
        self.optimizer = self.learner.outer(outer)
        self._eval_steps = {}  # (learner, inner_steps, mesh) -> jitted step, compiled once
        self._placed = {}      # split -> its data on the mesh, placed once
        self.mesh = None       # the training loop's task mesh; evaluation shards over it too

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
        options = {**cfg.algorithm_options(), **changes}
        factory = (self._algorithm if callable(self._algorithm)
                   else get_factory(self._algorithm))
        if cfg.train == "head" and supports(factory, "mask"):
            # only the head adapts (a test-time freeze mask is subsumed: it freezes body layers)
            options["mask"] = (model or self.model).head_mask
        elif not cfg.adapt_bn and supports(factory, "mask"):
            # (an algorithm that adapts only the head, e.g. anil, keeps batch norm out already)
            given = options.get("mask")
            options["mask"] = (batch_norm_mask if given is None else
                               lambda params: mask_and(given, batch_norm_mask, params))
        return make_algorithm(self._algorithm, model or self.model, self.source.objective,
                              inner_lr=cfg.inner_lr, inner_steps=cfg.inner_steps,
                              unroll=cfg.unroll, ways=cfg.ways, **options)

    def initial_state(self, seed: int | None = None) -> TrainState:
        """The state before training, for ``seed`` (default: the config's)."""
        seed = self.cfg.seed if seed is None else seed
        init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
        params, model_state = self.model.init(init_key, self.source.sample_input)
        return create_train_state(self.learner, self.optimizer, params, train_key, model_state)

    def starting_state(self, seed: int | None = None) -> TrainState:
        """The state training starts from: :meth:`initial_state`, with the body of
        ``cfg.init_from`` when it names a run (see ``metajax.training.transfer``)."""
        if self.cfg.init_from in (None, transfer.RANDOM):
            return self.initial_state(seed)
        seed = self.cfg.seed if seed is None else seed
        init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
        params, model_state = self.model.init(init_key, self.source.sample_input)
        params, model_state = transfer.body_from(
            transfer.source_for_seed(self.cfg.init_from, seed), self.model, params, model_state)
        return create_train_state(self.learner, self.optimizer, params, train_key, model_state)

    def restore(self, workdir, step: int | None = None) -> tuple[TrainState, int]:
        """The checkpoint of ``step`` (default: the newest) of ``workdir`` and its step;
        FileNotFoundError if it has none, CheckpointError if it has none of that step."""
        refuse_seeds_dir(self.cfg, workdir)
        state, step = checkpoint.restore_checkpoint(workdir, self.initial_state(), step=step)
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
        mesh = self.mesh
        if mesh is not None:  # every device evaluates its share of each batch of tasks
            batch = -(-batch // mesh.size) * mesh.size
        if (learner, inner_steps, mesh) not in self._eval_steps:
            self._eval_steps[learner, inner_steps, mesh] = make_eval_step(
                learner, self.source.sample, inner_steps, task_chunk=self.cfg.task_chunk,
                presampled=host, mesh=mesh,
                compiler_options=compiler_options(self.cfg.conv_library))
        eval_step = self._eval_steps[learner, inner_steps, mesh]
        data = self.source.splits[split]
        if mesh is not None and not host:
            if split not in self._placed:
                self._placed[split] = replicate(data, mesh)
            data = self._placed[split]
        # Pad the last chunk to a full batch so one compiled shape serves every chunk.
        keys = jax.vmap(functools.partial(jax.random.fold_in, key))(
            jnp.arange(math.ceil(num_tasks / batch) * batch))
        chunks = []
        if mesh is not None:  # placed explicitly from the host: no device-to-device copy
            keys = np.asarray(jax.device_get(keys))
        for i in range(0, len(keys), batch):
            chunk_keys = keys[i:i + batch] if mesh is None else put_tasks(keys[i:i + batch], mesh)
            size = dict(ways=self.cfg.ways, shots=self.cfg.shots, queries=self.cfg.query)
            if not host:
                tasks = data
            elif mesh is None:
                tasks = jax.device_put(host_batch(data, keys[i:i + batch], **size))
            else:  # each process draws and places only its own devices' tasks
                tasks = put_host_batch(data, keys[i:i + batch], **size, sharding=NamedSharding(
                    mesh, PartitionSpec(TASK_AXIS)))
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
        # (from this process's copy: on several processes the state spans all of them)
        self._rng = jax.device_put(checkpoint.to_host(rng),
                                   jax.local_devices(backend="cpu")[0])
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

    Several processes (``jax.distributed``): every process calls this; the task batch is split
    over all devices of all processes, and process 0 alone writes files and prints.

    Several seeds (``cfg.seeds``, e.g. ``(0, 1, 2)``): the runs of those seeds are trained as
    one program, their states stacked on a leading seed axis (``cfg.seed_chunk`` sets how that
    axis is mapped), sharing the data and each drawing its own tasks. Each seed writes a complete
    run directory, ``workdir/seed_<s>`` (config, metrics, checkpoints), which ``evaluate_run`` and
    the analyses read like any run; ``evaluate_run(workdir)`` reports each seed and the mean and
    sd over seeds. The state returned then has the seed axis.

    Raises:
      NonFiniteLossError: a training or validation metric became NaN/inf. The newest checkpoint
        whose next step was finite is kept.
      FileExistsError: ``workdir`` holds a run and ``resume`` is False.
      CheckpointError: ``resume`` and no checkpoint can be resumed from (nothing is changed).
      WorkdirError: the workdir is in use, holds foreign files, or cannot be written.
      TrainingInterrupted: Ctrl-C; the newest checkpoint is kept.
    """
    workdir = Path(workdir)
    if callable(learner) and not isinstance(learner, MetaLearner):
        # A factory is recorded by name or import path, so eval/analyze/--resume rebuild it.
        cfg = cfg.replace(algo=algorithm_name(learner))
    if cfg.data_dir is not None:  # stored absolute: eval from another folder reads the same data
        cfg = cfg.replace(data_dir=str(Path(cfg.data_dir).expanduser().resolve()))
    if cfg.init_from not in (None, transfer.RANDOM):
        cfg = cfg.replace(init_from=str(Path(cfg.init_from).expanduser().resolve()))
    cfg.validate()
    _training_mesh(cfg)  # a batch that cannot be split is refused before anything is written
    writer = jax.process_index() == 0
    seeds = cfg.seed_list()
    members = ([(cfg, workdir)] if seeds is None
               else [(cfg.for_seed(s), seed_dir(workdir, s)) for s in seeds])
    if writer:
        _check_workdir(workdir, resume)
        if seeds is not None:
            for member_cfg, member_dir in members:
                _check_workdir(member_dir, resume)
    with WorkdirLock(workdir) if writer else contextlib.nullcontext() as lock, \
            jax.default_matmul_precision(cfg.matmul_precision):
        if lock is not None and lock.took_over:
            print(f"metajax: taking over {lock.path} from a run that is no longer running "
                  f"({lock.took_over})", file=sys.stderr)
        if writer:
            for member_dir in {workdir, *(d for _, d in members)}:
                remove_debris(member_dir)
        run = _Run(cfg, model=model, data=data, learner=learner)
        if seeds is not None and run.source.placement == "host":
            raise ValueError("--seeds draws every seed's tasks on the device, but this run's "
                             "data is placed on the host (--data-on host, or too large for the "
                             "device); use --data-on device, or train one --seed per run")
        if resume:
            changes = {}
            for member_cfg, member_dir in members:
                changes = _check_resumed_config(member_dir, member_cfg) or changes
            state, start = _restore_for_resume(run, members, stacked=seeds is not None)
            if changes and writer:
                for member_cfg, member_dir in members:
                    history.record(member_dir, {"event": "resumed", "step": start,
                                                "changes": changes})
                    checkpoint.write_config_snapshot(member_dir, member_cfg.to_json())
        elif seeds is None:
            state, start = run.starting_state(), 0
        else:
            state, start = stack_states([run.starting_state(c.seed) for c, _ in members]), 0
        trainer = _Trainer(cfg, run, workdir, state, start, progress=progress and writer,
                           writer=writer, members=members if seeds is not None else None)
        return trainer.train()


def _restore_for_resume(run, members, *, stacked: bool):
    """The state to resume from and its step: the newest checkpoint, or for several seeds the
    newest step every seed has committed (a kill between two seeds' commits leaves the seeds
    one checkpoint apart; the later one is written again)."""
    if not stacked:
        (_, workdir), = members
        return checkpoint.restore_for_resume(workdir, run.initial_state())
    held = {member_dir: [s for s, _ in checkpoint.list_checkpoints(member_dir)]
            for _, member_dir in members}
    common = set.intersection(*(set(steps) for steps in held.values()))
    if not common:
        listing = "; ".join(f"{d.name}: {', '.join(map(str, steps)) or 'none'}"
                            for d, steps in held.items())
        raise CheckpointError(f"nothing to resume: the seeds hold no checkpoint of a common step "
                              f"({listing}); start the run without --resume in a new --workdir")
    step = max(common)
    states = [checkpoint.restore_checkpoint(member_dir, run.initial_state(member_cfg.seed),
                                            step=step)[0]
              for member_cfg, member_dir in members]
    return stack_states(states), step


def refuse_seeds_dir(cfg: Config, workdir) -> None:
    """A several-seed run's top folder holds no checkpoint of its own: name the seeds' folders."""
    seeds = cfg.seed_list()
    if seeds is not None:
        raise FileNotFoundError(
            f"{workdir} holds a run of seeds {cfg.seeds}, one folder per seed: give one seed's "
            f"folder (e.g. {seed_dir(workdir, seeds[0])}); `metajax eval {workdir}` scores "
            "every seed")


def _training_mesh(cfg: Config):
    """The task mesh over every device of every process (``None`` on one device)."""
    if not cfg.shard_tasks or jax.device_count() == 1:
        return None
    mesh = task_mesh()
    if cfg.meta_batch % mesh.size:
        raise ValueError(f"--meta-batch {cfg.meta_batch} cannot be split evenly over the "
                         f"{mesh.size} devices ({jax.process_count()} process(es)); use a "
                         f"multiple of {mesh.size}, or --shard-tasks false")
    return mesh


def _check_workdir(workdir: Path, resume: bool) -> None:
    """Refuses, before anything is written, a workdir this run must not use."""
    if resume:
        if not (workdir / "config.json").is_file():
            raise CheckpointError(f"nothing to resume: {workdir} is not a metajax run (it has no "
                                  "config.json); check --workdir, or start the run without "
                                  "--resume")
        return
    existing = checkpoint.list_checkpoints(workdir)
    if existing:
        raise FileExistsError(f"{workdir} already holds a run (checkpoint at step "
                              f"{existing[-1][0]}); pass --resume to continue it or choose "
                              "another --workdir")
    check_contents(workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WorkdirError(os_error_message(e, workdir)) from None


def _check_resumed_config(workdir: Path, cfg: Config) -> None:
    """``config.json`` must still describe the checkpoints (only the step budget, the data
    location and, after a divergence, lower rates may change); returns the changed rates."""
    snapshot = checkpoint.config_snapshot(workdir)
    if snapshot is None:
        return {}
    saved = Config.from_json(snapshot)
    allowed = {"steps", "data_dir"}
    if history.diverged(workdir):
        allowed |= {name for name in ("meta_lr", "inner_lr")
                    if 0 < getattr(cfg, name) < getattr(saved, name)}
    changed = [f"{name}: {getattr(saved, name)!r} in the checkpoints, {getattr(cfg, name)!r} now"
               for name in sorted(set(cfg.__dataclass_fields__) - allowed)
               if getattr(saved, name) != getattr(cfg, name)]
    if changed:
        raise CheckpointError(
            f"{workdir / 'config.json'} no longer matches the configuration its checkpoints were "
            f"written with ({'; '.join(changed)}). Restore those settings, or start a new "
            "--workdir; nothing was changed")
    return {name: [getattr(saved, name), getattr(cfg, name)] for name in ("meta_lr", "inner_lr")
            if getattr(saved, name) != getattr(cfg, name)}


class _Trainer:
    """The training loop of one run: steps, checks, logs, validation, checkpoints.

    The host never waits for a step it does not need: metrics stay on the device until a log,
    validation or checkpoint step, where every step since the last check is checked for
    non-finite values at once. A checkpoint is written when its step is done and committed
    (renamed into place) only once the next step is known to be finite, so the newest checkpoint
    is never a state whose next step diverges.
    """

    def __init__(self, cfg, run, workdir, state, start, *, progress, writer, members=None):
        self.cfg, self.run, self.workdir = cfg, run, workdir
        self.start, self.writer = start, writer
        # One member per seed; their states are stacked on a leading axis when there are seeds.
        self.stacked = members is not None
        self.members = [
            _Member(member_cfg, Path(member_dir),
                    MetricsLog(member_dir, resume_step=start if start else None,
                               tensorboard=cfg.tensorboard) if writer else None,
                    jax.random.fold_in(jax.random.PRNGKey(member_cfg.seed), _VAL_STREAM))
            for member_cfg, member_dir in (members or [(cfg, workdir)])]
        if writer:
            cfg.save(workdir)
            if self.stacked:
                for member in self.members:
                    member.cfg.save(member.workdir)
        mesh = _training_mesh(cfg)
        self.mesh = run.mesh = mesh
        host = run.source.placement == "host"
        self.train_data = run.source.splits["train"]
        if mesh is not None:
            state = replicate(state, mesh)
            if not host:  # placed once, so no step copies the split between devices
                self.train_data = replicate(self.train_data, mesh)
        self.state = state
        shared = dict(seeds=self.stacked, seed_chunk=cfg.seed_chunk,
                      compiler_options=compiler_options(cfg.conv_library))
        self.meta_step = make_meta_step(run.learner, run.optimizer, run.source.sample_train,
                                        cfg.meta_batch, mesh=mesh, task_chunk=cfg.task_chunk,
                                        presampled=host, **shared)
        # Derivative-order annealing: a second compiled step, first order, for the first
        # da_steps steps; switching between two compiled functions retraces nothing.
        self.first_order_step = (
            make_meta_step(run.make_learner(first_order=True), run.optimizer,
                           run.source.sample_train,
                           cfg.meta_batch, mesh=mesh, task_chunk=cfg.task_chunk,
                           presampled=host, **shared)
            if cfg.da_steps > start else None)
        self.stream = None
        if host:
            sharding = (jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(TASK_AXIS))
                        if mesh is not None else None)
            self.stream = HostEpisodeStream(
                self.train_data, ways=cfg.ways, shots=cfg.shots, queries=cfg.query,
                keys_for_step=_KeyChain(state.rng, cfg.meta_batch), start_step=start,
                sharding=sharding)
        self.last_saved = start or None
        self.pending = []          # (step, metrics on the device) not yet checked
        self.uncommitted = None    # (step, [path per seed]) of a checkpoint awaiting its next step
        self.bar = tqdm(total=cfg.steps, initial=start, disable=not progress, desc=cfg.algo,
                        dynamic_ncols=True)

    def train(self) -> TrainState:
        step = self.start
        try:
            if self.start < self.cfg.steps:
                self.bar.set_description(f"{self.cfg.algo} (compiling)")
            for step in range(self.start + 1, self.cfg.steps + 1):
                self._step(step)
            return self.state
        except KeyboardInterrupt:
            raise TrainingInterrupted(
                f"interrupted at step {step}; " + self._kept() + ". Continue with: metajax "
                f"train --workdir {self.workdir} --resume") from None
        finally:
            self._discard_uncommitted()
            if self.stream is not None:
                self.stream.close()
            for member in self.members:
                if member.log is not None:
                    member.log.close()
                if self.writer:
                    remove_own_temporaries(member.workdir)
            self.bar.close()

    def _step(self, step: int) -> None:
        cfg = self.cfg
        step_fn = self.first_order_step if step <= cfg.da_steps else self.meta_step
        if self.stream is not None:
            stream_step, tasks = next(self.stream)
            assert stream_step == step, (stream_step, step)
            self.state, metrics = step_fn(self.state, tasks)
        else:
            self.state, metrics = step_fn(self.state, self.train_data)
        self.pending.append((step, metrics))
        if step == self.start + 1:
            self.bar.set_description(cfg.algo)
            self.tic, self.window_start = time.perf_counter(), self.start
        self.bar.update(1)
        final = step == cfg.steps
        log_now = step % cfg.log_every == 0 or final
        eval_now = step % cfg.eval_every == 0 or final
        save_now = step % cfg.checkpoint_every == 0 or final
        next_of_saved = self.uncommitted is not None and step == self.uncommitted[0] + 1
        if not (log_now or eval_now or save_now or next_of_saved):
            return
        latest = self._check_pending()
        if self.uncommitted is not None:
            self._commit()
        if log_now and self.writer:
            # Training time per step since the last log; validation and checkpoints excluded.
            seconds = (time.perf_counter() - self.tic) / (step - self.window_start)
            for i, member in enumerate(self.members):
                member.log.write(step, {**{f"train/{k}": self._of(v, i) for k, v in latest.items()},
                                        "time/step_s": seconds})
            # (the mean over seeds, when there are several)
            self.bar.set_postfix({k.split("/")[-1]: f"{float(np.mean(v)):.3f}"
                                  for k, v in latest.items()
                                  if k.startswith("outer/") and not k.endswith("norm")})
        if eval_now:
            self._validate(step)
        if save_now:
            self._save(step, commit=final)
        if log_now:
            self.tic, self.window_start = time.perf_counter(), step

    def _of(self, value, index: int):
        """Seed ``index``'s part of a state on the devices or of metrics fetched to the host
        (the value itself with one seed)."""
        if not self.stacked:
            return value
        if isinstance(value, dict) and all(isinstance(v, np.ndarray) for v in value.values()):
            return {k: v[index] for k, v in value.items()}
        if isinstance(value, np.ndarray):
            return value[index]
        return unstack_state(value, index)

    def _check_pending(self) -> dict:
        """The newest step's metrics; raises at the first non-finite metric since the last check."""
        fetched = jax.device_get([m for _, m in self.pending])
        for (step, _), metrics in zip(self.pending, fetched):
            for name, value in metrics.items():
                for i, member in enumerate(self.members):
                    own = np.asarray(self._of(value, i))
                    if not np.all(np.isfinite(own)):
                        self._diverged(f"train/{name}", float(own.ravel()[0]), step, member)
        self.pending = []
        return fetched[-1]

    def _validate(self, step: int) -> None:
        cfg = self.cfg
        self.bar.set_description(f"{cfg.algo} (validating)")
        results = [self.run.evaluate(self._of(self.state.params, i), "val", cfg.eval_tasks,
                                     cfg.eval_inner_steps, member.val_key,
                                     model_state=self._of(self.state.model_state, i))
                   for i, member in enumerate(self.members)]
        self.bar.set_description(cfg.algo)
        for member, val in zip(self.members, results):
            means = {k: v for k, v in val.items() if not k.endswith("_ci95")}
            for name, value in means.items():
                if not math.isfinite(value):
                    self._diverged(f"val/{name}", value, step, member)
            if self.writer:
                member.log.write(step, {f"val/{k}": v for k, v in means.items()})
                seed = f" (seed {member.cfg.seed})" if self.stacked else ""
                self.bar.write(f"step {step}{seed}: " + ", ".join(f"val/{k}={v:.4f}"
                                                                  for k, v in means.items()))

    def _save(self, step: int, *, commit: bool) -> None:
        # Several seeds: no checkpoint is pruned until every seed's is in place, so a kill
        # between two seeds' commits leaves a step that all seeds hold.
        keep = None if self.stacked else self.cfg.keep_checkpoints
        paths = [checkpoint.save_checkpoint(
                     member.workdir, self._of(self.state, i), step, keep=keep,
                     config_json=member.cfg.to_json(), write=self.writer, commit=commit)
                 for i, member in enumerate(self.members)]
        if commit:
            self._prune()
            self.last_saved = step
        else:
            self.uncommitted = (step, paths)

    def _commit(self) -> None:
        step, paths = self.uncommitted
        if self.writer:
            keep = None if self.stacked else self.cfg.keep_checkpoints
            for member, path in zip(self.members, paths):
                checkpoint.commit_checkpoint(member.workdir, path, step, keep=keep,
                                             config_json=member.cfg.to_json())
            self._prune()
        self.uncommitted = None
        self.last_saved = step

    def _prune(self) -> None:
        if self.stacked and self.writer:
            for member in self.members:
                checkpoint.prune_checkpoints(member.workdir, self.cfg.keep_checkpoints)

    def _discard_uncommitted(self) -> None:
        if self.uncommitted is not None and self.writer:
            for path in self.uncommitted[1]:
                checkpoint.discard_checkpoint(path)
        self.uncommitted = None

    def _kept(self) -> str:
        if self.last_saved is None:
            return "no checkpoint was kept"
        where = (f"each seed's folder ({', '.join(m.workdir.name for m in self.members)})"
                 if self.stacked else checkpoint.checkpoint_dir(self.workdir))
        return f"the newest checkpoint (step {self.last_saved}) is kept in {where}"

    def _diverged(self, metric: str, value: float, step: int, member) -> None:
        self._discard_uncommitted()
        event = {"event": "diverged", "step": step, "metric": metric, "value": repr(value),
                 "kept": self.last_saved}
        if self.stacked:
            event["seed"] = member.cfg.seed
            metric = f"{metric} of seed {member.cfg.seed}"
        if self.writer:
            # Every seed's folder records it: the rates may be lowered on resume for all of them.
            for folder in {self.workdir, *(m.workdir for m in self.members)}:
                history.record(folder, event)
        cfg = self.cfg
        lower = f"--meta-lr {cfg.meta_lr / 10:g} (or --inner-lr {cfg.inner_lr / 10:g})"
        if self.last_saved is None:
            advice = f"start again with lower rates, e.g. {lower}, in a new --workdir"
        else:
            advice = (f"its next step was finite. Resume it with lower rates, e.g. metajax "
                      f"train --workdir {self.workdir} --resume {lower}")
        raise NonFiniteLossError(f"{metric} is {value} at step {step}; stopped, {self._kept()}; "
                                 + advice)


def evaluate_run(workdir, *, tasks: int = 600, inner_steps: int | None = None,
                 split: str = "test", seed: int = 0, batch: int | None = None,
                 head: str = "learned", freeze=(), bn_stats: str | None = None,
                 checkpoint: int | None = None, model=None, data=None, learner=None,
                 **overrides) -> dict:
    """Scores a checkpoint of a run (default: the newest) on ``tasks`` tasks of ``split``.

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
      checkpoint: the step of the checkpoint to score (default: the newest).
      model, data, learner: the objects the run was trained with, when they were passed to
        :func:`train_and_evaluate` as objects rather than named in its config.
      **overrides: config fields to change, e.g. ``data_dir``.

    Returns:
      A dict with ``accuracy`` (classification) or ``mse`` (regression), ``ci95`` (half-width of
      its 95% confidence interval), ``loss``, and what was evaluated. For a run of several seeds
      (``train_and_evaluate`` with ``cfg.seeds``): the mean over seeds of ``accuracy``/``mse`` and
      ``loss``, their sample standard deviation over seeds (``accuracy_sd``, ...), and each seed's
      own result under ``per_seed``; every seed is scored on the same test tasks.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides.get("data_dir") is not None:
        overrides["data_dir"] = str(Path(overrides["data_dir"]).expanduser().resolve())
    cfg = Config.load(workdir).replace(**overrides)
    options = dict(tasks=tasks, inner_steps=inner_steps, split=split, seed=seed, batch=batch,
                   head=head, freeze=freeze, bn_stats=bn_stats, checkpoint=checkpoint)
    objects = dict(model=model, data=data, learner=learner)
    seeds = cfg.seed_list()
    with jax.default_matmul_precision(cfg.matmul_precision):
        if seeds is None:
            return _evaluate_run(cfg, workdir, _Run(cfg, **objects), **options)
        run = _Run(cfg.for_seed(seeds[0]), **objects)  # one model, data and compiled evaluation
        results = [_evaluate_run(cfg.for_seed(s), seed_dir(workdir, s), run, **options)
                   for s in seeds]
    return _over_seeds(seeds, results)


def _over_seeds(seeds, results: list[dict]) -> dict:
    """Several seeds' evaluations as one: mean and sample sd over seeds of each score."""
    first = results[0]
    summary = {k: v for k, v in first.items()
               if k not in ("accuracy", "mse", "ci95", "loss", "loss_ci95", "checkpoint_step")}
    for name in ("accuracy", "mse", "loss"):
        if name in first:
            values = np.array([r[name] for r in results], dtype=np.float64)
            summary[name] = float(values.mean())
            summary[name + "_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    summary["seeds"] = list(seeds)
    summary["checkpoint_steps"] = [r["checkpoint_step"] for r in results]
    summary["per_seed"] = {str(s): r for s, r in zip(seeds, results)}
    return summary


def _evaluate_run(cfg, workdir, run, *, tasks, inner_steps, split, seed, batch, head, freeze,
                  bn_stats, checkpoint) -> dict:
    if split not in ("val", "test"):
        raise ValueError(f"unknown split {split!r}; use 'test' or 'val'")
    state, step = run.restore(workdir, step=checkpoint)
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



@dataclasses.dataclass
class _Member:
    """One seed's run inside a trainer: its config, run directory, metrics log, validation key."""

    cfg: Config
    workdir: Path
    log: MetricsLog | None
    val_key: jax.Array


def _outer_optimizer(cfg: Config) -> optax.GradientTransformation:
    """The outer optimiser, with a cosine-annealed rate under ``meta_lr_schedule="cosine"``."""
    rate = cfg.meta_lr
    if cfg.meta_lr_schedule == "cosine":
        rate = optax.cosine_decay_schedule(cfg.meta_lr, cfg.steps,
                                           alpha=min(cfg.min_meta_lr / cfg.meta_lr, 1.0))
    if cfg.outer_optimizer == "adam":
        return optax.adam(rate, b2=cfg.adam_b2)
    return optax.sgd(rate)


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
