"""The train state: one pytree, so it can be jitted, donated and checkpointed whole."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
    """Meta-parameters, outer optimiser state, step counter, RNG key (raw uint32 key data), and
    the model's non-parameter state (stock batch norm's running averages; ``{}`` when none)."""

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    model_state: Any = flax.struct.field(default_factory=dict)


def create_train_state(learner, optimizer, model_params, rng, model_state=None) -> TrainState:
    params = learner.init(model_params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), rng=rng, model_state=model_state or {})
