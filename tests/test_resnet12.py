"""ResNet-12: structure (eval_shape only for the standard widths), train/eval batch norm, dropout,
gradients, registry."""
from __future__ import annotations

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.models import ResNet12, build_model, init_params, resnet12_widths
from metajax.models.registry import MODELS

BLOCKS = ("block1", "block2", "block3", "block4")
BLOCK_LAYERS = {"conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "shortcut_conv", "shortcut_bn"}
H = 4  # widths (4, 10, 20, 40)


def _images(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape)


@pytest.fixture(scope="module")
def small():
    model = build_model("resnet12", 5, hidden=H)
    x = _images((6, 28, 28, 1))
    return model, x, model.init(jax.random.key(1), x)


def test_widths_rule():
    assert resnet12_widths() == (64, 160, 320, 640)
    assert resnet12_widths(64) == (64, 160, 320, 640)
    assert resnet12_widths(4) == (4, 10, 20, 40)
    assert resnet12_widths(5) == (5, 13, 25, 50)  # 2.5 * 5 = 12.5 rounds up
    with pytest.raises(ValueError):
        resnet12_widths(0)


def test_standard_structure_by_eval_shape():
    model = build_model("resnet12", 5)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((2, 84, 84, 3), jnp.float32))
    params, stats = shapes["params"], shapes["batch_stats"]
    assert set(params) == {"body", "head"} and set(stats) == {"body"}
    assert set(params["body"]) == set(BLOCKS) == set(stats["body"])
    c_in = 3
    for name, width in zip(BLOCKS, (64, 160, 320, 640)):
        block = params["body"][name]
        assert set(block) == BLOCK_LAYERS
        assert set(block["conv1"]) == {"kernel"}  # no bias
        assert block["conv1"]["kernel"].shape == (3, 3, c_in, width)
        assert block["conv2"]["kernel"].shape == (3, 3, width, width)
        assert block["conv3"]["kernel"].shape == (3, 3, width, width)
        assert block["shortcut_conv"]["kernel"].shape == (1, 1, c_in, width)
        for bn in ("bn1", "bn2", "bn3", "shortcut_bn"):
            assert {k: v.shape for k, v in block[bn].items()} == {"scale": (width,), "bias": (width,)}
            assert {k: v.shape for k, v in stats["body"][name][bn].items()} == {"mean": (width,), "var": (width,)}
        c_in = width
    assert params["head"]["kernel"].shape == (640, 5)
    n_params = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
    # convs 3x3 (3 per block) + 1x1 shortcut + BN scale/bias (4 per block) + head.
    expected = 0
    c_in = 3
    for w in (64, 160, 320, 640):
        expected += 9 * c_in * w + 2 * 9 * w * w + c_in * w + 4 * 2 * w
        c_in = w
    expected += 640 * 5 + 5
    assert n_params == expected == 12_427_525
    out = jax.eval_shape(lambda v, x: model.apply(v, x, mutable=["batch_stats"])[0], shapes,
                         jax.ShapeDtypeStruct((2, 84, 84, 3), jnp.float32))
    assert out.shape == (2, 5)


@pytest.mark.parametrize("shape", [(3, 84, 84, 3), (3, 32, 32, 3), (3, 28, 28, 1)])
def test_output_and_embedding_shapes(shape):
    model = build_model("resnet12", 5, hidden=H)
    x = _images(shape)
    variables = model.init(jax.random.key(0), x)
    out, _ = model.apply(variables, x, mutable=["batch_stats"])
    assert out.shape == (3, 5)
    feats, _ = model.apply(variables, x, method="embed", mutable=["batch_stats"])
    assert feats.shape == (3, 10 * H)
    (out2, acts), _ = model.apply(variables, x, return_activations=True, mutable=["batch_stats"])
    assert set(acts) == set(BLOCKS) | {"head"}
    side = shape[1]
    for name, width in zip(BLOCKS, resnet12_widths(H)):
        side //= 2
        assert acts[name].shape == (3, side, side, width)
    np.testing.assert_allclose(out2, out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.apply({"params": variables["params"]}, feats, method="apply_head"),
                               out, rtol=1e-5, atol=1e-5)


