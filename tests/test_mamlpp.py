"""MAML++: each part tested for the property that defines it, and the switches' errors."""
import functools
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import cli
from metajax.algorithms import classification, maml, mamlpp, msl_weights, regression
from metajax.data.episodes import sample_episode
from metajax.data.sinusoid import sample_sinusoid_task
from metajax.models import build_model, init_params
from metajax.training import (Config, create_train_state, restore_checkpoint, save_checkpoint,
                              train_and_evaluate)
from metajax.training import loop as loop_module
from metajax.training.steps import make_meta_step

S = 2  # inner steps


def _setup(dtype=jnp.float32, seed=1):
    """A 3-way 1-shot task on random 10x10 images and a 4-filter Conv4 (with batch norm)."""
    images = jax.random.randint(jax.random.PRNGKey(3), (12, 6, 10, 10, 1), 0, 256).astype(jnp.uint8)
    model = build_model("conv4", 3, hidden=4)
    params = init_params(model, jax.random.PRNGKey(0), jnp.zeros((3, 10, 10, 1)))
    sample = functools.partial(sample_episode, ways=3, shots=1, queries=2)
    task = sample(jax.random.PRNGKey(seed), images)
    cast = lambda t: jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, t)
    return model, cast(params), cast(task), sample, images


def _mlp_setup(dtype=jnp.float32, seed=1):
    """A 5-shot sinusoid task and a small MLP: compiles in a fraction of a Conv4's time."""
    model = build_model("mlp", 1, hidden=8)
    params = init_params(model, jax.random.PRNGKey(0), jnp.zeros((4, 1)))
    task = sample_sinusoid_task(jax.random.PRNGKey(seed), shots=5, queries=5)
    cast = lambda t: jax.tree_util.tree_map(lambda a: a.astype(dtype), t)
    return model, cast(params), cast(task)


def _leaves(tree):
    return jax.tree_util.tree_leaves(tree)


def _close(a, b, **tol):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_allclose(x, y, **tol)


def test_all_parts_off_is_maml():
    with jax.enable_x64(True):
        model, params, task, *_ = _setup(jnp.float64)
        plus = mamlpp(model, classification(), inner_lr=0.3, inner_steps=S, unroll=1)
        ref = maml(model, classification(), inner_lr=0.3, inner_steps=S, unroll=1)
        meta = plus.init(params)
        g, m, _ = jax.jit(plus.task_grad)(meta, task)
        g_ref, m_ref, _ = jax.jit(ref.task_grad)(params, task)
        np.testing.assert_allclose(m["outer/loss"], m_ref["outer/loss"], rtol=1e-12)
        _close(g["params"], g_ref, rtol=1e-9, atol=1e-12)


def test_msl_weights_anneal_from_uniform_to_last_step():
    np.testing.assert_allclose(msl_weights(0, 5, 100), np.full(5, 0.2), rtol=1e-6)
    for t in (0, 30, 100, 1000):
        w = np.asarray(msl_weights(t, 5, 100))
        assert abs(w.sum() - 1) < 1e-6 and (w > 0).all()
    mid, end = np.asarray(msl_weights(50, 5, 100)), np.asarray(msl_weights(100, 5, 100))
    np.testing.assert_allclose(mid[:-1], 0.1, rtol=1e-6)
    np.testing.assert_allclose(end[:-1], 0.03 / 5, rtol=1e-6)  # the reference's floor
    assert end[-1] > 0.97


def test_msl_objective_is_weighted_query_loss_after_every_step():
    model, params, task = _mlp_setup()
    plus = mamlpp(model, regression(), inner_lr=0.05, inner_steps=S, msl=True,
                  msl_anneal_steps=10)
    meta = plus.init(params)
    evaluators = [maml(model, regression(), inner_lr=0.05, inner_steps=k).evaluate
                  for k in range(1, S + 1)]
    per_step = [jax.jit(f, static_argnums=2)(params, task, k)["outer/loss"]
                for k, f in enumerate(evaluators, 1)]
    task_grad = jax.jit(plus.task_grad)
    for step in (0, 4, 10):
        _, metrics, _ = task_grad(meta, task, step)
        want = np.dot(np.asarray(msl_weights(step, S, 10)), per_step)
        np.testing.assert_allclose(metrics["outer/msl_loss"], want, rtol=1e-5)
        np.testing.assert_allclose(metrics["outer/loss"], per_step[-1], rtol=1e-5)


