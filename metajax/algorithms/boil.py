"""BOIL, Body Only update in Inner Loop (Oh et al. 2021): the inverse of ANIL.

The inner loop adapts every parameter except the head's; the head is meta-learned in the outer
loop only. Written on the public API only: BOIL is MAML with a mask, here a function of the params
(``model.head_mask`` inverted), combined with a user's ``mask`` (test-time freezing) by AND.
"""
from __future__ import annotations

import jax

from metajax.algorithms.base import MetaLearner
from metajax.algorithms.maml import gradient_based_learner
from metajax.algorithms.objectives import Objective
from metajax.core.partition import broadcast_mask
from metajax.models.functional import as_model


def boil(model, objective: Objective, *, inner_lr: float, inner_steps: int,
         first_order: bool = False, mask=None, unroll: int | bool = True,
         remat: bool = False) -> MetaLearner:
    """BOIL: MAML whose inner loop adapts the body only.

    Args:
      model: a Flax module (or ``metajax.as_model(module, head=...)``); its head stays fixed in
        the inner loop.
      mask: further params not to adapt (``False`` leaves), e.g. frozen body layers.
      Others: as ``metajax.maml``.
    """
    model = as_model(model)

    def body_mask(params):
        body = jax.tree_util.tree_map(lambda on_head: not on_head, model.head_mask(params))
        if mask is None:
            return body
        return jax.tree_util.tree_map(lambda a, b: a and b, body, broadcast_mask(mask, params))

    return gradient_based_learner(model, objective, inner_steps=inner_steps,
                                  lr_of=lambda meta: inner_lr, first_order=first_order,
                                  mask=body_mask, unroll=unroll, remat=remat)