def test_train_mode_updates_running_stats(small):
    model, x, variables = small
    stats0 = variables["batch_stats"]
    _, updated = model.apply(variables, x, mutable=["batch_stats"])
    stats1 = updated["batch_stats"]
    assert jax.tree.structure(stats1) == jax.tree.structure(stats0)
    for a, b in zip(jax.tree.leaves(stats0), jax.tree.leaves(stats1)):
        assert not np.allclose(a, b)
    # momentum 0.9: mean <- 0.9 * 0 + 0.1 * batch mean of the first conv's output.
    y = jax.lax.conv_general_dilated(x, variables["params"]["body"]["block1"]["conv1"]["kernel"], (1, 1),
                                     "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(stats1["body"]["block1"]["bn1"]["mean"], 0.1 * y.mean(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-6)
    # Train mode without a mutable batch_stats is refused by stock BatchNorm.
    with pytest.raises(Exception):
        model.apply(variables, x)


def test_train_mode_uses_batch_statistics(small):
    model, x, variables = small
    full, _ = model.apply(variables, x, mutable=["batch_stats"])
    part, _ = model.apply(variables, x[:3], mutable=["batch_stats"])
    assert not np.allclose(full[:3], part, atol=1e-4)


def test_eval_mode_uses_running_averages(small):
    model, x, variables = small
    # Running stats moved away from their (0, 1) init, so eval differs from a fresh net.
    _, updated = model.apply(variables, x, mutable=["batch_stats"])
    trained = {"params": variables["params"], "batch_stats": updated["batch_stats"]}
    eval_model = model.clone(train=False)
    full = eval_model.apply(trained, x)  # immutable batch_stats: nothing is written
    for i in range(len(x)):
        np.testing.assert_allclose(eval_model.apply(trained, x[i:i + 1])[0], full[i], rtol=1e-4, atol=1e-5)
    mixed = jnp.concatenate([x[:1], _images((5, 28, 28, 1), seed=7)])
    np.testing.assert_allclose(eval_model.apply(trained, mixed)[0], full[0], rtol=1e-4, atol=1e-5)
    # Eval mode reads the running averages: other stats give other outputs.
    assert not np.allclose(eval_model.apply(variables, x), full, atol=1e-4)


@contextlib.contextmanager
def _force_eval():
    """Flips BatchNorm / Dropout to eval mode the way a caller can: clear the constructor
    attribute and pass the value as the call keyword."""
    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and isinstance(module, (nn.BatchNorm, nn.Dropout)):
            attr = "use_running_average" if isinstance(module, nn.BatchNorm) else "deterministic"
            old = getattr(module, attr)
            object.__setattr__(module, attr, None)
            try:
                return next_fun(*args, **{**kwargs, attr: True})
            finally:
                object.__setattr__(module, attr, old)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        yield


def test_mode_can_be_flipped_by_interception():
    model = ResNet12(5, resnet12_widths(H), dropout=0.5)
    x = _images((4, 28, 28, 1))
    variables = model.init(jax.random.key(0), x)
    _, updated = model.apply(variables, x, mutable=["batch_stats"], rngs={"dropout": jax.random.key(3)})
    trained = {"params": variables["params"], "batch_stats": updated["batch_stats"]}
    with _force_eval():
        intercepted = model.apply(trained, x)
    np.testing.assert_allclose(intercepted, model.clone(train=False).apply(trained, x), rtol=1e-5, atol=1e-6)


def test_dropout():
    model = ResNet12(5, resnet12_widths(H), dropout=0.5)
    x = _images((4, 28, 28, 1))
    params = init_params(model, jax.random.key(0), x)  # no dropout RNG needed to initialise
    variables = model.init(jax.random.key(0), x)
    assert set(variables["params"]) == set(params) == {"body", "head"}

    def run(key):
        return model.apply(variables, x, mutable=["batch_stats"], rngs={"dropout": key})[0]

    assert not np.allclose(run(jax.random.key(1)), run(jax.random.key(2)))
    with pytest.raises(Exception):  # active dropout needs its RNG
        model.apply(variables, x, mutable=["batch_stats"])
    eval_model = model.clone(train=False)
    np.testing.assert_allclose(eval_model.apply(variables, x),
                               ResNet12(5, resnet12_widths(H), train=False).apply(variables, x), rtol=1e-6)


def test_grad_is_finite_and_correct(small):
    """Jitted gradient: finite, nonzero, and its projection on a random direction matching
    forward mode's (``jax.jvp``, a different code path), under the suite's XLA opt level 0, where
    max_pool_2x2's gradient went NaN in this network. (A finite difference is no check here:
    in float32 it crosses LeakyReLU / max kinks; in float64 it agrees, but takes ~40 s.)"""
    model, x, variables = small
    labels = jnp.arange(len(x)) % 5

    @jax.jit
    def loss(params):
        out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                             mutable=["batch_stats"])
        logp = jax.nn.log_softmax(out)
        return -jnp.take_along_axis(logp, labels[:, None], axis=1).mean()

    params = variables["params"]
    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(value)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    leaves = jax.tree.leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert all(np.any(g != 0) for g in leaves)

    keys = jax.random.split(jax.random.key(5), len(leaves))
    direction = jax.tree.unflatten(jax.tree.structure(params),
                                   [jax.random.normal(k, g.shape) for k, g in zip(keys, leaves)])
    forward = jax.jit(lambda p, d: jax.jvp(loss, (p,), (d,))[1])(params, direction)
    projected = sum(jnp.vdot(g, d) for g, d in zip(leaves, jax.tree.leaves(direction)))
    assert abs(float(forward)) > 1e-2
    np.testing.assert_allclose(float(projected), float(forward), rtol=1e-4)


def test_registry():
    assert "resnet12" in MODELS
    model = build_model("resnet12", 5)
    assert isinstance(model, ResNet12) and tuple(model.widths) == (64, 160, 320, 640)
    assert model.num_outputs == 5 and model.train and model.dropout == 0.0
    assert tuple(build_model("resnet12", 3, hidden=8, conv_impl="xla").widths) == (8, 20, 40, 80)
    params = init_params(build_model("resnet12", 5, hidden=H), jax.random.key(0), _images((2, 28, 28, 1)))
    assert set(params) == {"body", "head"} and params["head"]["kernel"].shape == (10 * H, 5)
