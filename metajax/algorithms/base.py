"""What an algorithm is: a NamedTuple of pure single-task functions (the optax pattern).

Writing an algorithm needs only public API: :class:`MetaLearner` (this file),
``metajax.as_model`` (a Flax module as pure ``apply``/``embed``/``apply_head`` functions with its
batch-norm state and dropout keys), ``metajax.core.inner_loop`` (``lax.scan`` over ``grad``),
``metajax.task_metrics`` (the standard ``outer/*`` and ``inner/*`` metrics) and
:func:`task_keys` (the RNG keys of one task). ``metajax/algorithms/protonets.py``,
``protomaml.py`` and ``boil.py`` are written that way.

What an algorithm supports is declared by its factory's keyword arguments, read with
:func:`supports`: ``mask`` (the inner loop adapts a chosen part: test-time freezing, BOIL),
``remat`` (rematerialised inner steps), ``first_order`` (derivative-order annealing).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple

import jax

PyTree = Any


class MetaLearner(NamedTuple):
    """A meta-learning algorithm, built by a factory that closes over its hyperparameters.

    Every function handles ONE task; the training step maps them over the task batch. ``key`` is
    the task's RNG key (dropout; ``None`` for deterministic models) and ``state`` the model's
    non-parameter state (stock batch norm's running averages; ``{}`` or ``None`` when it has none).

    Attributes:
      init: ``init(model_params) -> meta_params``: the meta-learned state (for MAML the
        initialisation itself; algorithms with learned inner rates add them here).
      task_grad: ``task_grad(meta_params, task, step=0, *, key=None, state=None) -> (grads,
        metrics, state)``: the (pseudo-)gradient of the meta-objective for one
        ``task = (support, query)``, metrics such as ``outer/loss``, and the model state after the
        task (the running averages updated by the training-mode query pass). ``step`` is the outer
        step, for objectives annealed over training (MAML++'s multi-step loss). The training step
        applies the mean of ``grads`` over tasks and keeps the mean of the states.
      adapt: ``adapt(meta_params, support, steps, *, key=None, state=None) -> model_params``:
        test-time adaptation.
      evaluate: ``evaluate(meta_params, task, steps, *, key=None, state=None) -> metrics``: adapt
        on the support set with ``steps`` inner steps, no outer gradient, and measure on the query
        set (dropout off; batch norm as the model's ``eval_bn`` says).
      params_of: ``params_of(meta_params) -> model_params``: the model's initialisation inside
        the meta-parameters (identity unless the algorithm learns more than the init).
      outer: ``outer(optimizer) -> optimizer``: the outer update of these meta-parameters built
        from the chosen optimiser (identity unless some meta-parameters are not learned by
        gradient, e.g. MAML++'s running batch-norm statistics).
    """

    init: Callable[[PyTree], PyTree]
    task_grad: Callable[..., tuple[PyTree, dict, PyTree]]
    adapt: Callable[..., PyTree]
    evaluate: Callable[..., dict]
    params_of: Callable[[PyTree], PyTree] = lambda meta_params: meta_params
    outer: Callable[[Any], Any] = lambda optimizer: optimizer


def task_keys(key, count: int = 2):
    """``count`` independent keys from a task's key (``None`` stays ``None``, for models without
    randomness). E.g. ``inner, query = task_keys(key)``: inner step ``t`` then draws from
    ``fold_in(inner, t)`` (``metajax.core.inner_loop`` does this), the query pass from ``query``.
    """
    if key is None:
        return (None,) * count
    return tuple(jax.random.split(key, count))


# Arguments every algorithm factory is called with, or that the training loop sets itself.
COMMON_ARGUMENTS = ("model", "objective", "inner_lr", "inner_steps", "unroll", "mask", "remat",
                    "first_order", "ways")


def declared_options(factory: Callable) -> dict:
    """``{name: default}``: the algorithm's own options, the keyword arguments of its factory
    beyond :data:`COMMON_ARGUMENTS` (e.g. MAML++'s ``msl``, Reptile's ``inner_batch``). The CLI
    turns each into a flag (``--msl true``) and ``Config.options`` holds the values."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters
            if p.name not in COMMON_ARGUMENTS and p.default is not p.empty
            and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def trains_on(factory: Callable) -> str:
    """What an algorithm's training steps draw, as its factory declares (``factory.trains_on``):
    ``"tasks"`` (episodes; the default) or ``"class_batches"`` (class-labelled batches of the
    whole training split, the model having one output per training class: multiclass)."""
    return getattr(factory, "trains_on", "tasks")


def supports(factory: Callable, option: str) -> bool:
    """Whether an algorithm factory takes the keyword ``option`` (``mask``, ``remat``, ...)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return option in parameters
