"""Fixed benchmarks for trained runs: ``metajax eval DIR --benchmark omniglot-runs``.

``omniglot-runs`` is the official one-shot benchmark of Lake et al. (``all_runs.zip``): 20 runs of
20-way one-shot classification, each within one alphabet, 400 test drawings in all.

Its tasks are 20-way. A run trained on 20-way tasks is scored with its own learned head. A run
trained on N-way tasks with N != 20 has an N-output head that cannot label 20 classes, and no
20-way head was ever meta-learned, so metajax does not invent one silently; pick one of:

- ``--head nil``: drop the head and classify each test drawing by the cosine similarity of its
  body features to the 20 training drawings (NIL, Raghu et al. 2020); no adaptation, nothing
  made up, so this is the default recommendation;
- ``--head zero``: a zero-initialised 20-way head adapted by the run's own inner loop (all
  classes start equal, so the result does not depend on how classes are numbered). MAML-family
  and ANIL runs only.

Note on held-out characters: the benchmark's characters come from ``images_evaluation.zip``,
while metajax's Omniglot split draws its 1100 training characters from both archives. The
result reports how many of the benchmark's characters were in the run's training split; only
with zero of them is the score a held-out one.
"""
from __future__ import annotations

import hashlib
import math

import jax
import jax.numpy as jnp
import numpy as np

from metajax.algorithms.nil import nil
from metajax.algorithms.registry import make_algorithm
from metajax.data.omniglot import load_omniglot
from metajax.data.omniglot_runs import RUN_WAYS, OmniglotRuns, load_omniglot_runs
from metajax.models.conv import resolve_conv_impl
from metajax.models.functional import as_model
from metajax.models.registry import build_model
from metajax.training.config import Config

__all__ = ["BENCHMARKS", "HEADS", "evaluate_omniglot_runs"]

from metajax.data.names import BENCHMARKS  # noqa: E402,F401 (re-exported)
HEADS = ("learned", "nil", "zero")
# Algorithms whose meta-parameters are exactly the model's params, so a zero head can be put in.
_ZERO_HEAD_ALGOS = ("maml", "fomaml", "anil", "reptile", "multitask", "pretrain")


