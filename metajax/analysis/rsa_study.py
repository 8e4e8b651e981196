"""Representational similarity analysis of a meta-trained model (Goerttler & Obermayer, Figs 1, 3).

Three measurements, all with Euclidean RDMs and ``rsa`` = 1 - Spearman(RDMs):

1. to the random initialisation: per layer, the RSA dissimilarity between the representation
   of each test task's query inputs under the meta-initialisation at a checkpoint and under
   the run's random initialisation (their Fig 1a), mean and 95% CI over tasks;
2. to the previous checkpoint: the same between consecutive checkpoints (their Fig 1b used
   checkpoints 1000 steps apart; here whatever the run keeps, the gap is reported);
3. fine-tuning trajectories: one held-out evaluation task's inputs are represented by the
   meta-initialisation (0 steps) and after 1, 5 and 10 inner steps on each of four other tasks,
   at every checkpoint; the matrix of RSA dissimilarities between all these representations and
   its 2-D classical MDS embedding (their Fig 3). The summary compares how far fine-tuning
   moves a representation with how far meta-training moves it between checkpoints.
"""
from __future__ import annotations

import functools
import time

import jax
import numpy as np

from metajax.analysis import plots
from metajax.analysis.representations import (activations, layer_names, make_metrics,
                                              query_activations_fn, summarize, task_similarity)
from metajax.analysis.similarity import rsa_matrix


@functools.lru_cache(maxsize=None)
def _trajectory_fn(model, learner, steps: tuple):
    """Jitted ``(meta, model_state, supports, x) -> [activations after s steps for s in steps]``
    on ``x`` (dicts sorted by layer name, as jitted outputs are).

    ``supports`` has a leading axis over the adaptation tasks; each entry of the list has it too.
    """
    def per_task(meta, state, support, x):
        return [activations(model, learner.adapt(meta, support, s, state=state), x, state)
                for s in steps]
    return jax.jit(jax.vmap(per_task, in_axes=(None, None, 0, None)))


def classical_mds(dissimilarity, dims: int = 2) -> np.ndarray:
    """Torgerson's classical MDS: coordinates whose distances best match ``dissimilarity``.

    ``B = -1/2 J D^2 J`` with the centring ``J = I - 11^T / K``; the coordinates are the top
    ``dims`` eigenvectors of B scaled by the square roots of their (clipped) eigenvalues.
    """
    d = np.asarray(dissimilarity, np.float64)
    k = d.shape[0]
    j = np.eye(k) - np.ones((k, k)) / k
    w, v = np.linalg.eigh(-0.5 * j @ (d ** 2) @ j)
    top = np.argsort(w)[::-1][:dims]
    return v[:, top] * np.sqrt(np.maximum(w[top], 0.0))


def rsa_study(trained, *, checkpoints: str = "all", tasks: int = 50, seed: int = 0,
              adaptation_tasks: int = 4, inner_steps=(1, 5, 10), chunk: int = 25) -> dict:
    """Goerttler & Obermayer's RSA of a meta-trained model; see the module docstring.

    Args:
      trained: a :class:`metajax.analysis.runs.TrainedRun`.
      checkpoints: ``"all"``, ``"last"`` or comma-separated steps.
      tasks: test tasks for measurements 1 and 2.
      seed: selects the test tasks; the evaluation task and the adaptation tasks of
        measurement 3 are the next ``1 + adaptation_tasks`` tasks of the same stream.
      adaptation_tasks: tasks whose fine-tuning trajectories measurement 3 follows.
      inner_steps: inner-step counts of measurement 3 (0 steps is always included).
      chunk: tasks per compiled call.

    Returns:
      A JSON-able dict with ``to_random_init``, ``to_previous_checkpoint`` and ``trajectories``.
    """
    tic = time.perf_counter()
    steps = trained.select_steps(checkpoints)
    rsa = make_metrics(["rsa"])["rsa"]
    model = trained.model
    query_acts = query_activations_fn(model)
    random_init = trained.model_params(trained.initial_meta_params())
    random_state = trained.initial_model_state()
    params = {step: trained.model_params(trained.meta_params(step)) for step in steps}
    states = {step: trained.model_state(step) for step in steps}

    to_init, to_previous, layers = {}, {}, None
    for batch, count in trained.task_chunks(tasks, chunk=chunk, seed=seed):
        reference = query_acts(random_init, batch, random_state)
        layers = layers or layer_names(reference)
        previous = None
        for step in steps:
            current = query_acts(params[step], batch, states[step])
            for layer in layers:
                to_init.setdefault(step, {}).setdefault(layer, []).extend(
                    task_similarity(rsa, current[layer], reference[layer])[:count])
                if previous is not None:
                    to_previous.setdefault(step, {}).setdefault(layer, []).extend(
                        task_similarity(rsa, current[layer], previous[layer])[:count])
            previous = current

    inner_steps = tuple(sorted({int(s) for s in inner_steps} - {0}))
    if not inner_steps or min(inner_steps) < 0:
        raise ValueError(f"--rsa-inner-steps needs positive step counts, got {inner_steps}")
    trajectories = _trajectories(trained, steps, params, states, layers, seed=seed,
                                 first=tasks, count=adaptation_tasks, inner_steps=inner_steps)
    return {
        "study": "rsa", "run": str(trained.workdir), "algo": trained.cfg.algo, "layers": layers,
        "tasks": tasks, "seed": seed, "checkpoint_steps": steps,
        "to_random_init": [{"step": s, "layers": {l: summarize(v) for l, v in to_init[s].items()}}
                           for s in steps],
        "to_previous_checkpoint": [
            {"step": s, "previous": steps[i - 1], "gap": s - steps[i - 1],
             "layers": {l: summarize(v) for l, v in to_previous[s].items()}}
            for i, s in enumerate(steps) if i > 0],
        "trajectories": trajectories, "seconds": time.perf_counter() - tic,
    }


