"""Proto-MAML (Triantafillou et al. 2020), written on metajax's public API only.

MAML whose linear head is initialised, for each task, from the class prototypes of the support
set, c_k = mean_{y_i = k} f(x_i):

    W_k = 2 c_k,    b_k = -||c_k||^2,

so that before adaptation the head scores a query as ProtoNets does (-||f(x) - c_k||^2 up to a
term constant in k). The inner loop then adapts the network with that head by SGD, and the
meta-gradient flows through the adapted weights AND through the prototypes into the body. The
model's own head params are replaced and so receive no gradient. The head must be a Dense layer
(``kernel`` (F, N), ``bias`` (N,)); N gives the number of classes.
"""
from __future__ import annotations

from metajax.algorithms.base import MetaLearner
from metajax.algorithms.maml import gradient_based_learner
from metajax.algorithms.objectives import Objective
from metajax.algorithms.protonets import prototypes
from metajax.checks import check_labels
from metajax.models.functional import as_model


def protomaml(model, objective: Objective, *, inner_lr: float, inner_steps: int,
              first_order: bool = False, mask=None, unroll: int | bool = True,
              remat: bool = False) -> MetaLearner:
    """Proto-MAML; arguments as ``metajax.maml`` (``mask``: which params the inner loop adapts)."""
    model = as_model(model)

    def prototype_head(params, support, *, key, state, train):
        xs, ys = support
        # The labels index the prototypes, whatever the objective: integer classes.
        check_labels(ys, "support labels", "protomaml", "classification")
        head = model.head_params(params)
        if not (isinstance(head, dict) and set(head) == {"kernel", "bias"}):
            raise ValueError("protomaml needs a Dense head (params 'kernel' and 'bias'); this "
                             f"model's head has {sorted(head) if isinstance(head, dict) else head}")
        features, _ = model.embed(params, xs, state=state, key=key, train=train)
        protos, _ = prototypes(features.reshape(features.shape[0], -1), ys,
                               head["kernel"].shape[-1])
        return model.replace_head(params, {"kernel": 2 * protos.T,
                                           "bias": -(protos ** 2).sum(-1)})

    return gradient_based_learner(model, objective, inner_steps=inner_steps,
                                  lr_of=lambda meta: inner_lr, first_order=first_order,
                                  mask=mask, unroll=unroll, remat=remat,
                                  task_start=prototype_head)
