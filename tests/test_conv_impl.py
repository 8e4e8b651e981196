"""The "hybrid" convolution (custom_vjp functions: native forward, input- and kernel-gradient)
against "patches" in float64: values and derivatives up to third order, finite differences,
vmap == loop, and Conv4 MAML/ANIL meta-gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.algorithms import anil, classification, maml
from metajax.models import build_model, init_params
from metajax.models.conv import (CONV_LIBRARIES, compiler_options, conv3x3, default_conv_impl,
                                 input_grad, kernel_grad, resolve_conv_impl, resolve_conv_library)
from metajax.training import Config

# (stride, (H, W)); odd sizes, and a strided output smaller than the kernel (2 x 2), the case
# XLA would compute with swapped operands.
SHAPES = [(1, (7, 9)), (2, (7, 9)), (2, (8, 6)), (2, (4, 3))]


def _inputs(size, seed=0, batch=2, c=3, f=4):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jax.random.normal(k1, (batch, *size, c), jnp.float64)
    kernel = jax.random.normal(k2, (3, 3, c, f), jnp.float64)
    return x, kernel, k3


def _loss(impl, stride, weights):
    # A nonlinear function of the output, so second derivatives involve every map.
    return lambda x, k: jnp.sum(jnp.sin(conv3x3(x, k, stride=stride, impl=impl)) * weights)


def _close(a, b):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("stride, size", SHAPES)
def test_values_and_first_derivatives_are_patches(stride, size):
    impl = "hybrid"
    with jax.enable_x64(True):
        x, kernel, key = _inputs(size)
        out = conv3x3(x, kernel, stride=stride, impl=impl)
        _close(out, conv3x3(x, kernel, stride=stride, impl="patches"))
        weights = jax.random.normal(key, out.shape, jnp.float64)
        grads = {impl: jax.jit(jax.grad(_loss(impl, stride, weights), argnums=(0, 1)))(x, kernel)
                 for impl in (impl, "patches")}
        _close(grads[impl], grads["patches"])


@pytest.mark.parametrize("stride, size", SHAPES)
def test_second_derivatives_are_patches_and_finite_differences(stride, size):
    impl = "hybrid"
    with jax.enable_x64(True):
        x, kernel, key = _inputs(size)
        k1, k2, k3 = jax.random.split(key, 3)
        weights = jax.random.normal(k1, conv3x3(x, kernel, stride=stride).shape, jnp.float64)
        vx = jax.random.normal(k2, x.shape, jnp.float64)
        vk = jax.random.normal(k3, kernel.shape, jnp.float64)

        def maml_like(impl):
            # One inner SGD step on both arguments, then the loss there: a gradient of a
            # function of a gradient, as second-order MAML takes.
            loss = _loss(impl, stride, weights)

            def outer(x, k):
                gx, gk = jax.grad(loss, argnums=(0, 1))(x, k)
                return loss(x - 0.1 * gx, k - 0.1 * gk)
            return outer

        def hvp(impl):
            # Hessian-vector product, reverse over reverse: d/d(x, k) <grad loss, v>.
            loss = _loss(impl, stride, weights)

            def along_v(x, k):
                gx, gk = jax.grad(loss, argnums=(0, 1))(x, k)
                return jnp.vdot(gx, vx) + jnp.vdot(gk, vk)
            return jax.grad(along_v, argnums=(0, 1))

        got = {impl: (jax.jit(jax.grad(maml_like(impl), argnums=(0, 1)))(x, kernel),
                      jax.jit(hvp(impl))(x, kernel)) for impl in (impl, "patches")}
        _close(got[impl], got["patches"])

        # Finite differences of the gradient along (vx, vk): the Hessian-vector product.
        grad = jax.jit(jax.grad(_loss(impl, stride, weights), argnums=(0, 1)))
        eps = 1e-5
        plus, minus = grad(x + eps * vx, kernel + eps * vk), grad(x - eps * vx, kernel - eps * vk)
        fd = jax.tree_util.tree_map(lambda a, b: (a - b) / (2 * eps), plus, minus)
        for a, b in zip(got[impl][1], fd):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_third_order_and_the_bilinear_maps():
    # The backward maps are custom_vjp functions whose own backward rules call each other:
    # check them against patches' autodiff, and a third derivative.
    with jax.enable_x64(True):
        stride, size = 2, (7, 9)
        x, kernel, key = _inputs(size)
        g = jax.random.normal(key, conv3x3(x, kernel, stride=stride).shape, jnp.float64)
        _, vjp = jax.vjp(lambda x, k: conv3x3(x, k, stride=stride), x, kernel)
        want_dx, want_dk = vjp(g)
        _close(input_grad(g, kernel, stride, size), want_dx)
        _close(kernel_grad(x, g, stride), want_dk)

        def third(impl):
            f = lambda x, k: jnp.sum(jnp.cos(conv3x3(x, k, stride=stride, impl=impl)))
            d2 = lambda x, k: jnp.sum(jax.grad(f, argnums=1)(x, k) ** 2)
            d3 = lambda x, k: jnp.sum(jax.grad(d2, argnums=0)(x, k) ** 2)
            return jax.jit(jax.grad(d3, argnums=(0, 1)))(x, kernel)
        _close(third("hybrid"), third("patches"))


@pytest.mark.parametrize("stride", [1, 2])
def test_vmap_over_per_task_kernels_equals_a_loop(stride):
    impl = "hybrid"
    with jax.enable_x64(True):
        tasks = 3
        x, _, key = _inputs((7, 9), batch=tasks * 2)
        xs = x.reshape(tasks, 2, 7, 9, 3)
        kernels = jax.random.normal(key, (tasks, 3, 3, 3, 4), jnp.float64)

        def meta_grad(x, k):
            loss = lambda x, k: jnp.sum(jnp.tanh(conv3x3(x, k, stride=stride, impl=impl)))
            outer = lambda k: loss(x, k - 0.1 * jax.grad(loss, argnums=1)(x, k))
            return conv3x3(x, k, stride=stride, impl=impl), jax.grad(outer)(k)

        batched = jax.jit(jax.vmap(meta_grad))(xs, kernels)
        looped = [jax.jit(meta_grad)(xs[i], kernels[i]) for i in range(tasks)]
        _close(batched, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *looped))


def _conv4_task(name, size, ways=3, dtype=jnp.float64):
    key = jax.random.PRNGKey(4)
    channels = 1 if name == "conv4" else 3
    xs = jax.random.normal(key, (2 * ways, *size, channels), dtype)
    ys = jnp.tile(jnp.arange(ways), 2)
    return (xs[:ways], ys[:ways]), (xs[ways:], ys[ways:])


# Second-order MAML through stride-1 convolutions is covered by the small tests above; the
# Conv4-pool MAML meta-gradient would double this file's compile time.
@pytest.mark.parametrize("name, size, algo", [("conv4", (13, 13), maml),
                                              ("conv4-pool", (17, 17), anil)])
def test_conv4_meta_gradient_is_patches(name, size, algo):
    impl = "hybrid"
    # Second-order MAML (and ANIL) meta-gradients of a small Conv4: every conv derivative, of
    # first and second order, goes through the hybrid maps.
    with jax.enable_x64(True):
        task = _conv4_task(name, size)
        grads = {}
        for which in (impl, "patches"):
            model = build_model(name, 3, hidden=8, conv_impl=which)
            params = jax.tree_util.tree_map(
                lambda p: p.astype(jnp.float64),
                init_params(model, jax.random.PRNGKey(0), task[0][0]))
            learner = algo(model, classification(), inner_lr=0.4, inner_steps=1)
            grads[which] = jax.jit(learner.task_grad)(learner.init(params), task)[:2]
        _close(grads[impl], grads["patches"])


def test_auto_conv_impl_is_chosen_in_one_place():
    for algo in ("maml", "fomaml", "anil", "protonets"):
        assert default_conv_impl(algo, "cpu") == "hybrid"
        assert resolve_conv_impl("auto", algo, "cpu") == default_conv_impl(algo, "cpu")
    assert default_conv_impl("maml", "cpu", task_chunk=0) == "patches"  # vmapped tasks
    assert default_conv_impl("maml", "gpu") == "patches"
    assert resolve_conv_impl("xla", "maml", "cpu") == "xla"


def _ynn_convolutions(compiled_text: str) -> tuple[int, int]:
    """(YNNPACK fusions, convolutions inside them) of a compiled XLA:CPU program's text."""
    computations = {block.split(" ", 1)[0].lstrip("%"): block
                    for block in compiled_text.split("\n\n") if block.strip()}
    called = [line.split("calls=%", 1)[1].split(",", 1)[0]
              for line in compiled_text.splitlines()
              if '"__ynn_fusion"' in line and "calls=%" in line]
    return len(called), sum(computations.get(c, "").count(" convolution(") for c in called)


