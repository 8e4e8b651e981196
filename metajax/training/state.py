"""The train state: one pytree, so it can be jitted, donated and checkpointed whole."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
    """Meta-parameters, outer optimiser state, step counter and RNG key (raw uint32 key data)."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def create_train_state(learner, optimizer, model_params, rng) -> TrainState:
    params = learner.init(model_params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), rng=rng)
