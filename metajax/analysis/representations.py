"""Layer activations of a model, and how each similarity metric reads them.

Activations come from ``model.apply(..., return_activations=True)``: ``conv1``.. (or ``dense1``..)
and ``head``. A metric sees each layer as an ``(examples, features)`` matrix:

* the CCA family (``cca``, ``svcca``, ``pwcca``) needs more rows than columns, so a conv layer
  ``(n, h, w, c)`` becomes ``(n*h*w, c)``: every spatial position is a data point and the
  channels are the neurons (the convention of google/svcca's tutorial for conv layers);
* CKA and RSA compare examples, so a layer is flattened to ``(n, h*w*c)``.

Batch norm in these models uses the statistics of the batch at hand, so activations are always
computed on one task's whole input set at once, as in evaluation.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import numpy as np

from metajax.analysis import similarity

CHANNELS, FLAT = "channels", "flat"


class Metric(NamedTuple):
    """A similarity metric as the studies use it: ``fn(x, y)`` on matrices laid out as ``layout``."""

    fn: Callable
    layout: str
    higher_is_similar: bool = True


METRIC_NAMES = ("cca", "svcca", "pwcca", "cka", "cka_debiased", "rbf_cka", "rsa")


@functools.lru_cache(maxsize=None)
def _metric(name: str, epsilon: float) -> Metric:
    # Cached: equal Metric objects let later studies reuse the compiled, task-vmapped metric.
    return {
        "cca": lambda: Metric(functools.partial(similarity.cca, epsilon=epsilon), CHANNELS),
        "svcca": lambda: Metric(similarity.svcca, CHANNELS),
        "pwcca": lambda: Metric(functools.partial(similarity.pwcca, epsilon=epsilon), CHANNELS),
        "cka": lambda: Metric(similarity.linear_cka, FLAT),
        "cka_debiased": lambda: Metric(functools.partial(similarity.linear_cka, debiased=True), FLAT),
        "rbf_cka": lambda: Metric(similarity.rbf_cka, FLAT),
        "rsa": lambda: Metric(similarity.rsa, FLAT, higher_is_similar=False),
    }[name]()


def make_metrics(names, *, epsilon: float = 1e-6) -> dict[str, Metric]:
    """Metrics by name: cca, svcca, pwcca, cka (linear), cka_debiased, rbf_cka, rsa.

    ``epsilon`` regularises ``cca`` and ``pwcca`` (see ``similarity.cca_coefficients``): a
    channel that is zero for a whole task (a dead ReLU) would otherwise make them undefined.
    """
    unknown = [n for n in names if n not in METRIC_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown similarity metric(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(METRIC_NAMES)}")
    return {n: _metric(n, float(epsilon)) for n in names}


def as_matrix(activation, layout: str):
    """One task's activation ``(n, ...)`` as the 2-D matrix a metric of ``layout`` reads."""
    if layout == CHANNELS and activation.ndim > 2:
        return activation.reshape(-1, activation.shape[-1])
    return activation.reshape(activation.shape[0], -1)


def layer_names(activations: dict) -> list[str]:
    """Body layers in order (conv1, conv2, ...), then the head."""
    body = sorted((k for k in activations if k != "head"), key=lambda k: (len(k), k))
    return body + (["head"] if "head" in activations else [])


def activations(model, params, x) -> dict:
    """``{layer: activation}`` of ``model`` with ``params`` on the batch ``x``."""
    return model.apply({"params": params}, x, return_activations=True)[1]


@functools.lru_cache(maxsize=None)
def query_activations_fn(model):
    """Jitted ``(model_params, tasks) -> {layer: (tasks, ...)}``: activations on each task's queries."""
    def one(params, task):
        return activations(model, params, task[1][0])
    return jax.jit(jax.vmap(one, in_axes=(None, 0)))


def task_similarity(metric: Metric, xs, ys) -> np.ndarray:
    """``metric`` between ``xs[t]`` and ``ys[t]`` for every task t: one jitted, vmapped call.

    Args:
      metric: from :func:`make_metrics`.
      xs, ys: activations of one layer, ``(tasks, n, ...)`` each.

    Returns:
      ``(tasks,)`` float64 numpy array.

    Raises:
      ValueError: the metric is ill-posed for some task (from the metric's own check).
    """
    try:
        return np.asarray(_batched(metric)(xs, ys), np.float64)
    except jax.errors.JaxRuntimeError as e:  # the metric's run-time ValueError, re-raised plainly
        message = str(e).strip().splitlines()[-1]
        raise ValueError(message.split("ValueError: ", 1)[-1]) from None


@functools.lru_cache(maxsize=None)
def _batched(metric: Metric):
    """The jitted, task-vmapped metric; cached so that chunks of tasks reuse the compilation."""
    def one(x, y):
        return metric.fn(as_matrix(x, metric.layout), as_matrix(y, metric.layout))
    return jax.jit(jax.vmap(one))


def summarize(values) -> dict:
    """Mean, standard deviation and 95% confidence half-width of per-task values."""
    values = np.asarray(values, np.float64)
    n = values.size
    std = float(values.std(ddof=1)) if n > 1 else float("nan")
    return {"mean": float(values.mean()), "std": std,
            "ci95": 1.96 * std / np.sqrt(n) if n > 1 else float("nan"), "n": int(n)}
