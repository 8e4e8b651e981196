"""Sinusoid regression tasks (Finn et al. 2017, section 5.1).

A task is y = A sin(x - phi) with amplitude A ~ U[0.1, 5], phase phi ~ U[0, pi] and inputs
x ~ U[-5, 5]. It needs no data on disk, so it is the default job on a fresh machine.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, jnp.pi)
INPUT_RANGE = (-5.0, 5.0)


def sample_sinusoid_task(key, *, shots: int, queries: int):
    """Samples one sinusoid regression task.

    Args:
      key: a `jax.random` key.
      shots: number of support points K.
      queries: number of query points.

    Returns:
      ``((support_x, support_y), (query_x, query_y))`` with ``x`` of shape ``(n, 1)`` and ``y`` of
      shape ``(n, 1)``, float32.
    """
    if shots < 1 or queries < 1:
        raise ValueError(f"sinusoid tasks need shots >= 1 and queries >= 1, got shots={shots}, "
                         f"queries={queries}; pass --shots/--query of at least 1")
    k_amp, k_phase, k_x = jax.random.split(key, 3)
    amplitude = jax.random.uniform(k_amp, (), minval=AMPLITUDE_RANGE[0], maxval=AMPLITUDE_RANGE[1])
    phase = jax.random.uniform(k_phase, (), minval=PHASE_RANGE[0], maxval=PHASE_RANGE[1])
    x = jax.random.uniform(k_x, (shots + queries, 1), minval=INPUT_RANGE[0], maxval=INPUT_RANGE[1])
    y = amplitude * jnp.sin(x - phase)
    return (x[:shots], y[:shots]), (x[shots:], y[shots:])
