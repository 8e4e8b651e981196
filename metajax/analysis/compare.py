"""Representational similarity of two trained models on the same inputs (Raghu et al. Table 3).

Both models' meta-initialisations (no adaptation) see each test task's query inputs, sampled
once from the first run's task stream; per layer a metric compares the two activation
matrices, averaged over tasks. The paper reports CCA about 0.5 and CKA about 0.83 between MAML
and ANIL models, as between two MAML models.
"""
from __future__ import annotations

import time

import numpy as np

from metajax.analysis import plots
from metajax.analysis.representations import (layer_names, make_metrics, query_activations_fn,
                                              summarize, task_similarity)


def compare_runs(first, second, *, metrics=("cca", "cka"), tasks: int = 100, seed: int = 0,
                 chunk: int = 20, epsilon: float = 1e-6,
                 steps: tuple[int | None, int | None] = (None, None)) -> dict:
    """Per layer, similarity of two runs' representations of the same test inputs.

    Args:
      first, second: :class:`metajax.analysis.runs.TrainedRun` of the same dataset and task
        shape (ways, shots, image size).
      metrics: names for :func:`metajax.analysis.representations.make_metrics`.
      tasks: test tasks (sampled from ``first``'s stream).
      seed: selects the test tasks.
      chunk: tasks per compiled call.
      epsilon: regulariser of cca/pwcca.
      steps: the checkpoint step of each run (``None``: its newest).

    Raises:
      ValueError: the runs' tasks do not have the same shape, or a run has no checkpoint of
        that step.
    """
    tic = time.perf_counter()
    keys = ("dataset", "ways", "shots", "query")
    if any(getattr(first.cfg, k) != getattr(second.cfg, k) for k in keys):
        raise ValueError("compare needs runs on the same tasks; they differ in " + ", ".join(
            f"{k} ({getattr(first.cfg, k)} vs {getattr(second.cfg, k)})"
            for k in keys if getattr(first.cfg, k) != getattr(second.cfg, k)))
    metric_fns = make_metrics(list(metrics), epsilon=epsilon)
    chosen = [run.steps[-1] if step is None else run.select_steps(str(step))[0]
              for run, step in zip((first, second), steps)]
    params = [run.model_params(run.meta_params(s)) for run, s in zip((first, second), chosen)]
    states = [run.model_state(s) for run, s in zip((first, second), chosen)]
    acts = [query_activations_fn(run.model) for run in (first, second)]
    values, layers = {}, None
    for batch, count in first.task_chunks(tasks, chunk=chunk, seed=seed):
        a, b = (fn(p, batch, s) for fn, p, s in zip(acts, params, states))
        layers = layers or [layer for layer in layer_names(a) if layer in b]
        for name, metric in metric_fns.items():
            for layer in layers:
                values.setdefault(name, {}).setdefault(layer, []).extend(
                    task_similarity(metric, a[layer], b[layer])[:count])
    body = [layer for layer in layers if layer != "head"]
    similarity = {}
    for name, per_layer in values.items():
        similarity[name] = {layer: summarize(v) for layer, v in per_layer.items()}
        # The mean over body layers, task by task: one number per metric, as in Table 3.
        similarity[name]["body_mean"] = summarize(np.mean([per_layer[l] for l in body], axis=0))
    return {
        "study": "compare", "runs": [str(first.workdir), str(second.workdir)],
        "algos": [first.cfg.algo, second.cfg.algo],
        "checkpoint_steps": chosen, "metrics": list(metrics),
        "layers": layers, "tasks": tasks, "seed": seed, "epsilon": epsilon,
        "similarity": similarity, "seconds": time.perf_counter() - tic,
    }


def plot_compare(result: dict, path) -> None:
    """Per metric: similarity per layer and the body mean, 95% CI."""
    categories = result["layers"] + ["body_mean"]
    panels = [{"title": name, "categories": categories, "ylabel": "similarity",
               "series": {" vs ".join(result["algos"]): (
                   [result["similarity"][name][c]["mean"] for c in categories],
                   [result["similarity"][name][c]["ci95"] for c in categories])},
               "ylim": (0, 1.05) if name != "rsa" else None}
              for name in result["metrics"]]
    plots.grouped_bars(path, panels, suptitle=f"{result['runs'][0]} vs {result['runs'][1]} "
                                              f"({result['tasks']} test tasks)")
