"""Backbones: params layout, patch convolutions against XLA's, batch norm, activations."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.models import batch_norm, build_model, conv3x3, init_params, max_pool_2x2


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(7, 9), (8, 8), (28, 28)])
def test_patch_conv_equals_xla_conv(stride, size):
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(k1, (2, *size, 3))
    kernel = jax.random.normal(k2, (3, 3, 3, 5))
    np.testing.assert_allclose(conv3x3(x, kernel, stride=stride),
                               conv3x3(x, kernel, stride=stride, impl="xla"), rtol=1e-5, atol=1e-5)


def test_max_pool_matches_reduce_window_and_drops_odd_edge():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 7, 3))
    want = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    np.testing.assert_array_equal(max_pool_2x2(x), want)


def test_max_pool_derivatives_match_reduce_window_to_second_order():
    # Differentiated, the pool switches formulation (a custom JVP); its first and second
    # derivatives must still be reduce_window's. Distinct values: no ties in any window.
    x = jax.random.permutation(jax.random.PRNGKey(1), jnp.arange(2 * 5 * 7 * 3.0)).reshape(2, 5, 7, 3)
    ref = lambda v: jax.lax.reduce_window(v, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1),
                                          "VALID")
    weights = jax.random.normal(jax.random.PRNGKey(2), (2, 2, 3, 3))

    def loss(pool):
        return lambda v: jnp.sum(jnp.sin(pool(v)) * weights)

    np.testing.assert_allclose(jax.grad(loss(max_pool_2x2))(x), jax.grad(loss(ref))(x), atol=1e-6)
    direction = jax.random.normal(jax.random.PRNGKey(3), x.shape)
    hvp = lambda f: jax.jvp(jax.grad(f), (x,), (direction,))[1]
    np.testing.assert_allclose(hvp(loss(max_pool_2x2)), hvp(loss(ref)), atol=1e-6)
    np.testing.assert_allclose(jax.jit(max_pool_2x2)(x), ref(x))


def test_batch_norm_uses_current_batch_statistics():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 2)) * 5 + 3
    y = batch_norm(x, jnp.ones(2), jnp.zeros(2))
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1, atol=1e-3)


def test_batch_norm_folded_form_keeps_float32_precision_at_large_mean():
    # |mean| / std = 10, beyond the Conv4s' 4.1 at initialisation: the folded x*a + (o - m*a)
    # stays within a few float32 epsilons of the centred form computed in float64.
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (8, 5, 5, 3))) * 0.3 + 3.0
    scale, offset = np.array([0.5, 1.0, 2.0]), np.array([0.1, -0.2, 0.0])
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    exact = (x - mean) / np.sqrt(var + 1e-5) * scale + offset
    y = batch_norm(jnp.float32(x), jnp.float32(scale), jnp.float32(offset))
    assert np.abs(np.asarray(y, np.float64) - exact).max() < 2e-5


@pytest.mark.parametrize("name, shape, features", [("conv4", (28, 28, 1), 256),
                                                   ("conv4-pool", (84, 84, 3), 800)])
def test_conv4_layout_features_and_activations(name, shape, features):
    model = build_model(name, 5)
    x = jnp.ones((3, *shape))
    params = init_params(model, jax.random.PRNGKey(0), x)
    assert set(params) == {"body", "head"}
    assert set(params["body"]) == {"conv1", "conv2", "conv3", "conv4"}
    logits, acts = model.apply({"params": params}, x, return_activations=True)
    assert logits.shape == (3, 5) and set(acts) == {"conv1", "conv2", "conv3", "conv4", "head"}
    feats = model.apply({"params": {"body": params["body"]}}, x, method="embed")
    assert feats.shape == (3, features)
    np.testing.assert_allclose(model.apply({"params": {"head": params["head"]}}, feats,
                                           method="apply_head"), logits, rtol=1e-5, atol=1e-6)
    width = 64 if name == "conv4" else 32
    assert params["body"]["conv4"]["kernel"].shape == (3, 3, width, width)


def test_patch_and_xla_models_agree():
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 28, 28, 1))
    fast, ref = build_model("conv4", 5, hidden=8), build_model("conv4", 5, hidden=8, conv_impl="xla")
    params = init_params(fast, jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(fast.apply({"params": params}, x), ref.apply({"params": params}, x),
                               rtol=1e-4, atol=1e-5)


def test_mlp_layout():
    model = build_model("mlp", 1)
    params = init_params(model, jax.random.PRNGKey(0), jnp.zeros((5, 1)))
    assert set(params) == {"body", "head"} and params["body"]["dense2"]["kernel"].shape == (40, 40)
    out, acts = model.apply({"params": params}, jnp.zeros((5, 1)), return_activations=True)
    assert out.shape == (5, 1) and set(acts) == {"dense1", "dense2", "head"}


def test_unknown_model_and_conv_impl_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        build_model("resnet", 5)
    with pytest.raises(ValueError, match="unknown conv_impl"):
        conv3x3(jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1)), impl="fft")


def test_pool_gradient_is_the_same_jitted_and_eager():
    # Guards against the XLA:CPU miscompile seen at LLVM optimisation level 0 (see conftest):
    # the jitted gradient of the pool after an elementwise op must equal the eager one.
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3))
    w = jax.random.normal(jax.random.PRNGKey(1), (4, 4, 4, 3))
    f = lambda v: jnp.sum(max_pool_2x2(jax.nn.relu(v * 1.3 + 0.1)) * w)
    with jax.disable_jit():
        eager = jax.grad(f)(x)
    np.testing.assert_allclose(jax.jit(jax.grad(f))(x), eager, rtol=1e-6, atol=1e-6)


def test_conv4_head_input_pool_averages_the_conv4_map():
    import jax
    import jax.numpy as jnp

    from metajax.models.functional import as_model
    from metajax.models.registry import build_model

    x = jax.random.normal(jax.random.PRNGKey(0), (3, 28, 28, 1))
    pooled = as_model(build_model("conv4", 5, hidden=8, head_input="pool"))
    flat = as_model(build_model("conv4", 5, hidden=8))
    params, _ = pooled.init(jax.random.PRNGKey(1), x)
    flat_params, _ = flat.init(jax.random.PRNGKey(1), x)
    assert params["head"]["kernel"].shape == (8, 5)  # the head sees `hidden` features
    assert flat_params["head"]["kernel"].shape == (8 * 2 * 2, 5)
    # the same body: the pooled features are the flattened map's spatial mean
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(jnp.array_equal, params["body"],
                                                         flat_params["body"]))
    flat_features = flat.embed(flat_params, x)[0].reshape(3, 2, 2, 8)
    assert jnp.allclose(pooled.embed(params, x)[0], flat_features.mean(axis=(1, 2)), atol=1e-6)
    with pytest.raises(ValueError, match="--head-input pool is an option of the conv4 models"):
        build_model("mlp", 1, head_input="pool")


def test_conv_block_folds_its_bias_into_batch_norm_exactly():
    from metajax.models.layers import ConvBlock, batch_moments, batch_norm, conv3x3
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.PRNGKey(0), (4, 9, 9, 3), jnp.float64)
        block = ConvBlock(features=5, downsample="stride")
        params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64),
                                        block.init(jax.random.PRNGKey(1), x))
        p = params["params"]
        p = {**p, "bias": jnp.linspace(-2.0, 3.0, 5), "offset": jnp.linspace(0.5, -0.5, 5),
             "scale": jnp.linspace(0.5, 2.0, 5)}

        def reference(p, stats=None):  # BN(conv + bias), the bias added at full size
            y = conv3x3(x, p["kernel"], stride=2) + p["bias"]
            mean, var = stats if stats is not None else batch_moments(y)
            return jax.nn.relu(batch_norm(y, p["scale"], p["offset"], mean=mean, var=var))

        out, moments = block.apply({"params": p}, x, mutable=["moments"])
        np.testing.assert_allclose(out, reference(p), rtol=1e-12, atol=1e-12)
        # the sown statistics are those of conv + bias, as MAML++'s running averages expect
        y = conv3x3(x, p["kernel"], stride=2) + p["bias"]
        np.testing.assert_allclose(moments["moments"]["mean"], batch_moments(y)[0], rtol=1e-12)
        stats = (jnp.linspace(-1.0, 1.0, 5), jnp.linspace(0.5, 1.5, 5))
        given = block.apply({"params": p, "bn_stats": {"mean": stats[0], "var": stats[1]}}, x)
        np.testing.assert_allclose(given, reference(p, stats), rtol=1e-12, atol=1e-12)
        # gradients agree with the unfolded block's, the bias's included
        for s in (None, stats):
            variables = ({} if s is None else {"bn_stats": {"mean": s[0], "var": s[1]}})
            got = jax.grad(lambda q: jnp.sum(jnp.sin(block.apply({"params": q, **variables},
                                                                  x))))(p)
            want = jax.grad(lambda q: jnp.sum(jnp.sin(reference(q, s))))(p)
            for k in p:
                np.testing.assert_allclose(got[k], want[k], rtol=1e-9, atol=1e-10)
