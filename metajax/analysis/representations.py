"""Layer activations of a model, and how each similarity metric reads them.

Activations come from ``metajax.as_model(model).activations``: the output of every body layer,
named by ``FunctionalModel.layer_name`` (``conv1``.. of Conv4, ``dense1``.. of the MLP,
``Conv_0``, ``BatchNorm_0``.. of a user's module), in the order the forward pass calls them,
then the head's (``head``). A metric sees each layer as an ``(examples, features)`` matrix:

* the CCA family (``cca``, ``svcca``, ``pwcca``) needs more rows than columns, so a conv layer
  ``(n, h, w, c)`` becomes ``(n*h*w, c)``: every spatial position is a data point and the
  channels are the neurons (the convention of google/svcca's tutorial for conv layers);
* CKA and RSA compare examples, so a layer is flattened to ``(n, h*w*c)``.

Activations are computed in evaluation mode (dropout off) with the checkpoint's model state,
on one task's whole input set at once, as in evaluation: batch norm normalises with that
batch's statistics, or with the running averages of the state when the run's ``eval_bn`` is
``running``.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import numpy as np

from metajax.analysis import similarity
from metajax.models.functional import as_model

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
    """The body layers in the dict's order (the forward pass's), then the head."""
    return [k for k in activations if k != "head"] + (["head"] if "head" in activations else [])


def activations(model, params, x, state=None) -> dict:
    """``{layer: activation}`` of ``model`` (a Flax module or ``FunctionalModel``) with ``params``
    and model ``state`` on the batch ``x``, in call order, the head last.

    Layers whose output is not a single array (a tuple, a dict) are left out: no metric reads them.
    """
    acts = as_model(model).activations(params, x, state=state or {})
    return {name: value for name, value in acts.items() if isinstance(value, jax.Array)}


def in_call_order(model, params, acts: dict) -> dict:
    """``acts`` (say, a jitted function's output, whose dicts come back sorted by key) reordered
    as the forward pass calls the layers: ``model.layers(params)``, then the head."""
    model = as_model(model)
    order = [model.layer_name(path) for path in model.layers(params)] + ["head"]
    known = [name for name in order if name in acts]
    return {name: acts[name] for name in known + [k for k in acts if k not in known]}


def query_activations_fn(model):
    """``(model_params, tasks, model_state=None) -> {layer: (tasks, ...)}``: activations on each
    task's queries, one jitted, task-vmapped call (compiled once per model and task shape)."""
    model = as_model(model)
    key = _model_key(model)
    if key not in _QUERY_ACTIVATIONS:
        def one(params, state, task):
            return activations(model, params, task[1][0], state)
        _QUERY_ACTIVATIONS[key] = jax.jit(jax.vmap(one, in_axes=(None, None, 0)))
    jitted = _QUERY_ACTIVATIONS[key]

    def call(params, tasks, state=None):
        return in_call_order(model, params, jitted(params, state or {}, tasks))
    return call


_QUERY_ACTIVATIONS = {}  # _model_key(model) -> jitted activations on the queries of tasks


def _model_key(model):
    """What makes two ``FunctionalModel`` compute the same activations: the module (Flax modules
    compare by their fields) and the head and batch-norm settings; the model itself when these
    are not hashable. Two runs of the same architecture then share their compiled functions."""
    key = (type(model.module), model.module, model.head, model.eval_bn, model.rng_names)
    try:
        hash(key)
    except TypeError:
        return model
    return key


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
