"""Numerics options for accelerators, checked on the CPU: bfloat16 compute with float32 master
weights, and the matmul precision of float32 matmuls."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metajax
from metajax.algorithms import classification
from metajax.training import Config, read_metrics, train_and_evaluate


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.BatchNorm()(nn.Dense(32)(x)))
        return nn.Dense(3)(x)


def _task():
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    y = jnp.arange(12) % 3
    centres = jax.random.normal(keys[0], (3, 8)) * 2
    xs = centres[y] + 0.3 * jax.random.normal(keys[1], (12, 8))
    return (xs[:6], y[:6]), (xs[6:], y[6:])


def test_bfloat16_compute_keeps_float32_weights_and_matches_float32_to_its_precision():
    task = _task()
    grads = {}
    for dtype in ("float32", "bfloat16"):
        model = metajax.as_model(_Net(), compute_dtype=dtype)
        params, state = model.init(jax.random.PRNGKey(1), task[0][0])
        learner = metajax.maml(model, classification(), inner_lr=0.3, inner_steps=2)
        g, metrics, new_state = jax.jit(learner.task_grad)(params, task, state=state)
        assert metrics["outer/loss"].dtype == jnp.float32
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves((g, new_state)))
        grads[dtype] = g
    flat = lambda t: jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(t)])
    f32, bf16 = flat(grads["float32"]), flat(grads["bfloat16"])
    relative = float(jnp.linalg.norm(bf16 - f32) / jnp.linalg.norm(f32))
    assert 0 < relative < 0.05  # bfloat16 has 8 bits of mantissa: ~1% per operation
    with pytest.raises(ValueError, match="unknown compute dtype"):
        metajax.as_model(_Net(), compute_dtype="float16")


@pytest.mark.parametrize("dtype, precision", [("bfloat16", "default"), ("float32", "high")])
def test_runs_with_numerics_options_train(dtype, precision, tmp_path):
    cfg = Config(steps=30, meta_batch=4, log_every=10, eval_every=30, eval_tasks=4, eval_batch=4,
                 checkpoint_every=30, dtype=dtype, matmul_precision=precision)
    train_and_evaluate(cfg, tmp_path, progress=False)
    losses = [v for _, v in read_metrics(tmp_path)["train/outer/loss"]]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert Config.load(tmp_path).dtype == dtype


@pytest.mark.parametrize("field, value, message", [
    ("dtype", "float16", "unknown --dtype 'float16'"),
    ("matmul_precision", "fastest", "unknown --matmul-precision 'fastest'"),
])
def test_bad_numerics_options_are_clear_errors(field, value, message):
    with pytest.raises(ValueError, match=message):
        Config(**{field: value}).validate()
