"""How much test-time adaptation changes each layer's representation (Raghu et al. 2020, Fig 2/4).

For every test task, the task's query inputs are passed through the meta-initialisation
``theta`` and through the adapted ``theta'`` (``k`` inner steps on the support set); per layer,
a similarity metric compares the two activation matrices. Averaged over tasks, with a 95%
confidence half-width, at each checkpoint the run holds. Similarities near 1 in the body and
low in the head are the paper's evidence of feature reuse.
"""
from __future__ import annotations

import functools
import time

import jax

from metajax.analysis import plots
from metajax.analysis.representations import (activations, in_call_order, layer_names,
                                              make_metrics, summarize, task_similarity)


@functools.lru_cache(maxsize=None)
def _before_after_jit(model, learner, steps: int):
    def one(meta_params, state, task):
        support, (xq, _) = task
        adapted = learner.adapt(meta_params, support, steps, state=state)
        return (activations(model, learner.params_of(meta_params), xq, state),
                activations(model, adapted, xq, state))
    return jax.jit(jax.vmap(one, in_axes=(None, None, 0)))


def _before_after_fn(model, learner, steps: int):
    """``(meta_params, model_state, tasks) -> (before, after)`` activations on each task's
    queries, in call order; one jitted call, the model state an argument (no recompilation per
    checkpoint)."""
    jitted = _before_after_jit(model, learner, steps)

    def call(meta_params, state, tasks):
        before, after = jitted(meta_params, state or {}, tasks)
        params = learner.params_of(meta_params)
        return in_call_order(model, params, before), in_call_order(model, params, after)
    return call


def similarity_before_after(trained, *, metrics=("cca", "cka"), checkpoints: str = "all",
                            tasks: int = 100, inner_steps: int | None = None, seed: int = 0,
                            chunk: int = 20, epsilon: float = 1e-6) -> dict:
    """Per layer, similarity of activations before vs after test-time adaptation.

    Args:
      trained: a :class:`metajax.analysis.runs.TrainedRun`.
      metrics: names for :func:`metajax.analysis.representations.make_metrics`.
      checkpoints: ``"all"``, ``"last"`` or comma-separated steps.
      tasks: number of test tasks (the fixed stream of ``metajax eval --seed``).
      inner_steps: test-time adaptation steps (default: the run's ``eval_inner_steps``).
      seed: selects the test tasks.
      chunk: tasks per compiled call (bounds memory: conv activations are large).
      epsilon: regulariser of cca/pwcca (dead channels).

    Returns:
      A JSON-able dict: settings, ``layers``, and per checkpoint, per metric, per layer the
      mean, std and ci95 over tasks.
    """
    tic = time.perf_counter()
    steps = trained.cfg.eval_inner_steps if inner_steps is None else inner_steps
    metric_fns = make_metrics(list(metrics), epsilon=epsilon)
    before_after = _before_after_fn(trained.model, trained.learner, steps)
    results, layers, examples = [], None, None
    for step in trained.select_steps(checkpoints):
        meta, state = trained.meta_params(step), trained.model_state(step)
        values = {}
        for batch, count in trained.task_chunks(tasks, chunk=chunk, seed=seed):
            before, after = before_after(meta, state, batch)
            layers = layers or layer_names(before)
            examples = batch[1][0].shape[1]
            for name, metric in metric_fns.items():
                for layer in layers:
                    try:
                        sims = task_similarity(metric, before[layer], after[layer])[:count]
                    except ValueError as e:
                        raise ValueError(f"{name} of layer {layer} at checkpoint {step}: {e}") from None
                    values.setdefault(name, {}).setdefault(layer, []).extend(sims)
        results.append({"step": step, "similarity": {
            name: {layer: summarize(v) for layer, v in per_layer.items()}
            for name, per_layer in values.items()}})
    return {
        "study": "similarity_before_after_adaptation", "run": str(trained.workdir),
        "algo": trained.cfg.algo, "metrics": list(metrics), "layers": layers,
        "tasks": tasks, "inner_steps": steps, "inner_lr": trained.cfg.inner_lr,
        "query_examples_per_task": examples, "seed": seed, "epsilon": epsilon,
        "checkpoints": results, "seconds": time.perf_counter() - tic,
    }


def plot_similarity_before_after(result: dict, path) -> None:
    """One panel per metric: layers on x, one bar per checkpoint, 95% CI error bars."""
    panels = []
    for name in result["metrics"]:
        series = {}
        for entry in result["checkpoints"]:
            stats = [entry["similarity"][name][layer] for layer in result["layers"]]
            series[f"step {entry['step']}"] = ([s["mean"] for s in stats], [s["ci95"] for s in stats])
        similar = name != "rsa"
        panels.append({"title": f"{name} before vs after {result['inner_steps']} inner steps",
                       "categories": result["layers"], "series": series,
                       "ylabel": "similarity" if similar else "RSA dissimilarity",
                       "ylim": (0, 1.05) if similar else None})
    plots.grouped_bars(path, panels, suptitle=f"{result['algo']}: {result['run']} "
                                              f"({result['tasks']} test tasks)")
