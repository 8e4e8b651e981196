"""A trained run directory opened for analysis: config, task sampler, checkpoints, test tasks."""
from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import serialization

from metajax.data.host_stream import host_batch
from metajax.training import checkpoint
from metajax.training.config import Config
from metajax.training.loop import _TEST_STREAM, _Run, refuse_seeds_dir


class TrainedRun:
    """Read-only view of a run written by ``metajax train``.

    Nothing is written into the run directory. Checkpoints are read with msgpack (never
    unpickled), into the structure of the run's own initial train state.

    Attributes:
      workdir: the run directory.
      cfg: its ``Config`` (with the overrides given).
      model, learner: the run's model (a ``metajax.models.functional.FunctionalModel``) and its
        ``MetaLearner``.
      objects: the ``model``/``data``/``learner`` objects given to the constructor (those not
        ``None``), for studies that rebuild the run (``metajax.training.loop.evaluate_run``).
      steps: the steps of the checkpoints it holds, oldest first.
    """

    def __init__(self, workdir, *, query: int | None = None, data_dir: str | None = None,
                 model=None, data=None, learner=None):
        """Opens ``workdir``.

        Args:
          workdir: a run directory (``config.json`` + ``checkpoints/``).
          query: query examples per class of the sampled test tasks (default: the run's). The
            inner loop only sees the support set, so this sets how many inputs the
            representations are measured on, not the adaptation.
          data_dir: override the run's data directory.
          model, data, learner: the objects the run was trained with, when they were passed to
            ``metajax.train_and_evaluate`` as objects rather than named in its config (they are
            not in ``config.json``): a Flax module (or ``metajax.as_model(...)``), the data
            splits or ``TaskSource``, an algorithm factory or ``MetaLearner``.

        Raises:
          FileNotFoundError: not a run directory, or no checkpoint in it.
        """
        self.workdir = Path(workdir)
        overrides = {k: v for k, v in (("query", query), ("data_dir", data_dir)) if v is not None}
        self.cfg = Config.load(self.workdir).replace(**overrides)
        refuse_seeds_dir(self.cfg, self.workdir)
        found = checkpoint.list_checkpoints(self.workdir)
        if not found:
            raise FileNotFoundError(f"no checkpoint in {checkpoint.checkpoint_dir(self.workdir)}; "
                                    "train first with `metajax train --workdir DIR`")
        self._paths = dict(found)
        self.steps = [step for step, _ in found]
        self.objects = {k: v for k, v in (("model", model), ("data", data), ("learner", learner))
                        if v is not None}
        self._loaded = None  # (step, TrainState) of the checkpoint read last

    @functools.cached_property
    def _run(self):
        # Built on first use: loading the dataset takes seconds, and argument errors should not.
        return _Run(self.cfg, **self.objects)

    @functools.cached_property
    def _template(self):
        # Initialising the model also records its layers' call order and finds its head.
        return self._run.initial_state()

    @property
    def model(self):
        """The run's ``FunctionalModel`` (initialised: its layers are known in call order)."""
        self._template  # noqa: B018 (initialises the model once)
        return self._run.model

    @property
    def learner(self):
        return self._run.learner

    @property
    def classification(self) -> bool:
        return self.cfg.dataset != "sinusoid"

    def select_steps(self, spec: str = "all") -> list[int]:
        """Checkpoint steps named by ``spec``: ``"all"``, ``"last"`` or ``"1000,2000"``."""
        if spec == "all":
            return list(self.steps)
        if spec == "last":
            return [self.steps[-1]]
        try:
            wanted = [int(s) for s in spec.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"--checkpoints {spec!r}: use all, last or comma-separated steps") from None
        missing = [s for s in wanted if s not in self._paths]
        if missing or not wanted:
            raise ValueError(f"--checkpoints {spec!r}: {self.workdir} holds checkpoints at steps "
                             f"{', '.join(map(str, self.steps))} (set keep_checkpoints in the "
                             "training config to keep more)")
        return wanted

    def _state(self, step: int):
        if self._loaded is None or self._loaded[0] != step:
            state = serialization.from_bytes(self._template, self._paths[step].read_bytes())
            self._loaded = (step, state)
        return self._loaded[1]

    def meta_params(self, step: int):
        """The meta-parameters saved at ``step``."""
        return self._state(step).params

    def model_state(self, step: int):
        """The model's state saved at ``step`` (stock batch norm's running averages; ``{}`` for a
        model without state)."""
        return self._state(step).model_state

    def initial_meta_params(self):
        """The meta-parameters before the first meta-step: the run's random initialisation."""
        return self._template.params

    def initial_model_state(self):
        """The model's state before the first meta-step (``{}`` for a model without state)."""
        return self._template.model_state

    def model_params(self, meta_params):
        """The model's parameters (the initialisation) inside the meta-parameters."""
        return self.learner.params_of(meta_params)

    def tasks(self, num: int, *, seed: int = 0, split: str = "test", first: int = 0):
        """Tasks ``first .. first + num - 1`` of the fixed stream of ``split`` tasks for ``seed``.

        The stream is the one ``metajax eval --seed`` scores, so the same seed gives the same
        tasks (with the run's query size). Returns ``(support, query)`` with a leading task axis.
        """
        data = self._run.source.splits[split]
        key = jax.random.fold_in(jax.random.PRNGKey(seed), _TEST_STREAM)
        keys = jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.arange(first, first + num))
        if self._run.source.placement == "host":  # the split stays in host memory, as in eval
            cfg = self.cfg
            return jax.device_put(host_batch(data, keys, ways=cfg.ways, shots=cfg.shots,
                                             queries=cfg.query))
        return _sample_tasks(self._run.source.sample, keys, data)

    def task_chunks(self, num: int, *, chunk: int, seed: int = 0, split: str = "test"):
        """Yields ``(tasks, count)``: the first ``num`` tasks in batches of exactly ``chunk``.

        The last batch is filled up with the tasks that follow, so every batch has one shape
        (one compilation); only its first ``count`` tasks belong to the ``num``.
        """
        for first in range(0, num, chunk):
            yield self.tasks(chunk, seed=seed, split=split, first=first), min(chunk, num - first)


@functools.partial(jax.jit, static_argnums=0)
def _sample_tasks(sample, keys, data):
    return jax.vmap(sample, in_axes=(0, None))(keys, data)
