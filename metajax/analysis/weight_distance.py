"""How far test-time adaptation moves each layer's weights (Raghu et al. 2020, Appendix D.3, Fig 5).

Per layer l, the mean over tasks b of ``||theta_l - theta'_l^(b)||``: the Euclidean norm of the
change of all of the layer's parameters (kernel, bias, batch-norm scale and offset), between the
meta-initialisation ``theta`` and the parameters adapted to task b. Also reported relative to
``||theta_l||``, since layers differ in size.
"""
from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from metajax.analysis import plots
from metajax.analysis.representations import summarize
from metajax.models.functional import as_model


def _layers(model, params) -> dict:
    """``{"conv1": subtree, ..., "head": subtree}`` of ``params`` (or of a tree of their
    structure): the body's layers in call order (``model.layers``, named by
    ``model.layer_name``), then the head."""
    model = as_model(model)
    layers = {model.layer_name(path): _subtree(params, path) for path in model.layers(params)}
    layers["head"] = _subtree(params, model.head_path(params))
    return layers


def _subtree(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _norm(tree):
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(tree)))


@functools.lru_cache(maxsize=None)
def _distance_fn(model, learner, steps: int):
    """Jitted ``(meta_params, model_state, tasks) -> {layer: (tasks,) distances}``."""
    def one(meta_params, state, task):
        support, _ = task
        init = learner.params_of(meta_params)
        adapted = learner.adapt(meta_params, support, steps, state=state)
        moved = jax.tree_util.tree_map(jnp.subtract, adapted, init)
        return {name: _norm(sub) for name, sub in _layers(model, moved).items()}
    return jax.jit(jax.vmap(one, in_axes=(None, None, 0)))


def weight_distance(trained, *, checkpoints: str = "all", tasks: int = 100,
                    inner_steps: int | None = None, seed: int = 0, chunk: int = 50) -> dict:
    """Per layer, mean distance between the meta-initialisation and the adapted weights.

    Args:
      trained: a :class:`metajax.analysis.runs.TrainedRun`.
      checkpoints: ``"all"``, ``"last"`` or comma-separated steps.
      tasks: number of test tasks.
      inner_steps: test-time adaptation steps (default: the run's ``eval_inner_steps``).
      seed: selects the test tasks.
      chunk: tasks per compiled call.

    Returns:
      A JSON-able dict: per checkpoint, per layer, ``distance`` (mean/std/ci95 over tasks),
      ``init_norm`` and ``relative`` (mean distance / init norm).
    """
    tic = time.perf_counter()
    steps = trained.cfg.eval_inner_steps if inner_steps is None else inner_steps
    distances = _distance_fn(trained.model, trained.learner, steps)
    results, layers = [], None
    for step in trained.select_steps(checkpoints):
        meta, state = trained.meta_params(step), trained.model_state(step)
        init_layers = _layers(trained.model, trained.model_params(meta))
        layers = list(init_layers)
        per_layer = {name: [] for name in layers}
        for batch, count in trained.task_chunks(tasks, chunk=chunk, seed=seed):
            for name, values in distances(meta, state or {}, batch).items():
                per_layer[name].extend(np.asarray(values, np.float64)[:count])
        entry = {"step": step, "layers": {}}
        for name in layers:
            stats = summarize(per_layer[name])
            norm = float(_norm(init_layers[name]))
            entry["layers"][name] = {"distance": stats, "init_norm": norm,
                                     "relative": stats["mean"] / norm if norm else float("nan")}
        results.append(entry)
    return {
        "study": "weight_distance", "run": str(trained.workdir), "algo": trained.cfg.algo,
        "layers": layers, "tasks": tasks, "inner_steps": steps, "inner_lr": trained.cfg.inner_lr,
        "seed": seed, "checkpoints": results, "seconds": time.perf_counter() - tic,
    }


def plot_weight_distance(result: dict, path) -> None:
    """Absolute and relative distance per layer, one bar per checkpoint."""
    absolute, relative = {}, {}
    for entry in result["checkpoints"]:
        label = f"step {entry['step']}"
        stats = [entry["layers"][name] for name in result["layers"]]
        absolute[label] = ([s["distance"]["mean"] for s in stats], [s["distance"]["ci95"] for s in stats])
        relative[label] = ([s["relative"] for s in stats], [0.0] * len(stats))
    plots.grouped_bars(path, [
        {"title": f"||theta - theta'|| after {result['inner_steps']} steps",
         "categories": result["layers"], "series": absolute, "ylabel": "Euclidean distance"},
        {"title": "relative to ||theta||", "categories": result["layers"], "series": relative,
         "ylabel": "distance / norm"},
    ], suptitle=f"{result['algo']}: {result['run']} ({result['tasks']} test tasks)")
