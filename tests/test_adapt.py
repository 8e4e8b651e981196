"""The adaptation core: meta-gradients against finite differences, first order, masks, ANIL."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax import adapt, anil, build_model, classification, head_only_mask, init_params, maml, meta_loss
from metajax.core import combine, freeze_mask, inner_loop, partition


def _tiny_conv_problem(dtype=jnp.float64, ways=3, n=6, size=8):
    model = build_model("conv4", ways, hidden=3)
    k1, k2, k3, k4, k5 = jax.random.split(jax.random.PRNGKey(0), 5)
    xs = jax.random.normal(k1, (n, size, size, 1), dtype)
    xq = jax.random.normal(k2, (n, size, size, 1), dtype)
    ys = jax.random.randint(k3, (n,), 0, ways)
    yq = jax.random.randint(k4, (n,), 0, ways)
    params = jax.tree_util.tree_map(lambda p: p.astype(dtype), init_params(model, k5, xs))
    objective = classification()

    def loss_fn(p, batch):
        x, y = batch
        return objective.loss(model.apply({"params": p}, x), y)

    return model, params, loss_fn, ((xs, ys), (xq, yq))


def _directional_fd(f, params, direction, eps=1e-5):
    plus = jax.tree_util.tree_map(lambda p, d: p + eps * d, params, direction)
    minus = jax.tree_util.tree_map(lambda p, d: p - eps * d, params, direction)
    return (f(plus) - f(minus)) / (2 * eps)


def _random_direction(params, seed):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return treedef.unflatten([jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)])


def _dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_meta_gradient_matches_finite_differences(steps):
    with jax.enable_x64(True):
        _, params, loss_fn, task = _tiny_conv_problem()
        f = jax.jit(lambda p: meta_loss(p, loss_fn, task, inner_lr=0.1, steps=steps))
        grad = jax.jit(jax.grad(f))(params)
        for seed in range(3):
            v = _random_direction(params, seed)
            fd = _directional_fd(f, params, v)
            np.testing.assert_allclose(_dot(grad, v), fd, rtol=1e-5, atol=1e-9)


def test_first_order_is_query_gradient_at_adapted_params_and_differs_from_second_order():
    with jax.enable_x64(True):
        _, params, loss_fn, task = _tiny_conv_problem()
        support, query = task
        fo = jax.jit(jax.grad(lambda p: meta_loss(p, loss_fn, task, inner_lr=0.5, steps=3,
                                                  first_order=True)))(params)
        so = jax.jit(jax.grad(lambda p: meta_loss(p, loss_fn, task, inner_lr=0.5, steps=3)))(params)
        adapted = jax.jit(lambda p: adapt(p, loss_fn, support, inner_lr=0.5, steps=3))(params)
        query_grad = jax.jit(jax.grad(loss_fn))(adapted, query)
        for a, b in zip(jax.tree_util.tree_leaves(fo), jax.tree_util.tree_leaves(query_grad)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        diff = jnp.sqrt(sum(jnp.sum((a - b) ** 2) for a, b in zip(
            jax.tree_util.tree_leaves(fo), jax.tree_util.tree_leaves(so))))
        assert diff > 1e-3 * jnp.sqrt(_dot(so, so))


def test_adapt_is_sgd_on_the_support_loss():
    with jax.enable_x64(True):
        _, params, loss_fn, (support, _) = _tiny_conv_problem()
        expected = params
        for _ in range(2):
            g = jax.grad(loss_fn)(expected, support)
            expected = jax.tree_util.tree_map(lambda p, gi: p - 0.3 * gi, expected, g)
        for unroll in (1, True):
            got = adapt(params, loss_fn, support, inner_lr=0.3, steps=2, unroll=unroll)
            for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
        assert adapt(params, loss_fn, support, inner_lr=0.3, steps=0) is not None


def test_inner_loop_losses_decrease_and_steps_zero_is_identity():
    _, params, loss_fn, (support, _) = _tiny_conv_problem(jnp.float32)
    _, losses = inner_loop(params, loss_fn, support, inner_lr=0.1, steps=5)
    assert losses.shape == (5,) and losses[-1] < losses[0]
    same, none = inner_loop(params, loss_fn, support, inner_lr=0.1, steps=0)
    assert none.shape == (0,)
    assert all(jnp.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(same),
                                                      jax.tree_util.tree_leaves(params)))


def test_anil_mask_leaves_body_exactly_unchanged():
    _, params, loss_fn, (support, _) = _tiny_conv_problem(jnp.float32)
    mask = head_only_mask(params)
    adapted = adapt(params, loss_fn, support, inner_lr=0.5, steps=3, mask=mask)
    for a, b in zip(jax.tree_util.tree_leaves(adapted["body"]), jax.tree_util.tree_leaves(params["body"])):
        assert jnp.array_equal(a, b)
    assert not jnp.array_equal(adapted["head"]["kernel"], params["head"]["kernel"])
    # a prefix mask means the same thing
    adapted2 = adapt(params, loss_fn, support, inner_lr=0.5, steps=3, mask={"body": False, "head": True})
    assert jnp.array_equal(adapted2["head"]["kernel"], adapted["head"]["kernel"])


def test_freeze_mask_freezes_named_layers_only():
    _, params, loss_fn, (support, _) = _tiny_conv_problem(jnp.float32)
    mask = freeze_mask(params, ["body/conv1", "body/conv3"])
    adapted = adapt(params, loss_fn, support, inner_lr=0.5, steps=2, mask=mask)
    for layer, frozen in [("conv1", True), ("conv2", False), ("conv3", True), ("conv4", False)]:
        same = jnp.array_equal(adapted["body"][layer]["kernel"], params["body"][layer]["kernel"])
        assert same == frozen, layer
    with pytest.raises(ValueError, match="conv9"):
        freeze_mask(params, ["body/conv9"])


def test_partition_combine_roundtrip():
    _, params, _, _ = _tiny_conv_problem(jnp.float32)
    a, b = partition(params, head_only_mask(params))
    assert a["body"]["conv1"]["kernel"] is None and b["head"]["kernel"] is None
    back = combine(a, b)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)


def test_bad_mask_structure_is_a_clear_error():
    _, params, loss_fn, (support, _) = _tiny_conv_problem(jnp.float32)
    with pytest.raises(ValueError, match="mask must be a pytree"):
        adapt(params, loss_fn, support, inner_lr=0.1, steps=1, mask={"body": True})


def test_per_leaf_inner_learning_rates():
    _, params, loss_fn, (support, _) = _tiny_conv_problem(jnp.float32)
    zero_body = jax.tree_util.tree_map(jnp.zeros_like, params)
    lrs = {"body": zero_body["body"], "head": jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.5), params["head"])}
    got = adapt(params, loss_fn, support, inner_lr=lrs, steps=2)
    want = adapt(params, loss_fn, support, inner_lr=0.5, steps=2, mask=head_only_mask(params))
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("first_order", [False, True])
def test_anil_equals_maml_with_head_only_mask(first_order):
    with jax.enable_x64(True):
        model, params, _, task = _tiny_conv_problem()
        objective = classification()
        fast = anil(model, objective, inner_lr=0.4, inner_steps=3, first_order=first_order)
        slow = maml(model, objective, inner_lr=0.4, inner_steps=3, first_order=first_order,
                    mask=head_only_mask(params))
        g_fast, m_fast, _ = jax.jit(fast.task_grad)(params, task)
        g_slow, m_slow, _ = jax.jit(slow.task_grad)(params, task)
        for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_slow)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        for k in m_slow:
            np.testing.assert_allclose(m_fast[k], m_slow[k], rtol=1e-10)
        a_fast = fast.adapt(params, task[0], 10)
        a_slow = slow.adapt(params, task[0], 10)
        assert a_fast["body"] is params["body"]
        np.testing.assert_allclose(a_fast["head"]["kernel"], a_slow["head"]["kernel"], rtol=1e-9)


def test_maml_task_grad_is_grad_of_meta_loss():
    with jax.enable_x64(True):
        model, params, loss_fn, task = _tiny_conv_problem()
        learner = maml(model, classification(), inner_lr=0.2, inner_steps=2)
        grads, metrics, _ = jax.jit(learner.task_grad)(params, task)
        want = jax.jit(jax.grad(lambda p: meta_loss(p, loss_fn, task, inner_lr=0.2, steps=2)))(params)
        for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
        assert set(metrics) == {"outer/loss", "outer/acc", "inner/loss_pre"}
        evaluated = jax.jit(learner.evaluate, static_argnums=2)(params, task, 2)
        np.testing.assert_allclose(evaluated["outer/loss"], metrics["outer/loss"], rtol=1e-12)


def test_remat_gives_the_same_meta_gradient():
    with jax.enable_x64(True):
        _, params, loss_fn, task = _tiny_conv_problem()

        def grad(remat):
            f = lambda p: meta_loss(p, loss_fn, task, inner_lr=0.1, steps=3, unroll=1,
                                    remat=remat)
            return jax.jit(jax.grad(f)), f

        (plain, f), (rematted, _) = grad(False), grad(True)
        for a, b in zip(jax.tree_util.tree_leaves(plain(params)),
                        jax.tree_util.tree_leaves(rematted(params)), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
        # The backward pass recomputes the inner steps (its memory is in benchmarks/meta_step.py).
        count = lambda g: str(jax.make_jaxpr(g)(params)).count("remat")
        assert count(rematted) > 0 and count(plain) == 0