@pytest.fixture(scope="module")
def bn_run():
    """MAML++ with BNWB + BNRS on the tiny Conv4, with its task_grad compiled once for the module."""
    model, params, task, *_ = _setup()
    plus = mamlpp(model, classification(), inner_lr=0.3, inner_steps=S, unroll=1, bnrs=True,
                  bnwb=True)
    return model, plus, plus.init(params), task, jax.jit(plus.task_grad)


def test_bnwb_learns_one_set_of_batch_norm_weights_per_step_and_never_adapts_them(bn_run):
    model, plus, meta, task, task_grad = bn_run
    assert meta["params"]["body"]["conv1"]["scale"] is None  # lives in meta["bn"] instead
    assert meta["bn"]["body"]["conv1"]["scale"].shape == (S + 1, 4)
    grads, _, _ = task_grad(meta, task)
    # Every state's set gets its own gradient (states 0..S-1 through the support passes, S through
    # the query pass).
    g = np.asarray(grads["bn"]["body"]["conv2"]["offset"])
    assert g.shape == (S + 1, 4) and all(np.abs(g[i]).sum() > 0 for i in range(S + 1))
    assert not np.allclose(g[0], g[S])
    adapted = jax.jit(plus.adapt, static_argnums=2)(meta, task[0], S)
    _close(adapted["body"]["conv3"]["scale"], meta["bn"]["body"]["conv3"]["scale"][S])
    assert not np.allclose(adapted["body"]["conv3"]["kernel"], meta["params"]["body"]["conv3"]["kernel"])


def test_bnrs_support_statistics_never_see_the_query(bn_run):
    model, plus, meta, task, task_grad = bn_run
    (xs, ys), (xq, yq) = task
    other = ((xs, ys), (jnp.flip(xq, axis=1) + 0.5, yq))  # same support, different query images
    g1, m1, _ = task_grad(meta, task)
    g2, m2, _ = task_grad(meta, other)
    # Statistics of states 0..S-1 come from support batches only; state S from the query batch.
    for a, b in zip(_leaves(g1["bn_stats"]), _leaves(g2["bn_stats"])):
        np.testing.assert_array_equal(a[:S], b[:S])
        assert not np.allclose(a[S], b[S])
    # Equal support statistics at every state mean equal adapted weights theta_1..theta_{S-1}:
    # the inner loop never saw the query.
    np.testing.assert_array_equal(m1["inner/loss_pre"], m2["inner/loss_pre"])


def test_bnrs_test_predictions_of_a_query_example_ignore_the_other_queries(bn_run):
    model, plus, meta, task, _ = bn_run
    meta = dict(meta)
    meta["bn_stats"] = jax.tree_util.tree_map(lambda s: s + 0.1, meta["bn_stats"])
    adapted = jax.jit(plus.adapt, static_argnums=2)(meta, task[0], S)
    stats = jax.tree_util.tree_map(lambda s: s[S], meta["bn_stats"])
    xq = task[1][0]
    logits = lambda x: model.apply({"params": adapted, "bn_stats": stats}, x)
    full = logits(xq)
    swapped = logits(jnp.concatenate([xq[:1], jnp.zeros_like(xq[1:])]))
    np.testing.assert_allclose(full[0], swapped[0], rtol=1e-5, atol=1e-6)