def evaluate_omniglot_runs(workdir, *, inner_steps: int | None = None, head: str = "learned",
                           data_dir: str | None = None) -> dict:
    """Scores the newest checkpoint of an Omniglot run on the 20 runs of ``all_runs.zip``.

    Args:
      workdir: a run directory written by ``metajax train`` with ``--dataset omniglot``.
      inner_steps: test-time adaptation steps (default: the run's ``eval_inner_steps``).
      head: ``learned`` (needs a run trained 20-way), ``nil`` or ``zero`` (see the module doc).
      data_dir: folder with ``all_runs.zip`` (or its parent); default: the run's data folder.

    Returns:
      A JSON-ready dict: ``accuracy`` over the 400 test drawings, ``ci95`` over the 20 runs,
      ``per_run_accuracy``, ``error_rate``, and ``train_overlap``: how many of the 400 characters
      of the benchmark are in the run's train, val or test split.

    Raises:
      ValueError: the run is not an Omniglot run, or the head cannot serve 20-way tasks.
      DataError: ``all_runs.zip`` is missing or damaged.
      FileNotFoundError: the run has no checkpoint.
    """
    # Imported here: loop imports this package's siblings, and _Run is the one place that turns a
    # config into its model, algorithm and restorable state.
    from metajax.training.loop import _Run

    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; use one of: {', '.join(HEADS)}")
    cfg = Config.load(workdir)
    if cfg.dataset != "omniglot":
        raise ValueError(f"--benchmark omniglot-runs needs a run trained on Omniglot (28x28 "
                         f"greyscale drawings); {workdir} was trained on {cfg.dataset}")
    if data_dir:
        cfg = cfg.replace(data_dir=data_dir)
    if head == "learned" and cfg.ways != RUN_WAYS:
        raise ValueError(
            f"{workdir} was trained {cfg.ways}-way, so its head has {cfg.ways} outputs, but the "
            f"benchmark's tasks are {RUN_WAYS}-way and no {RUN_WAYS}-way head was meta-learned. "
            f"Use --head nil (no head: cosine similarity of body features to the support "
            f"drawings) or --head zero (a zero-initialised {RUN_WAYS}-way head adapted by the "
            f"run's inner loop), or train with --ways {RUN_WAYS}")
    if head == "zero" and cfg.algo not in _ZERO_HEAD_ALGOS:
        raise ValueError(f"--head zero needs an algorithm whose meta-parameters are the model's "
                         f"params ({', '.join(_ZERO_HEAD_ALGOS)}); {cfg.algo} learns more "
                         "(e.g. per-parameter rates for the trained head); use --head nil")
    runs = load_omniglot_runs(cfg.data_dir, image_size=28)

    run = _Run(cfg)
    state, step = run.restore(workdir)
    steps = cfg.eval_inner_steps if inner_steps is None else inner_steps
    learner, meta_params = run.learner, state.params
    if head == "nil":
        learner = nil(learner, run.model, RUN_WAYS)
    elif head == "zero":
        model = as_model(build_model(cfg.model or "conv4", RUN_WAYS, hidden=cfg.hidden,
                                     conv_impl=resolve_conv_impl(cfg.conv_impl, cfg.algo,
                                                                 task_chunk=cfg.task_chunk),
                                     head_input=cfg.head_input,
                                     bn=cfg.bn), head=cfg.head)
        learner = make_algorithm(cfg.algo, model, run.source.objective, inner_lr=cfg.inner_lr,
                                 inner_steps=cfg.inner_steps, unroll=cfg.unroll, ways=RUN_WAYS)
        fresh, _ = model.init(jax.random.PRNGKey(0), jnp.zeros((RUN_WAYS, 28, 28, 1)))
        params = run.learner.params_of(state.params)
        zero_head = jax.tree.map(jnp.zeros_like, model.head_params(fresh))
        meta_params = learner.init(model.replace_head(params, zero_head))

    per_run = np.asarray(_score(learner, meta_params, runs, steps, state.model_state))
    accuracy = float(per_run.mean())
    return {
        "benchmark": "omniglot-runs", "accuracy": accuracy, "error_rate": 1.0 - accuracy,
        "ci95": float(1.96 * per_run.std(ddof=1) / math.sqrt(len(per_run))),
        "per_run_accuracy": [round(float(a), 4) for a in per_run],
        "runs": int(len(per_run)), "ways": RUN_WAYS, "shots": 1, "test_drawings": 400,
        "inner_steps": steps if head != "nil" else 0, "head": head, "checkpoint_step": step,
        "algo": cfg.algo, "trained_ways": cfg.ways,
        "train_overlap": character_overlap(runs, cfg.data_dir),
    }


def _score(learner, meta_params, runs: OmniglotRuns, steps: int, model_state=None):
    """Query accuracy of every run: ``learner.evaluate`` vmapped over the 20 runs."""
    def to_float(x):
        # The same scaling as the episode sampler applies to training images.
        return jnp.asarray(x, jnp.float32) / 255.0

    tasks = ((to_float(runs.support), jnp.asarray(runs.support_labels)),
             (to_float(runs.query), jnp.asarray(runs.query_labels)))
    evaluate = jax.jit(jax.vmap(lambda task: learner.evaluate(meta_params, task, steps,
                                                              state=model_state)))
    return evaluate(tasks)["outer/acc"]


def character_overlap(runs: OmniglotRuns, data_dir) -> dict:
    """How many of the benchmark's 400 characters are in each metajax Omniglot split.

    A benchmark character is found through its training drawing, which is pixel-identical (after
    the shared preprocessing) to one drawing of the official archives.
    """
    splits = load_omniglot(data_dir, rotations=False)
    where = {}
    for name, array in splits._asdict().items():
        for drawing in array.reshape(-1, *array.shape[2:4]):
            where[hashlib.sha1(drawing.tobytes()).digest()] = name
    counts = {"train": 0, "val": 0, "test": 0, "not_found": 0}
    for drawing in runs.support.reshape(-1, *runs.support.shape[2:4]):
        counts[where.get(hashlib.sha1(drawing.tobytes()).digest(), "not_found")] += 1
    return counts
