"""Test-time freezing of contiguous blocks of layers (Raghu et al. 2020, Table 2).

The model is meta-trained as usual; at test time the inner loop leaves layers 1..j of the body
unchanged (j = 0 .. all) and adapts the rest. Accuracy that does not drop as more layers are
frozen means the body's features are reused rather than learned in the inner loop. Each row is
``metajax eval DIR --freeze 1,..,j`` (``metajax.training.loop.evaluate_run``) on the same tasks.
"""
from __future__ import annotations

import time

from metajax.algorithms.base import MetaLearner, supports
from metajax.algorithms.registry import ALGORITHMS, get_factory
from metajax.analysis import plots
from metajax.training.loop import evaluate_run


def freeze_study(trained, *, tasks: int = 600, inner_steps: int | None = None, seed: int = 0,
                 data_dir: str | None = None, checkpoints: str = "last") -> dict:
    """Accuracy with nothing, layer 1, layers 1-2, ... up to the whole body frozen at test time.

    The body's layers are the model's (``FunctionalModel.layers``: ``conv1``.. of Conv4, the
    top-level layers of a user's module but its head), in the order the forward pass calls them.

    Args:
      trained: a :class:`metajax.analysis.runs.TrainedRun` (the objects it was opened with,
        ``model=``/``data=``/``learner=``, are used too).
      tasks: number of test tasks per row (the same tasks for every row).
      inner_steps: test-time adaptation steps (default: the run's ``eval_inner_steps``).
      seed: selects the test tasks.
      data_dir: override the run's data directory.
      checkpoints: the checkpoints scored: ``"last"`` (default), ``"all"`` or ``"1000,2000"``;
        several give the freezing curves over training (Raghu et al. Fig 2 right).

    Returns:
      ``rows`` (one per frozen block) of the newest checkpoint scored, and ``by_step``: the rows
      of every checkpoint scored, ``[{"step", "rows"}, ...]``.

    Raises:
      ValueError: the run's algorithm adapts a fixed part of the model (its factory takes no
        ``mask=``; e.g. ANIL adapts the head only), so there is nothing to freeze.
    """
    _check_maskable(trained)
    tic = time.perf_counter()
    depth = len(trained.model.layers(trained.model_params(trained.initial_meta_params())))
    by_step = []
    for step in trained.select_steps(checkpoints):
        rows = []
        for j in range(depth + 1):
            frozen = [str(i) for i in range(1, j + 1)]
            result = evaluate_run(trained.workdir, tasks=tasks, inner_steps=inner_steps,
                                  seed=seed, freeze=frozen, data_dir=data_dir, checkpoint=step,
                                  **trained.objects)
            rows.append({**result, "block": ",".join(frozen) or "none"})
        by_step.append({"step": step, "rows": rows})
    return {"study": "freeze", "run": str(trained.workdir), "algo": trained.cfg.algo,
            "tasks": tasks, "seed": seed, "rows": by_step[-1]["rows"], "by_step": by_step,
            "seconds": time.perf_counter() - tic}


def _check_maskable(trained) -> None:
    """ValueError unless the run's algorithm can adapt a chosen part (its factory takes mask=)."""
    learner = trained.objects.get("learner")
    algo = trained.cfg.algo
    if isinstance(learner, MetaLearner):
        raise ValueError("--freeze: this run's algorithm was given as a built MetaLearner, "
                         "which cannot be rebuilt with frozen layers; open the run with its "
                         "factory instead (TrainedRun(..., learner=metajax.maml))")
    if learner is not None:
        factory, algo = learner, getattr(learner, "__name__", algo)
    else:
        factory = get_factory(algo)
    if not supports(factory, "mask"):
        maskable = [name for name, f in ALGORITHMS.items() if supports(f, "mask")]
        raise ValueError(f"--freeze: {algo} adapts a fixed part of the model in its inner loop "
                         f"(e.g. ANIL the head only) and its factory takes no mask=, so freezing "
                         f"layers changes nothing; use a run of an algorithm whose factory takes "
                         f"mask=, e.g. {', '.join(maskable)}")


def plot_freeze(result: dict, path) -> None:
    """Accuracy (95% CI) per frozen block; over training, one line per block, when several
    checkpoints were scored."""
    rows = result["rows"]
    metric = "accuracy" if "accuracy" in rows[0] else "mse"
    by_step = result.get("by_step", [])
    if len(by_step) > 1:
        plots.error_lines(path, [{
            "title": f"frozen at test time ({rows[0]['inner_steps']} inner steps)",
            "x": [entry["step"] for entry in by_step],
            "series": {f"frozen: {row['block']}": ([e["rows"][i][metric] for e in by_step],
                                                   [e["rows"][i]["ci95"] for e in by_step])
                       for i, row in enumerate(rows)},
            "xlabel": "training step", "ylabel": metric,
        }], suptitle=f"{result['algo']}: {result['run']} ({result['tasks']} test tasks)")
        return
    plots.grouped_bars(path, [{
        "title": f"frozen at test time ({rows[0]['inner_steps']} inner steps)",
        "categories": [r["block"] for r in rows],
        "series": {metric: ([r[metric] for r in rows], [r["ci95"] for r in rows])},
        "ylabel": metric,
        "ylim": (min(r[metric] - r["ci95"] for r in rows) - 0.02, 1.0) if metric == "accuracy" else None,
    }], suptitle=f"{result['algo']}: {result['run']} ({result['tasks']} test tasks)")