def test_bnrs_batch_test_statistics_evaluate_as_without_running_statistics(bn_run):
    model, plus, meta, task, _ = bn_run
    meta = dict(meta)
    meta["bn_stats"] = jax.tree_util.tree_map(lambda s: s + 0.1, meta["bn_stats"])
    batch = mamlpp(model, classification(), inner_lr=0.3, inner_steps=S, unroll=1, bnrs=True,
                   bnwb=True, test_stats="batch")
    no_bnrs = mamlpp(model, classification(), inner_lr=0.3, inner_steps=S, unroll=1, bnwb=True)
    without = {k: v for k, v in meta.items() if k != "bn_stats"}
    got = jax.jit(batch.evaluate, static_argnums=2)(meta, task, S)
    want = jax.jit(no_bnrs.evaluate, static_argnums=2)(without, task, S)
    running = jax.jit(plus.evaluate, static_argnums=2)(meta, task, S)
    np.testing.assert_allclose(got["outer/loss"], want["outer/loss"], rtol=1e-5)
    assert not np.allclose(got["outer/loss"], running["outer/loss"], rtol=1e-3)
    with pytest.raises(ValueError, match="use 'running' or 'batch'"):
        mamlpp(model, classification(), inner_lr=0.3, inner_steps=S, test_stats="query")


def test_eval_bn_stats_on_a_run_without_bnrs_is_a_clear_error(tmp_path, capsys):
    train_and_evaluate(Config(steps=1, meta_batch=2, eval_tasks=2, eval_batch=2), tmp_path,
                       progress=False)
    assert cli.main(["eval", str(tmp_path), "--tasks", "2", "--bn-stats", "batch"]) == 2
    assert "--bn-stats needs running statistics" in capsys.readouterr().err


def test_bnrs_running_statistics_are_a_moving_average_of_batch_statistics(bn_run):
    model, plus, meta, task, task_grad = bn_run
    optimizer = plus.outer(optax.adam(1e-3))
    grads, _, _ = task_grad(meta, task)
    updates, _ = optimizer.update(grads, optimizer.init(meta), meta)
    new = optax.apply_updates(meta, updates)
    # State 0's support batch statistics, computed here directly with the initial weights.
    _, aux = model.apply({"params": plus.params_of(meta)}, task[0][0], mutable=["moments"])
    batch = aux["moments"]["body"]["conv1"]
    for name in ("mean", "var"):
        old = meta["bn_stats"]["body"]["conv1"][name][0]
        want = 0.9 * old + 0.1 * jnp.reshape(batch[name], old.shape)
        np.testing.assert_allclose(new["bn_stats"]["body"]["conv1"][name][0], want,
                                   rtol=1e-5, atol=1e-6)
    # the rest of the meta-parameters are stepped by the optimiser (Adam: |update| ~ lr)
    step = np.abs(np.asarray(new["params"]["head"]["bias"] - meta["params"]["head"]["bias"]))
    assert np.allclose(step[step > 0], 1e-3, rtol=1e-2)


def test_lslr_rates_are_per_tensor_per_step_with_exact_meta_gradient():
    with jax.enable_x64(True):
        model, params, task = _mlp_setup(jnp.float64)
        plus = mamlpp(model, regression(), inner_lr=0.05, inner_steps=S, lslr=True)
        meta = plus.init(params)
        assert meta["lslr"]["body"]["dense2"]["kernel"].shape == (S,)
        assert meta["lslr"]["head"]["bias"].dtype == jnp.float64
        grads, _, _ = jax.jit(plus.task_grad)(meta, task)
        leaves, treedef = jax.tree_util.tree_flatten(meta["lslr"])
        keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
        v = treedef.unflatten([jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)])

        @jax.jit
        def loss(rates):
            return plus.evaluate({**meta, "lslr": rates}, task, S)["outer/loss"]

        eps = 1e-6
        shifted = lambda s: jax.tree_util.tree_map(lambda r, d: r + s * eps * d, meta["lslr"], v)
        fd = (loss(shifted(1)) - loss(shifted(-1))) / (2 * eps)
        analytic = sum(jnp.vdot(g, d) for g, d in zip(_leaves(grads["lslr"]), _leaves(v)))
        np.testing.assert_allclose(analytic, fd, rtol=1e-6)


