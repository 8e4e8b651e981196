"""Reptile, Meta-SGD, NIL and test-time freezing: the property that defines each."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax.algorithms import maml, metasgd, nil, nil_scores, regression, reptile
from metajax.data.sinusoid import sample_sinusoid_task
from metajax.models import build_model, init_params
from metajax.training import Config, batch_task_grads, evaluate_run, train_and_evaluate


def _mlp(dtype=jnp.float32):
    model = build_model("mlp", 1, hidden=8)
    params = init_params(model, jax.random.PRNGKey(0), jnp.zeros((4, 1)))
    return model, jax.tree_util.tree_map(lambda p: p.astype(dtype), params)


def _task(seed, dtype=jnp.float32):
    task = sample_sinusoid_task(jax.random.PRNGKey(seed), shots=5, queries=5)
    return jax.tree_util.tree_map(lambda a: a.astype(dtype), task)


def _loss(model, params, x, y):
    return jnp.mean((model.apply({"params": params}, x) - y) ** 2)


def test_reptile_with_one_step_and_one_task_is_an_sgd_step():
    model, params = _mlp()
    task = _task(0)
    learner = reptile(model, regression(), inner_lr=0.05, inner_steps=1)
    pseudo_grad, _, _ = learner.task_grad(params, task)
    beta = 0.7
    updates, _ = optax.sgd(beta).update(pseudo_grad, optax.sgd(beta).init(params))
    new = optax.apply_updates(params, updates)
    x = jnp.concatenate([task[0][0], task[1][0]])
    y = jnp.concatenate([task[0][1], task[1][1]])
    grad = jax.grad(lambda p: _loss(model, p, x, y))(params)
    want = jax.tree_util.tree_map(lambda p, g: p - beta * 0.05 * g, params, grad)
    for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_batched_reptile_update_is_mean_of_per_task_updates():
    model, params = _mlp()
    learner = reptile(model, regression(), inner_lr=0.05, inner_steps=3)
    tasks = [_task(i) for i in range(4)]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *tasks)
    batched, _, _ = batch_task_grads(learner, params, stacked)
    per_task = [learner.task_grad(params, t)[0] for t in tasks]
    for leaf, *leaves in zip(jax.tree_util.tree_leaves(batched),
                             *[jax.tree_util.tree_leaves(g) for g in per_task]):
        np.testing.assert_allclose(leaf, sum(leaves) / 4, rtol=1e-5, atol=1e-7)


def test_reptile_minibatches_are_class_balanced_and_each_step_takes_the_next():
    from metajax.algorithms.reptile import inner_batches

    labels = jnp.array([0, 1, 2, 0, 0, 1, 1, 2, 2])  # support (one per class) then grouped queries
    x = jnp.arange(9.0)
    xb, yb = inner_batches(x, labels, 3)
    np.testing.assert_array_equal(yb, [[0, 1, 2]] * 3)
    np.testing.assert_array_equal(xb, [[0, 1, 2], [3, 5, 7], [4, 6, 8]])
    with pytest.raises(ValueError, match="--inner-batch 10 must be between 1 and"):
        inner_batches(x, labels, 10)

    # Step t uses minibatch t mod count: 4 steps over 2 minibatches = two SGD passes, in order.
    model, params = _mlp()
    task = _task(2)
    learner = reptile(model, regression(), inner_lr=0.05, inner_steps=4, inner_batch=5)
    pseudo_grad, _, _ = jax.jit(learner.task_grad)(params, task)
    x = jnp.concatenate([task[0][0], task[1][0]])
    y = jnp.concatenate([task[0][1], task[1][1]])
    theta = params
    for t in range(4):  # regression targets keep the task's order: support, then query
        batch = slice(0, 5) if t % 2 == 0 else slice(5, 10)
        grad = jax.grad(lambda p: _loss(model, p, x[batch], y[batch]))(theta)
        theta = jax.tree_util.tree_map(lambda p, g: p - 0.05 * g, theta, grad)
    want = jax.tree_util.tree_map(lambda p, w: p - w, params, theta)
    for a, b in zip(jax.tree_util.tree_leaves(pseudo_grad), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="--inner-batch is not an option of --algo maml"):
        Config(algo="maml", options={"inner_batch": 5}).validate()


def test_metasgd_starts_as_maml_and_learns_its_rates():
    with jax.enable_x64(True):
        model, params = _mlp(jnp.float64)
        task = _task(1, jnp.float64)
        msgd = metasgd(model, regression(), inner_lr=0.03, inner_steps=2)
        ref = maml(model, regression(), inner_lr=0.03, inner_steps=2)
        meta = msgd.init(params)
        assert msgd.params_of(meta) is params
        g_meta, m_meta, _ = jax.jit(msgd.task_grad)(meta, task)
        g_ref, m_ref, _ = jax.jit(ref.task_grad)(params, task)
        np.testing.assert_allclose(m_meta["outer/loss"], m_ref["outer/loss"], rtol=1e-12)
        for a, b in zip(jax.tree_util.tree_leaves(g_meta["params"]), jax.tree_util.tree_leaves(g_ref)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        # d loss / d alpha against a finite difference along a random direction
        leaves, treedef = jax.tree_util.tree_flatten(meta["inner_lr"])
        keys = jax.random.split(jax.random.PRNGKey(5), len(leaves))
        v = treedef.unflatten([jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)])

        def loss_at(lr):
            return msgd.evaluate({"params": params, "inner_lr": lr}, task, 2)["outer/loss"]

        eps = 1e-6
        shift = lambda s: jax.tree_util.tree_map(lambda a, d: a + s * eps * d, meta["inner_lr"], v)
        fd = (jax.jit(loss_at)(shift(1)) - jax.jit(loss_at)(shift(-1))) / (2 * eps)
        analytic = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(g_meta["inner_lr"]),
                                                      jax.tree_util.tree_leaves(v)))
        np.testing.assert_allclose(analytic, fd, rtol=1e-5)


def test_nil_scores_are_cosine_weighted_label_votes():
    support = jnp.array([[1.0, 0.0], [0.0, 2.0], [0.0, 1.0]])
    labels = jnp.array([0, 1, 1])
    query = jnp.array([[3.0, 0.0], [1.0, 1.0]])
    scores = nil_scores(support, labels, query, 2)
    np.testing.assert_allclose(scores, [[1.0, 0.0], [2 ** -0.5, 2 * 2 ** -0.5]], rtol=1e-6)


def test_nil_evaluation_uses_no_head():
    model = build_model("conv4", 3, hidden=4)
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 12, 12, 1))
    params = init_params(model, jax.random.PRNGKey(1), x)
    y = jnp.array([0, 1, 2, 0, 1, 2])
    learner = nil(maml(model, regression(), inner_lr=0.1, inner_steps=1), model, 3)
    task = ((x[:3], y[:3]), (x[:3], y[:3]))  # query = support: each query's best match is itself
    metrics = learner.evaluate(params, task, 5)
    assert float(metrics["outer/acc"]) == 1.0
    scrambled = {**params, "head": jax.tree_util.tree_map(lambda p: p * 0 + 7.0, params["head"])}
    assert float(learner.evaluate(scrambled, task, 5)["outer/acc"]) == 1.0


def test_eval_freeze_and_nil_options(tmp_path):
    cfg = Config(steps=20, meta_batch=4, log_every=10, eval_every=20, eval_tasks=4,
                 eval_batch=4, checkpoint_every=20)
    train_and_evaluate(cfg, tmp_path, progress=False)
    free = evaluate_run(tmp_path, tasks=8, inner_steps=5)
    frozen = evaluate_run(tmp_path, tasks=8, inner_steps=5, freeze=["1", "2"])
    assert frozen["frozen"] == ["body/dense1", "body/dense2"]
    assert frozen["mse"] != free["mse"]
    with pytest.raises(ValueError, match="layers 1..2"):
        evaluate_run(tmp_path, tasks=8, freeze=["3"])
    with pytest.raises(ValueError, match="classification"):
        evaluate_run(tmp_path, tasks=8, head="nil")
