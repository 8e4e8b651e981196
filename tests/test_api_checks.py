"""Shape, dtype and tree checks at the public API's edges (metajax/checks.py).

Every entry point refuses a wrong rank, dtype or tree structure with a message that names the
argument and what was expected, raised while tracing (before XLA), also under jit and vmap; valid
inputs still work under jit and vmap, and a second call does not retrace.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metajax
from metajax.algorithms import (anil, classification, maml, nil, pretrain, protomaml, protonets,
                                regression, task_metrics)
from metajax.checks import InputError
from metajax.core import adapt, combine, inner_loop, meta_loss, partition
from metajax.data import DataError, RaggedImages, sample_episode, sample_ragged_episode
from metajax.models import build_model, init_params

WAYS, N, FEATURES = 3, 6, 4


def _classification_problem():
    model = build_model("mlp", WAYS, hidden=8)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(keys[0], (2 * N, FEATURES))
    y = jnp.arange(2 * N) % WAYS
    params = init_params(model, keys[1], x[:N])
    task = ((x[:N], y[:N]), (x[N:], y[N:]))
    return model, params, task


def _regression_problem():
    model = build_model("mlp", 1, hidden=8)
    x = jax.random.normal(jax.random.PRNGKey(1), (2 * N, 1))
    y = jnp.sin(x)
    params = init_params(model, jax.random.PRNGKey(2), x[:N])
    return model, params, ((x[:N], y[:N]), (x[N:], y[N:]))


def _loss_fn(model, objective):
    def loss_fn(params, batch):
        x, y = batch
        return objective.loss(model.apply({"params": params}, x), y)
    return loss_fn


def _with_support_labels(task, ys):
    (xs, _), query = task
    return (xs, ys), query


# The adaptation core ----------------------------------------------------------------------------

def test_adapt_checks_steps_mask_inner_lr_params_and_loss():
    model, params, task = _classification_problem()
    loss_fn = _loss_fn(model, classification())
    support = task[0]
    run = functools.partial(adapt, params, loss_fn, support, inner_lr=0.1)
    with pytest.raises(InputError, match=r"adapt: steps must be a concrete Python int .*got "
                                         r"int32\[\]"):
        jax.jit(lambda s: adapt(params, loss_fn, support, inner_lr=0.1, steps=s))(2)
    with pytest.raises(InputError, match="adapt: steps must be >= 0, got -1"):
        run(steps=-1)
    with pytest.raises(ValueError, match="mask must be a pytree of bools with the structure of "
                                         "params"):
        run(steps=1, mask={"body": True})
    with pytest.raises(InputError, match=r"mask\['head'\] is a traced bool\[\]: a mask must hold "
                                         r"concrete Python bools"):
        jax.jit(lambda m: run(steps=1, mask={"body": False, "head": m}))(True)
    with pytest.raises(InputError, match=r"mask\['head'\] must be one bool per params leaf or "
                                         r"subtree, got bool\[2\]"):
        run(steps=1, mask={"body": False, "head": np.array([True, False])})
    with pytest.raises(InputError, match=r"adapt: inner_lr must be a scalar or a pytree with the "
                                         r"structure of params; got shape \(3,\)"):
        adapt(params, loss_fn, support, inner_lr=jnp.ones(3), steps=1)
    bad_rates = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.1), params)
    bad_rates["head"]["kernel"] = jnp.ones((5,))
    with pytest.raises(InputError, match=r"adapt: inner_lr\['head'\]\['kernel'\] is float32\[5\], "
                                         r"which does not broadcast to the param's shape \(8, 3\)"):
        adapt(params, loss_fn, support, inner_lr=bad_rates, steps=1)
    with_int = {**params, "step": jnp.zeros((), jnp.int32)}
    with pytest.raises(InputError, match=r"adapt: params\['step'\] is int32\[\]; the inner loop "
                                         r"differentiates every adapted leaf"):
        adapt(with_int, lambda p, b: loss_fn({k: v for k, v in p.items() if k != "step"}, b),
              support, inner_lr=0.1, steps=1)
    with pytest.raises(InputError, match=r"adapt: loss_fn\(params, support\) must return a "
                                         r"floating-point scalar loss, got float32\[6\]"):
        adapt(params, lambda p, b: jnp.square(model.apply({"params": p}, b[0])).sum(-1),
              support, inner_lr=0.1, steps=1)


def test_inner_loop_checks_key_and_minibatches():
    model, params, task = _classification_problem()
    loss_fn = _loss_fn(model, classification())
    with pytest.raises(InputError, match=r"inner_loop: key must be a single jax.random key .*got "
                                         r"float32\[2\]"):
        inner_loop(params, lambda p, b, key=None: loss_fn(p, b), task[0], inner_lr=0.1, steps=1,
                   key=jnp.zeros(2))
    with pytest.raises(InputError, match=r"got a batch of keys key<fry>\[4\]; jax.vmap over"):
        inner_loop(params, lambda p, b, key=None: loss_fn(p, b), task[0], inner_lr=0.1, steps=1,
                   key=jax.random.split(jax.random.key(0), 4))
    xs, ys = task[0]
    with pytest.raises(InputError, match=r"inner_loop: with minibatches=True every leaf of support "
                                         r"needs the same leading minibatch axis"):
        inner_loop(params, loss_fn, (xs.reshape(2, 3, FEATURES), ys), inner_lr=0.1, steps=1,
                   minibatches=True)
    with pytest.raises(InputError, match="inner_loop: loss_fn must be a function"):
        inner_loop(params, "mse", task[0], inner_lr=0.1, steps=1)


def test_meta_loss_checks_the_task_pair():
    model, params, task = _classification_problem()
    with pytest.raises(InputError, match=r"meta_loss: task must be a \(support, query\) pair"):
        meta_loss(params, _loss_fn(model, classification()), task[0] + task[1], inner_lr=0.1,
                  steps=1)


def test_partition_and_combine_check_tree_structures():
    _, params, _ = _classification_problem()
    with pytest.raises(ValueError, match="mask must be a pytree of bools"):
        partition(params, {"head": True})
    adapted, frozen = partition(params, {"body": False, "head": True})
    with pytest.raises(InputError, match=r"combine: trees\[1\] does not have the structure of "
                                         r"trees\[0\]"):
        combine(adapted, frozen["body"])
    with pytest.raises(InputError, match="combine: needs at least one tree"):
        combine()
    back = combine(adapted, frozen)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)


# Objectives -------------------------------------------------------------------------------------

def test_objectives_check_labels_and_targets():
    logits = jnp.zeros((5, 3))
    with pytest.raises(InputError, match=r"classification\(\) loss: labels must be integer class "
                                         r"indices of shape \(5,\) .*got float32\[5,1\]"):
        classification().loss(logits, jnp.zeros((5, 1)))
    with pytest.raises(InputError, match=r"classification\(\) metrics: labels .*got int32\[4\]"):
        classification().metrics(logits, jnp.zeros((4,), jnp.int32))
    with pytest.raises(InputError, match=r"classification\(\) loss: the model's output must be "
                                         r"floating-point logits"):
        classification().loss(jnp.zeros((5, 3), jnp.int32), jnp.zeros((5,), jnp.int32))
    with pytest.raises(InputError, match=r"regression\(\) loss: the model's predictions "
                                         r"float32\[5\] must have the targets' shape "
                                         r"float32\[5,1\]"):
        regression().loss(jnp.zeros((5,)), jnp.zeros((5, 1)))
    with pytest.raises(InputError, match=r"regression\(\) metrics: targets must be floating point, "
                                         r"got int32\[5\]; integer class labels need "
                                         r"metajax.classification\(\)"):
        regression().metrics(jnp.zeros((5,)), jnp.zeros((5,), jnp.int32))
    with pytest.raises(InputError, match=r"task_metrics: inner_losses must be the 1-D array"):
        task_metrics(regression(), jnp.zeros((5, 1)), jnp.zeros((5, 1)), 0.0, jnp.zeros(()))
    # Under jit the same errors come at trace time.
    with pytest.raises(InputError, match="labels must be integer class indices"):
        jax.jit(classification().loss)(logits, jnp.zeros((5,)))
    assert classification().kind == "classification" and regression().kind == "regression"
    assert metajax.algorithms.Objective(len, len).kind is None  # two-field form still works


# Learners ---------------------------------------------------------------------------------------

def test_gradient_based_learner_checks_tasks_support_and_key():
    model, params, task = _classification_problem()
    learner = maml(model, classification(), inner_lr=0.1, inner_steps=1)
    float_labels = _with_support_labels(task, jnp.zeros((N, 1)))
    with pytest.raises(InputError, match=r"task_grad: task\[0\]\[1\] \(support labels\) must be "
                                         r"integer class indices of shape \(n,\) for "
                                         r"classification\(\), got float32\[6,1\]"):
        learner.task_grad(params, float_labels)
    with pytest.raises(InputError, match=r"evaluate: task\[0\]\[1\] \(support labels\) .*got "
                                         r"float32\[6,1\]"):
        jax.jit(learner.evaluate, static_argnums=2)(params, float_labels, 1)
    (xs, ys), query = task
    with pytest.raises(InputError, match=r"task_grad: task\[0\]\[0\] \(support inputs\) "
                                         r"float32\[6,4,1\] and task\[1\]\[0\] \(query inputs\) "
                                         r"float32\[6,4\] must have the same example shape"):
        learner.task_grad(params, ((xs[..., None], ys), query))
    with pytest.raises(InputError, match=r"task_grad: task\[0\] \(support\) has 6 inputs but 5 "
                                         r"labels"):
        learner.task_grad(params, ((xs, ys[:5]), query))
    with pytest.raises(InputError, match=r"task_grad: task must be a \(support, query\) pair of "
                                         r"\(x, y\) pairs.*got a dict with keys"):
        learner.task_grad(params, {"support": task[0], "query": task[1]})
    with pytest.raises(InputError, match=r"adapt: support\[1\] \(support labels\) must be "
                                         r"integer class indices"):
        learner.adapt(params, (xs, ys.astype(jnp.float32)), 1)
    with pytest.raises(InputError, match=r"task_grad: key must be a single jax.random key"):
        learner.task_grad(params, task, key=jax.random.split(jax.random.PRNGKey(0), 2))
    with pytest.raises(InputError, match=r"evaluate: task\[1\]\[0\] \(query inputs\) must be an "
                                         r"array with one row per example"):
        learner.evaluate(params, ((xs, ys), (jnp.zeros(()), ys)), 1)


def test_regression_learner_wants_float_targets_of_the_predictions_shape():
    model, params, task = _regression_problem()
    learner = maml(model, regression(), inner_lr=0.1, inner_steps=1)
    with pytest.raises(InputError, match=r"task_grad: task\[0\]\[1\] \(support targets\) must be "
                                         r"floating-point regression targets .*got int32\[6\]; "
                                         r"integer class labels need metajax.classification"):
        learner.task_grad(params, _with_support_labels(task, jnp.zeros((N,), jnp.int32)))
    (xs, ys), (xq, yq) = task
    flat = ((xs, ys[:, 0]), (xq, yq[:, 0]))  # (n,) targets against (n, 1) predictions
    with pytest.raises(InputError, match=r"regression\(\) loss: the model's predictions "
                                         r"float32\[6,1\] must have the targets' shape "
                                         r"float32\[6\]"):
        learner.task_grad(params, flat)
    with pytest.raises(InputError, match=r"multitask task_grad: task\[0\]\[1\] \(support targets\)"):
        pretrain(model, regression(), inner_lr=0.1).task_grad(
            params, _with_support_labels(task, jnp.zeros((N,), jnp.int32)))


def test_anil_protonets_protomaml_and_nil_check_their_tasks():
    model, params, task = _classification_problem()
    float_labels = _with_support_labels(task, jnp.zeros((N,)))
    message = r"\(support labels\) must be integer class indices of shape \(n,\)"
    learners = {
        "anil task_grad": anil(model, classification(), inner_lr=0.1, inner_steps=1).task_grad,
        "protonets task_grad": protonets(model, classification()).task_grad,
        "task_grad": protomaml(model, classification(), inner_lr=0.1, inner_steps=1).task_grad,
    }
    for where, task_grad in learners.items():
        with pytest.raises(InputError, match=rf"^{where}: task\[0\]\[1\] {message}"):
            task_grad(params, float_labels)
    # Labels index the prototypes whatever the objective says.
    (xs, ys), (xq, yq) = task
    all_float = ((xs, ys.astype(jnp.float32)), (xq, yq.astype(jnp.float32)))
    with pytest.raises(InputError, match=r"protomaml: support labels must be integer"):
        protomaml(model, metajax.algorithms.Objective(lambda p, y: jnp.mean(p), lambda p, y: {}),
                  inner_lr=0.1, inner_steps=1).task_grad(params, all_float)
    with pytest.raises(InputError, match=rf"protonets evaluate: task\[0\]\[1\] {message}"):
        protonets(model, classification()).evaluate(params, float_labels, 0)
    with pytest.raises(InputError, match=rf"anil adapt: support\[1\] {message}"):
        anil(model, classification(), inner_lr=0.1, inner_steps=1).adapt(params, float_labels[0],
                                                                         1)
    learner = nil(maml(model, classification(), inner_lr=0.1, inner_steps=1), model, WAYS)
    with pytest.raises(InputError, match=rf"nil evaluate: task\[0\]\[1\] {message}"):
        learner.evaluate(params, float_labels, 0)
    with pytest.raises(InputError, match=r"nil: num_classes must be a concrete Python int"):
        nil(learner, model, 2.5)


# Samplers ---------------------------------------------------------------------------------------

def test_samplers_check_keys_and_arrays():
    images = np.zeros((4, 5, 2, 2, 1), np.uint8)
    sample = functools.partial(sample_episode, ways=2, shots=1, queries=1)
    with pytest.raises(InputError, match=r"sample_episode: key must be a single jax.random key.* "
                                         r"got float32\[2\]"):
        sample(jnp.zeros(2), images)
    with pytest.raises(InputError, match=r"sample_episode: key .*got a batch of keys "
                                         r"uint32\[3,2\]; jax.vmap over the keys"):
        jax.jit(sample)(jax.random.split(jax.random.PRNGKey(0), 3), images)
    with pytest.raises(DataError, match=r"images must be a \(classes, examples, ...\) array, "
                                        r"got list"):
        sample(jax.random.key(0), [[1, 2]])
    ragged = RaggedImages.from_dense(images)
    sample_ragged = functools.partial(sample_ragged_episode, ways=2, shots=1, queries=1)
    with pytest.raises(InputError, match="sample_ragged_episode: key must be a single"):
        sample_ragged(jnp.zeros(2), ragged)
    with pytest.raises(DataError, match=r"sample_ragged_episode: counts must be integer of shape "
                                        r"\(classes,\), got float32\[4\]"):
        sample_ragged(jax.random.key(0), (ragged.images, ragged.offsets,
                                          ragged.counts.astype(np.float32)))
    with pytest.raises(DataError, match=r"sample_ragged_episode: offsets must be integer of shape "
                                        r"\(classes,\), got int32\[4,1\]"):
        sample_ragged(jax.random.key(0), (ragged.images, ragged.offsets[:, None], ragged.counts))
    with pytest.raises(DataError, match=r"sample_ragged_episode: images must be \(N, H, W, C\)"):
        sample_ragged(jax.random.key(0), (np.zeros(20, np.uint8), ragged.offsets, ragged.counts))


# Valid inputs: jit, vmap, no recompilation --------------------------------------------------------

def _counting_jit(fn, **kwargs):
    """``jax.jit(fn)`` and a list that grows by one every time ``fn`` is traced."""
    traces = []

    def traced(*args):
        traces.append(1)
        return fn(*args)
    return jax.jit(traced, **kwargs), traces


def test_valid_inputs_work_under_jit_and_vmap_without_retracing():
    model, params, task = _classification_problem()
    learner = maml(model, classification(), inner_lr=0.1, inner_steps=1)
    tasks = jax.tree_util.tree_map(lambda a: jnp.stack([a, a[::-1]]), task)

    # A meta-batch: vmap of task_grad with per-task keys, jitted; called twice.
    def batch_grad(p, ts, keys):
        grads, metrics, _ = jax.vmap(lambda t, k: learner.task_grad(p, t, key=k))(ts, keys)
        return jax.tree_util.tree_map(lambda g: g.mean(0), grads), metrics

    step, traces = _counting_jit(batch_grad)
    keys = jax.random.split(jax.random.key(0), 2)
    first = step(params, tasks, keys)
    second = step(params, tasks, jax.random.split(jax.random.key(1), 2))
    assert len(traces) == 1
    assert np.all(np.isfinite(np.asarray(second[1]["outer/loss"])))
    assert first[1]["outer/acc"].shape == (2,)

    evaluate, eval_traces = _counting_jit(
        jax.vmap(lambda p, t: learner.evaluate(p, t, 2), in_axes=(None, 0)))
    evaluate(params, tasks)
    evaluate(params, tasks)
    assert len(eval_traces) == 1

    # The adaptation core and a sampler under jit(vmap(...)), twice.
    loss_fn = _loss_fn(model, classification())
    adapt_all, adapt_traces = _counting_jit(jax.vmap(
        lambda p, s: adapt(p, loss_fn, s, inner_lr=0.1, steps=2,
                           mask={"body": False, "head": True}), in_axes=(None, 0)))
    adapted = adapt_all(params, tasks[0])
    adapt_all(params, tasks[0])
    assert len(adapt_traces) == 1
    np.testing.assert_array_equal(adapted["body"]["dense1"]["kernel"][0],
                                  params["body"]["dense1"]["kernel"])

    images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (4, 5, 3, 3, 1), np.uint8))
    draw, draw_traces = _counting_jit(jax.vmap(
        functools.partial(sample_episode, ways=2, shots=1, queries=2), in_axes=(0, None)))
    episodes = draw(jax.random.split(jax.random.key(0), 3), images)
    draw(jax.random.split(jax.random.key(1), 3), images)
    assert len(draw_traces) == 1
    assert episodes.support[1].dtype == jnp.int32 and episodes.query[0].shape == (3, 4, 3, 3, 1)

    ragged = RaggedImages.from_dense(np.asarray(images))
    draw_ragged, ragged_traces = _counting_jit(jax.vmap(
        functools.partial(sample_ragged_episode, ways=2, shots=1, queries=2),
        in_axes=(0, None)))
    draw_ragged(jax.random.split(jax.random.PRNGKey(0), 3), ragged.device_arrays())
    draw_ragged(jax.random.split(jax.random.PRNGKey(1), 3), ragged.device_arrays())
    assert len(ragged_traces) == 1


def test_valid_regression_and_image_tasks_pass_the_checks():
    # Regression targets (n, 1) floats, float64 under x64.
    model, params, task = _regression_problem()
    learner = maml(model, regression(), inner_lr=0.1, inner_steps=1)
    _, metrics, _ = learner.task_grad(params, task)
    assert np.isfinite(float(metrics["outer/mse"]))
    # Images NHWC of any size, with a raw PRNGKey per task.
    conv = build_model("conv4", WAYS, hidden=2)
    x = jax.random.uniform(jax.random.PRNGKey(3), (2 * N, 10, 7, 3))
    y = jnp.arange(2 * N) % WAYS
    conv_params = init_params(conv, jax.random.PRNGKey(4), x[:N])
    image_task = ((x[:N], y[:N]), (x[N:], y[N:]))
    metrics = anil(conv, classification(), inner_lr=0.1, inner_steps=1).evaluate(
        conv_params, image_task, 1)
    assert 0.0 <= float(metrics["outer/acc"]) <= 1.0
    # A custom objective (kind None) with a pytree of inputs passes the generic checks.
    from metajax.checks import check_task
    check_task((({"a": x[:N], "b": y[:N]}, y[:N]), ({"a": x[N:], "b": y[N:]}, y[N:])), "custom")
