"""What an algorithm is: a NamedTuple of pure single-task functions (the optax pattern)."""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

PyTree = Any


class MetaLearner(NamedTuple):
    """A meta-learning algorithm, built by a factory that closes over its hyperparameters.

    Every function handles ONE task; the training step vmaps them over the task batch.

    Attributes:
      init: ``init(model_params) -> meta_params``: the meta-learned state (for MAML the
        initialisation itself; algorithms with learned inner rates add them here).
      task_grad: ``task_grad(meta_params, task, step=0) -> (grads, metrics)``: the
        (pseudo-)gradient of the meta-objective for one ``task = (support, query)``, and metrics
        such as ``outer/loss``. ``step`` is the outer step, for objectives annealed over training
        (MAML++'s multi-step loss); others ignore it. The outer optimiser applies the mean over
        tasks.
      adapt: ``adapt(meta_params, support, steps) -> model_params``: test-time adaptation.
      evaluate: ``evaluate(meta_params, task, steps) -> metrics``: adapt on the support set with
        ``steps`` inner steps, no outer gradient, and measure on the query set.
      params_of: ``params_of(meta_params) -> model_params``: the model's initialisation inside
        the meta-parameters (identity unless the algorithm learns more than the init).
      outer: ``outer(optimizer) -> optimizer``: the outer update of these meta-parameters built
        from the chosen optimiser (identity unless some meta-parameters are not learned by
        gradient, e.g. MAML++'s running batch-norm statistics).
    """

    init: Callable[[PyTree], PyTree]
    task_grad: Callable[[PyTree, Any], tuple[PyTree, dict]]
    adapt: Callable[[PyTree, Any, int], PyTree]
    evaluate: Callable[[PyTree, Any, int], dict]
    params_of: Callable[[PyTree], PyTree] = lambda meta_params: meta_params
    outer: Callable[[Any], Any] = lambda optimizer: optimizer