def test_lslr_negative_rate_steps_uphill():
    model = build_model("mlp", 1, hidden=8)
    params = init_params(model, jax.random.PRNGKey(0), jnp.zeros((4, 1)))
    x = jnp.linspace(-1, 1, 5)[:, None]
    support = (x, jnp.sin(x))
    plus = mamlpp(model, regression(), inner_lr=0.1, inner_steps=1, lslr=True)
    meta = plus.init(params)
    meta["lslr"] = jax.tree_util.tree_map(lambda r: -0.1 * jnp.ones_like(r), meta["lslr"])
    loss = lambda p: jnp.mean((model.apply({"params": p}, x) - support[1]) ** 2)
    grad = jax.grad(loss)(params)
    want = jax.tree_util.tree_map(lambda p, g: p + 0.1 * g, params, grad)
    _close(plus.adapt(meta, support, 1), want, rtol=1e-5, atol=1e-7)
    assert loss(want) > loss(params)


def test_first_order_mamlpp_drops_second_order_terms():
    model, params, task = _mlp_setup()
    second = mamlpp(model, regression(), inner_lr=0.05, inner_steps=S, lslr=True)
    first = mamlpp(model, regression(), inner_lr=0.05, inner_steps=S, lslr=True,
                   first_order=True)
    meta = second.init(params)
    g2, _, _ = jax.jit(second.task_grad)(meta, task)
    g1, _, _ = jax.jit(first.task_grad)(meta, task)
    assert not np.allclose(g1["params"]["body"]["dense1"]["kernel"],
                           g2["params"]["body"]["dense1"]["kernel"])
    # with equal rates, first-order MAML++ is FOMAML
    fo = maml(model, regression(), inner_lr=0.05, inner_steps=S, first_order=True)
    g_fo, _, _ = jax.jit(fo.task_grad)(params, task)
    _close(g1["params"], g_fo, rtol=1e-4, atol=1e-6)


def test_derivative_order_annealing_uses_two_compiled_steps_without_retracing(tmp_path,
                                                                            monkeypatch):
    built = []

    def recording(*args, **kwargs):
        step = make_meta_step(*args, **kwargs)
        built.append(step)
        return step

    monkeypatch.setattr(loop_module, "make_meta_step", recording)
    cfg = Config(algo="mamlpp", inner_steps=2, eval_inner_steps=2, meta_batch=2, steps=4,
                 log_every=1, eval_every=4, eval_tasks=2, eval_batch=2, checkpoint_every=2,
                 options=dict(msl=True, msl_anneal_steps=4, lslr=True), da_steps=2,
                 meta_lr_schedule="cosine")
    state = train_and_evaluate(cfg, tmp_path, progress=False)
    assert len(built) == 2  # second order, and first order for steps 1..da_steps
    assert [f._cache_size() for f in built] == [1, 1]
    assert not np.allclose(state.params["lslr"]["head"]["kernel"], cfg.inner_lr)
    # metajax plot-lrs draws the learned rates
    assert cli.main(["plot-lrs", str(tmp_path), "--out", str(tmp_path / "lrs")]) == 0
    rates = json.loads((tmp_path / "lrs" / "learning_rates.json").read_text())["rates"]
    assert set(rates) == {f"{part}/{leaf}" for part in ("body/dense1", "body/dense2", "head")
                          for leaf in ("kernel", "bias")}
    np.testing.assert_allclose(rates["head/kernel"], state.params["lslr"]["head"]["kernel"])
    assert (tmp_path / "lrs" / "learning_rates.png").read_bytes()[:4] == b"\x89PNG"


def test_per_step_batch_norm_and_rates_are_checkpointed_with_the_rest(tmp_path):
    model, params, *_ = _setup()
    learner = mamlpp(model, classification(), inner_lr=0.3, inner_steps=S, bnwb=True, bnrs=True,
                     lslr=True)
    optimizer = learner.outer(optax.adam(1e-3))
    template = create_train_state(learner, optimizer, params, jax.random.PRNGKey(0))
    assert set(template.params) == {"params", "bn", "lslr", "bn_stats"}
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 100))
    trained = template.replace(step=template.step + 7, params=jax.tree_util.tree_map(
        lambda p: p + jax.random.normal(next(keys), p.shape), template.params))
    save_checkpoint(tmp_path, trained, 7)
    restored, step = restore_checkpoint(tmp_path, template)
    assert step == 7
    _close(restored.params, trained.params)
    assert not np.allclose(restored.params["bn_stats"]["body"]["conv2"]["var"],
                           template.params["bn_stats"]["body"]["conv2"]["var"])