def _trajectories(trained, steps, params, states, layers, *, seed, first, count,
                  inner_steps) -> dict:
    """Measurement 3: representations of one evaluation task along fine-tuning trajectories."""
    evaluation = trained.tasks(1, seed=seed, first=first)
    x_eval = evaluation[1][0][0]
    adapt_tasks = trained.tasks(count, seed=seed, first=first + 1)
    trajectory = _trajectory_fn(trained.model, trained.learner, inner_steps)
    query_acts = query_activations_fn(trained.model)
    labels, reps = [], {layer: [] for layer in layers}
    for step in steps:
        meta = trained.meta_params(step)
        # 0 steps: the same for every task
        start = query_acts(params[step], evaluation, states[step])
        labels.append({"step": step, "task": None, "inner_steps": 0})
        for layer in layers:
            reps[layer].append(np.asarray(start[layer][0]))
        after = trajectory(meta, states[step] or {}, adapt_tasks[0], x_eval)
        for t in range(count):
            for s, acts in zip(inner_steps, after):
                labels.append({"step": step, "task": t, "inner_steps": s})
                for layer in layers:
                    reps[layer].append(np.asarray(acts[layer][t]))
    per_layer, summary = {}, {}
    for layer in layers:
        stacked = np.stack([r.reshape(r.shape[0], -1) for r in reps[layer]])
        matrix = np.asarray(rsa_matrix(stacked), np.float64)
        per_layer[layer] = {"matrix": matrix.tolist(), "mds": classical_mds(matrix).tolist()}
        summary[layer] = _trajectory_summary(matrix, labels, steps)
    return {"evaluation_task": first, "adaptation_tasks": list(range(first + 1, first + 1 + count)),
            "examples": int(x_eval.shape[0]), "labels": labels, "layers": per_layer,
            "summary": summary}


def _trajectory_summary(matrix, labels, steps) -> dict:
    """Mean dissimilarity of s-step representations to their start, and between checkpoints."""
    start = {lab["step"]: i for i, lab in enumerate(labels) if lab["inner_steps"] == 0}
    out = {}
    for s in sorted({lab["inner_steps"] for lab in labels} - {0}):
        out[f"after_{s}_steps_vs_start"] = float(np.mean([
            matrix[i, start[lab["step"]]] for i, lab in enumerate(labels) if lab["inner_steps"] == s]))
    if len(steps) > 1:
        out["start_vs_previous_checkpoint"] = float(np.mean([
            matrix[start[b], start[a]] for a, b in zip(steps, steps[1:])]))
    return out


def plot_rsa(result: dict, path, trajectories_path) -> None:
    """Fig 1 (to random init over checkpoints; to the previous checkpoint) and Fig 3 (RDMs + MDS)."""
    layers = result["layers"]
    panels = [{"title": "RSA to the random initialisation", "x": result["checkpoint_steps"],
               "xlabel": "meta-training step", "ylabel": "RSA dissimilarity",
               "series": {layer: ([e["layers"][layer]["mean"] for e in result["to_random_init"]],
                                  [e["layers"][layer]["ci95"] for e in result["to_random_init"]])
                          for layer in layers}}]
    if result["to_previous_checkpoint"]:
        previous = result["to_previous_checkpoint"]
        panels.append({"title": "RSA to the previous checkpoint", "x": [e["step"] for e in previous],
                       "xlabel": f"meta-training step (gap {previous[0]['gap']})",
                       "ylabel": "RSA dissimilarity",
                       "series": {layer: ([e["layers"][layer]["mean"] for e in previous],
                                          [e["layers"][layer]["ci95"] for e in previous])
                                  for layer in layers}})
    plots.error_lines(path, panels, suptitle=f"{result['algo']}: {result['run']} "
                                             f"({result['tasks']} test tasks)")
    trajectories = result["trajectories"]
    labels = trajectories["labels"]
    start = {lab["step"]: i for i, lab in enumerate(labels) if lab["inner_steps"] == 0}
    paths = []
    for step in result["checkpoint_steps"]:
        for task in {lab["task"] for lab in labels if lab["task"] is not None}:
            members = [i for i, lab in enumerate(labels) if lab["step"] == step and lab["task"] == task]
            paths.append([start[step]] + members)
    plots.rdm_and_mds(trajectories_path, [
        {"name": layer, "matrix": np.asarray(trajectories["layers"][layer]["matrix"]),
         "coords": np.asarray(trajectories["layers"][layer]["mds"]),
         "groups": [f"step {lab['step']}" for lab in labels], "paths": paths,
         "labels": [str(lab["inner_steps"]) for lab in labels]}
        for layer in layers],
        suptitle="one evaluation task, represented after "
                 f"{'/'.join(str(s) for s in sorted({lab['inner_steps'] for lab in labels}))} inner "
                 f"steps on {len(trajectories['adaptation_tasks'])} tasks (dotted: one task's "
                 "trajectory)")
