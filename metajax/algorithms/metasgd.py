"""Meta-SGD (Li et al. 2017): meta-learn the initialisation and a per-parameter inner rate.

    min_{theta, alpha} L_Q(theta - alpha * grad L_S(theta))      (alpha elementwise, like theta)

The meta-parameters are ``{"params": theta, "inner_lr": alpha}``; alpha starts at ``inner_lr``
everywhere and may become negative.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from metajax.algorithms.base import MetaLearner
from metajax.algorithms.maml import gradient_based_learner
from metajax.algorithms.objectives import Objective


def metasgd(model, objective: Objective, *, inner_lr: float, inner_steps: int,
            first_order: bool = False, mask=None, unroll: int | bool = True,
            remat: bool = False) -> MetaLearner:
    """Meta-SGD; arguments as :func:`metajax.algorithms.maml` (``inner_lr`` is alpha's start)."""
    def init(params):
        return {"params": params,
                "inner_lr": jax.tree_util.tree_map(lambda p: jnp.full_like(p, inner_lr), params)}

    return gradient_based_learner(model, objective, inner_steps=inner_steps,
                                  lr_of=lambda meta: meta["inner_lr"], first_order=first_order,
                                  mask=mask, unroll=unroll, remat=remat, init=init,
                                  params_of=lambda meta: meta["params"])