def test_conv_library_is_chosen_in_one_place():
    auto = resolve_conv_library("auto", "cpu")
    assert auto in CONV_LIBRARIES
    assert compiler_options("auto", "cpu") == compiler_options(auto, "cpu")
    assert compiler_options("ynnpack", "cpu") == {}  # XLA's own default
    assert compiler_options("eigen", "gpu") == {} and resolve_conv_library("eigen", "gpu") == "auto"
    with pytest.raises(ValueError, match="unknown conv_library 'mkl'"):
        compiler_options("mkl", "cpu")
    with pytest.raises(ValueError, match="unknown --conv-library 'mkl'"):
        Config(conv_library="mkl").validate()


def test_eigen_library_takes_native_convolutions_off_ynnpack():
    # The option's effect on the compiled program, so that an XLA whose defaults or option
    # names change fails here rather than silently timing something else.
    x = jnp.ones((5, 28, 28, 3))
    kernel = jnp.full((3, 3, 3, 32), 0.1)

    def loss(x, kernel):
        y = conv3x3(x, kernel, impl="hybrid")
        centred = y - jnp.mean(y, axis=(0, 1, 2))  # a reduction, as batch norm's statistics
        return jnp.sum(jnp.maximum(centred, 0.0).reshape(-1, 32) @ kernel[1, 1].T)  # and a dot

    grad = jax.grad(loss, argnums=(0, 1))
    counts = {}
    for library in CONV_LIBRARIES:
        compiled = jax.jit(grad, compiler_options=compiler_options(library, "cpu")).lower(
            x, kernel).compile()
        counts[library] = _ynn_convolutions(compiled.as_text())
    assert counts["ynnpack"][1] >= 1, counts
    assert counts["eigen"][1] == 0, counts
    assert counts["eigen"][0] >= 1, counts  # reductions and dots stay on YNNPACK