def test_plot_lrs_on_a_run_without_learned_rates_is_a_clear_error(tmp_path, capsys):
    train_and_evaluate(Config(steps=1, meta_batch=2, eval_tasks=2, eval_batch=2), tmp_path,
                       progress=False)
    assert cli.main(["plot-lrs", str(tmp_path)]) == 2
    assert "--algo mamlpp --lslr true" in capsys.readouterr().err


def test_cosine_meta_lr_anneals_to_the_minimum():
    cfg = Config(algo="mamlpp", outer_optimizer="sgd", meta_lr=0.1, min_meta_lr=0.01, steps=10,
                 meta_lr_schedule="cosine")
    opt = loop_module._outer_optimizer(cfg)
    params = {"w": jnp.zeros(())}
    state = opt.init(params)
    rates = []
    for _ in range(11):
        updates, state = opt.update({"w": jnp.ones(())}, state, params)
        rates.append(-float(updates["w"]))
    np.testing.assert_allclose(rates[0], 0.1, rtol=1e-6)
    np.testing.assert_allclose(rates[5], 0.01 + 0.09 * 0.5, rtol=1e-5)
    np.testing.assert_allclose(rates[10], 0.01, rtol=1e-5)
    assert all(a >= b for a, b in zip(rates, rates[1:]))


@pytest.mark.parametrize("changes, message", [
    (dict(algo="maml", options=dict(msl=True)), "--msl is not an option of --algo maml"),
    (dict(algo="anil", options=dict(bnrs=True, lslr=True)),
     "--bnrs, --lslr are not options of --algo anil (its options: none)"),
    (dict(algo="protonets", da_steps=3), "--da-steps needs an algorithm with a first-order variant"),
    (dict(algo="mamlpp", meta_lr_schedule="linear"), "--meta-lr-schedule"),
])
def test_incompatible_switches_are_clear_errors(changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Config(**changes).validate()


def test_batch_norm_parts_on_a_model_without_batch_norm_is_a_clear_error():
    model = build_model("mlp", 1, hidden=8)
    params = init_params(model, jax.random.PRNGKey(0), jnp.zeros((4, 1)))
    with pytest.raises(ValueError, match="need metajax.s batch norm"):
        mamlpp(model, regression(), inner_lr=0.1, inner_steps=1, bnrs=True).init(params)


def test_algorithm_options_are_flags_of_the_chosen_algorithm(tmp_path, capsys):
    # mamlpp's own options are flags because its factory declares them; maml has no --msl.
    args = ["train", "--workdir", str(tmp_path / "w"), "--steps", "1", "--meta-batch", "2",
            "--eval-tasks", "2", "--eval-batch", "2", "--no-progress"]
    assert cli.main([*args, "--algo", "mamlpp", "--msl", "true", "--msl-anneal-steps", "3"]) == 0
    saved = Config.load(tmp_path / "w")
    assert saved.options == {"msl": True, "msl_anneal_steps": 3}
    with pytest.raises(SystemExit):
        cli.main([*args[:2], str(tmp_path / "x"), *args[3:], "--algo", "maml", "--msl", "true"])
    assert "unrecognized arguments: --msl" in capsys.readouterr().err
    # an old config.json with the options as fields still loads
    old = json.loads(saved.to_json())
    old.pop("options")
    old.update(msl=True, msl_anneal_steps=3, bnwb=False)
    (tmp_path / "w" / "config.json").write_text(json.dumps(old))
    assert Config.load(tmp_path / "w").options == {"msl": True, "msl_anneal_steps": 3,
                                                   "bnwb": False}