def test_meta_step_is_the_same_on_either_conv_library():
    # float32: the libraries sum in different orders, so equal up to rounding.
    import optax
    from metajax.data.episodes import sample_episode
    from metajax.training import create_train_state, make_meta_step
    model = build_model("conv4", 3, hidden=8, conv_impl="hybrid")
    learner = maml(model, classification(), inner_lr=0.4, inner_steps=1)
    images = jax.random.randint(jax.random.PRNGKey(0), (6, 2, 14, 14, 1), 0, 256).astype(jnp.uint8)
    sample = lambda key, data: sample_episode(key, data, ways=3, shots=1, queries=1)
    optimizer = optax.adam(1e-3)
    params = init_params(model, jax.random.PRNGKey(1), jnp.zeros((3, 14, 14, 1)))
    out = {}
    for library in CONV_LIBRARIES:
        copy = jax.tree_util.tree_map(jnp.array, params)  # the step donates its state
        state = create_train_state(learner, optimizer, copy, jax.random.PRNGKey(2))
        step = make_meta_step(learner, optimizer, sample, 2,
                              compiler_options=compiler_options(library, "cpu"))
        out[library] = step(state, images)
    (s_ynn, m_ynn), (s_eigen, m_eigen) = out["ynnpack"], out["eigen"]
    np.testing.assert_allclose(m_eigen["outer/loss"], m_ynn["outer/loss"], rtol=1e-5)
    np.testing.assert_allclose(m_eigen["outer/grad_norm"], m_ynn["outer/grad_norm"], rtol=1e-4)
    for a, b in zip(jax.tree_util.tree_leaves(s_eigen.params),
                    jax.tree_util.tree_leaves(s_ynn.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
