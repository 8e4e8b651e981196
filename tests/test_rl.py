"""Meta-RL on 2D navigation: env, rollouts, returns/GAE, baseline, policy gradient, TRPO, the
second-order meta-gradient, vmap vs loop, jit vs no-jit, training, CLI resume and bad input."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from metajax.cli import main as cli_main
from metajax.rl import meta_step as ms
from metajax.rl.baseline import baseline_features, fit_baseline, predict_baseline
from metajax.rl.envs import Env, make_env, make_nav2d
from metajax.rl.policy import init_policy, policy_distribution
from metajax.rl.returns import discounted_returns, gae, masked_mean, normalize_advantages
from metajax.rl.rollout import rollout
from metajax.rl.trainer import RLRun, train_rl
from metajax.rl.trpo import conjugate_gradient, trpo_update
from metajax.training import Config, NonFiniteLossError, read_metrics, restore_checkpoint

TINY = ms.MetaRLSettings(meta_batch=2, trajectories=3, horizon=4)


def _close(a, b, **tol):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(x, y, **tol)


def _policy(env, hidden=(5, 5), dtype=jnp.float32, seed=0):
    return init_policy(key=jax.random.PRNGKey(seed), observation_size=env.observation_size,
                       action_size=env.action_size, hidden=hidden, dtype=dtype)


# ----------------------------------------------------------------------------- environment

def test_nav2d_step_clips_actions_rewards_distance_and_terminates_near_goal():
    env = make_nav2d()
    goal = jnp.array([0.25, -0.05])
    state, obs = env.reset(jax.random.PRNGKey(0), goal)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    state, obs, reward, done = env.step(state, jnp.array([3.0, -0.04]), goal)
    np.testing.assert_allclose(obs, [0.1, -0.04], atol=1e-7)  # x clipped to 0.1
    np.testing.assert_allclose(reward, -np.hypot(0.15, 0.01), rtol=1e-6)
    assert not done
    state, obs, reward, done = env.step(state, jnp.array([0.1, -0.005]), goal)
    assert not done  # x is 0.05 away
    state, obs, reward, done = env.step(state, jnp.array([0.045, -0.009]), goal)
    assert done  # both coordinates within 0.01: |0.005|, |0.004|


def test_rollout_masks_steps_after_the_episode_ends():
    # A counter whose episode b ends after step (b + 1): mask has exactly b + 1 leading ones.
    def reset(key, task):
        b = jax.random.randint(key, (), 0, 3)
        return (jnp.zeros((), jnp.int32), b), jnp.zeros((1,))

    def step(state, action, task):
        t, b = state
        done = t >= b
        return (t + 1, b), jnp.ones((1,)) * (t + 1), jnp.asarray(1.0) + task, done

    env = Env("counter", 1, 1, lambda key: jnp.zeros(()), reset, step)
    params = init_policy(key=jax.random.PRNGKey(0), observation_size=1, action_size=1, hidden=(2,))
    traj = rollout(env, params, jnp.asarray(0.5), key=jax.random.PRNGKey(1), num_trajectories=16,
                   horizon=5)
    keys = jax.random.split(jax.random.split(jax.random.PRNGKey(1))[0], 16)
    ends = np.array([int(jax.random.randint(k, (), 0, 3)) for k in keys])
    expected = (np.arange(5)[:, None] <= ends[None, :]).astype(np.float32)
    assert len(set(ends)) > 1
    np.testing.assert_array_equal(traj.mask, expected)
    np.testing.assert_array_equal(traj.rewards, 1.5 * expected)
    np.testing.assert_array_equal(traj.observations[:, :, 0], np.arange(5)[:, None] * np.ones(16))


def test_rollout_rejects_horizon_below_one():
    env = make_env("nav2d")
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        rollout(env, _policy(env), jnp.zeros(2), key=jax.random.PRNGKey(0), num_trajectories=2,
                horizon=0)


# ------------------------------------------------------------------- returns, GAE, baseline

def _padded_batch(rng, horizon=7, batch=5):
    lengths = rng.integers(1, horizon + 1, size=batch)
    mask = (np.arange(horizon)[:, None] < lengths[None, :]).astype(np.float64)
    rewards = rng.normal(size=(horizon, batch)) * mask
    values = rng.normal(size=(horizon, batch))
    return rewards, values, mask, lengths


def test_gae_and_returns_match_a_python_loop():
    rng = np.random.default_rng(0)
    rewards, values, mask, lengths = _padded_batch(rng)
    gamma, lam = 0.9, 0.7
    with jax.enable_x64(True):
        adv = np.asarray(gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask),
                             gamma=gamma, lam=lam))
        ret = np.asarray(discounted_returns(jnp.asarray(rewards), jnp.asarray(mask), gamma=gamma))
    for b, n in enumerate(lengths):
        v = list(values[:n, b]) + [0.0]
        running, running_ret = 0.0, 0.0
        for t in reversed(range(n)):
            delta = rewards[t, b] + gamma * v[t + 1] - v[t]
            running = delta + gamma * lam * running
            running_ret = rewards[t, b] + gamma * running_ret
            assert adv[t, b] == pytest.approx(running, abs=1e-12)
            assert ret[t, b] == pytest.approx(running_ret, abs=1e-12)
        np.testing.assert_allclose(adv[n:, b], 0.0, atol=1e-12)
    # lambda = 1: A_t = R_t - V(s_t)
    with jax.enable_x64(True):
        adv1 = gae(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask), gamma=gamma, lam=1.0)
    np.testing.assert_allclose(adv1, (ret - values) * mask, atol=1e-12)


def test_normalized_advantages_have_zero_mean_and_unit_scale_over_valid_steps():
    rng = np.random.default_rng(1)
    rewards, _, mask, _ = _padded_batch(rng)
    norm = normalize_advantages(jnp.asarray(rewards * 3 + 2, jnp.float32), jnp.asarray(mask, jnp.float32))
    assert float(masked_mean(norm, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(masked_mean(norm ** 2, mask)) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_array_equal(np.asarray(norm)[mask == 0], 0.0)


def test_linear_baseline_recovers_a_linear_value_function_and_survives_singular_features():
    rng = np.random.default_rng(2)
    _, _, mask, _ = _padded_batch(rng, horizon=12, batch=6)
    with jax.enable_x64(True):
        obs = jnp.asarray(rng.normal(size=(12, 6, 3)))
        true_w = jnp.asarray(rng.normal(size=(10,)))
        returns = baseline_features(obs, jnp.asarray(mask)) @ true_w
        w = fit_baseline(obs, returns, jnp.asarray(mask))
        np.testing.assert_allclose(predict_baseline(w, obs, jnp.asarray(mask)), returns, atol=1e-4)
    # Constant-zero observations make Phi^T Phi singular: the ridge term keeps the fit finite.
    w = fit_baseline(jnp.zeros((12, 6, 2)), jnp.ones((12, 6)), jnp.ones((12, 6)))
    assert np.all(np.isfinite(w))
    np.testing.assert_allclose(predict_baseline(w, jnp.zeros((12, 6, 2)), jnp.ones((12, 6))),
                               1.0, atol=1e-2)


# ------------------------------------------------------------------------------ estimators

def test_policy_gradient_estimator_matches_finite_differences_of_the_expected_return():
    # One step from s0, reward -|a - g|^2: J(theta) = -(|mu(s0) - g|^2 + sum sigma^2) exactly.
    with jax.enable_x64(True):
        s0, goal = jnp.array([0.3, -0.2]), jnp.array([0.5, 0.1])
        params = init_policy(key=jax.random.PRNGKey(3), observation_size=2, action_size=2,
                             hidden=(3,), dtype=jnp.float64)
        flat, unravel = ravel_pytree(params)

        def expected_return(x):
            mean, log_std = policy_distribution(unravel(x), s0)
            return -(jnp.sum((mean - goal) ** 2) + jnp.sum(jnp.exp(2 * log_std)))

        eps = 1e-6
        fd = np.array([(expected_return(flat + eps * e) - expected_return(flat - eps * e)) / (2 * eps)
                       for e in np.eye(flat.size)])
        n = 200_000
        mean, log_std = policy_distribution(params, s0)
        actions = mean + jnp.exp(log_std) * jax.random.normal(jax.random.PRNGKey(4), (1, n, 2),
                                                               jnp.float64)
        traj = ms.Trajectories(jnp.broadcast_to(s0, (1, n, 2)), actions,
                               -jnp.sum((actions - goal) ** 2, -1), jnp.ones((1, n)))
        # The inner loss with advantage = reward: its negative gradient estimates grad J.
        pg = -jax.grad(lambda x: ms.reinforce_loss(unravel(x), (traj, traj.rewards)))(flat)
    assert np.linalg.norm(np.asarray(pg) - fd) < 0.03 * np.linalg.norm(fd)  # numpy: jax would drop to float32 here


def test_conjugate_gradient_solves_an_spd_system():
    with jax.enable_x64(True):
        m = jax.random.normal(jax.random.PRNGKey(0), (6, 6), jnp.float64)
        a = m @ m.T + 0.5 * jnp.eye(6)
        b = jnp.arange(1.0, 7.0)
        x = conjugate_gradient(lambda v: a @ v, b, iters=6)
        np.testing.assert_allclose(x, jnp.linalg.solve(a, b), rtol=1e-8)
        # Fewer iterations: a worse, but still descending, solution.
        x2 = conjugate_gradient(lambda v: a @ v, b, iters=2)
        assert 1e-6 < float(jnp.linalg.norm(a @ x2 - b)) < float(jnp.linalg.norm(b))


def test_trpo_line_search_backtracks_into_the_kl_bound():
    # KL = exp(|x - x0|^2) - 1 grows faster than its quadratic model |x - x0|^2, so the full
    # natural step overshoots delta and the line search must shrink it.
    x0 = {"w": jnp.array([0.2, -0.1])}
    c = jnp.array([3.0, 1.0])

    def loss_and_kl(p):
        d = p["w"] - x0["w"]
        return jnp.vdot(c, p["w"]), jnp.expm1(jnp.vdot(d, d) * 40.0)

    new, info = trpo_update(loss_and_kl, x0, max_kl=0.5, cg_iters=5, cg_damping=0.0,
                            ls_steps=15, ls_ratio=0.8)
    assert bool(info.accepted) and int(info.backtracks) > 1
    loss, kl = loss_and_kl(new)
    assert float(kl) <= 0.5 and float(loss) < float(info.loss_before)
    assert float(kl) == pytest.approx(float(info.kl))
    # The unscaled step would violate the bound.
    full = {"w": x0["w"] - (new["w"] - x0["w"]) / 0.8 ** (int(info.backtracks) - 1)}
    assert float(loss_and_kl(full)[1]) > 0.5
    # A flat loss cannot improve: nothing is accepted and the params stay.
    same, info = trpo_update(lambda p: (jnp.asarray(1.0), loss_and_kl(p)[1]), x0, max_kl=0.5,
                             cg_iters=5, cg_damping=1e-3, ls_steps=4, ls_ratio=0.5)
    assert not bool(info.accepted) and int(info.backtracks) == 4
    _close(same, x0)


# ------------------------------------------------------------- the second-order meta-step

def _tiny_batch(algo, dtype=jnp.float64):
    settings = dataclasses.replace(TINY, algo=algo)
    env = make_env("nav2d", dtype=dtype)
    params = _policy(env, hidden=(3, 3), dtype=dtype)
    tasks = jax.vmap(env.sample_task)(jax.random.split(jax.random.PRNGKey(5), settings.meta_batch))
    train, adapted, valid = jax.jit(ms.sample_and_adapt, static_argnums=0, static_argnames="settings")(
        env, params, tasks, key=jax.random.PRNGKey(6), settings=settings)
    old = jax.vmap(policy_distribution)(adapted, valid[0].observations)
    return settings, env, params, tasks, train, valid, old


@pytest.mark.parametrize("algo", ["maml", "anil"])
def test_meta_gradient_and_kl_hessian_match_finite_differences_and_autodiff(algo):
    with jax.enable_x64(True):
        settings, _, params, _, train, valid, old = _tiny_batch(algo)
        flat, unravel = ravel_pytree(params)

        def surrogate(x, settings=settings):
            return ms.surrogate_and_kl(settings, unravel(x), train=train, valid=valid, old_dist=old)

        @jax.jit
        def structured(v):
            loss, grad, fisher_vp = ms.outer_gradient_and_fisher(settings, params, train, valid)
            return loss, ravel_pytree(grad)[0], ravel_pytree(fisher_vp(unravel(v)))[0]

        @jax.jit
        def reference(v, eps=1e-6):
            fd = jax.vmap(lambda e: surrogate(flat + eps * e)[0] - surrogate(flat - eps * e)[0])(
                jnp.eye(flat.size)) / (2 * eps)
            hvp = jax.jvp(jax.grad(lambda x: surrogate(x)[1]), (flat,), (v,))[1]
            # First-order MAML: the inner gradient is a constant, so d theta' / d theta = I.
            first = jax.grad(lambda x: surrogate(
                x, dataclasses.replace(settings, first_order=True))[0])(flat)
            return surrogate(flat)[0], fd, hvp, first

        v = jax.random.normal(jax.random.PRNGKey(7), flat.shape, jnp.float64)
        loss, grad, fvp = structured(v)
        loss_ref, fd, hvp, first = reference(v)
        assert float(loss) == pytest.approx(float(loss_ref), abs=1e-12)
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-9)
        # ... and the second-order terms matter: the first-order gradient is measurably off.
        assert np.linalg.norm(first - fd) > 1e-3 * np.linalg.norm(fd)
        np.testing.assert_allclose(fvp, hvp, rtol=1e-7, atol=1e-10)
        if algo == "anil":
            # Only the head adapts: an inner step leaves the body untouched.
            adapted = ms.adapt_policy(params, jax.tree_util.tree_map(lambda x: x[0], train), settings)
            _close(adapted["body"], params["body"], rtol=0, atol=0)


def test_task_batch_vmap_equals_a_loop_over_tasks():
    with jax.enable_x64(True):
        settings, env, params, tasks, train, valid, old = _tiny_batch("maml")
        one = dataclasses.replace(settings, meta_batch=1)
        grad_fn = jax.jit(lambda s, tr, va: ms.outer_gradient_and_fisher(s, params, tr, va)[1],
                          static_argnums=0)
        sample = jax.jit(lambda task, key: rollout(env, params, task, key=key,
                                                   num_trajectories=one.trajectories,
                                                   horizon=one.horizon))
        keys = jax.random.split(jax.random.split(jax.random.PRNGKey(6))[0], settings.meta_batch)
        grads = []
        for i in range(settings.meta_batch):
            pick = lambda tree: jax.tree_util.tree_map(lambda x: x[i:i + 1], tree)
            _close(sample(tasks[i], keys[i]), jax.tree_util.tree_map(lambda x: x[i], train[0]),
                   rtol=1e-12)
            grads.append(grad_fn(one, pick(train), pick(valid)))
        _close(grad_fn(settings, train, valid),
               jax.tree_util.tree_map(lambda *g: sum(g) / len(g), *grads), rtol=1e-9, atol=1e-12)


def test_jitted_meta_iteration_equals_unjitted():
    with jax.enable_x64(True):
        env = make_env("nav2d", dtype=jnp.float64)
        params = _policy(env, hidden=(3,), dtype=jnp.float64)
        key = jax.random.PRNGKey(8)
        # Damping 0.1, not the protocol's 1e-5: this tiny problem's Fisher is near singular, and
        # conjugate gradient would amplify the last-bit differences of the two paths ~1000x
        # per iteration.
        settings = ms.MetaRLSettings(meta_batch=2, trajectories=2, horizon=3, cg_iters=4,
                                     cg_damping=0.1)
        with jax.disable_jit():
            eager_params, eager = ms.meta_iteration(env, settings, params, key=key)
        jit_params, jitted = jax.jit(ms.meta_iteration, static_argnums=(0, 1))(
            env, settings, params, key=key)
    _close(jit_params, eager_params, rtol=1e-9, atol=1e-12)
    for name in ("return_pre", "return_post", "accepted", "backtracks", "kl"):
        assert float(jitted[name]) == pytest.approx(float(eager[name]), rel=1e-9)
    assert float(jitted["accepted"]) == 1.0 and 0 < float(jitted["kl"]) <= settings.max_kl


# --------------------------------------------------------------------- training and the CLI

SHORT = dict(env="nav2d", algo="maml", hidden=16, meta_batch=10, trajectories=10, horizon=100,
             inner_lr=0.1, steps=10, log_every=1, eval_every=10, eval_tasks=20, eval_batch=20,
             checkpoint_every=5)


def test_short_nav2d_maml_run_improves_the_adapted_return(tmp_path):
    cfg = Config(**SHORT)
    run = RLRun(cfg)
    before = run.evaluate(run.initial_state().params, num_tasks=20, key=jax.random.PRNGKey(9))
    state = train_rl(cfg, tmp_path, progress=False)
    after = run.evaluate(state.params, num_tasks=20, key=jax.random.PRNGKey(9))
    metrics = read_metrics(tmp_path)
    assert len(metrics["train/return_post"]) == 10 and "val/return_post" in metrics
    # Ten TRPO steps take the post-adaptation return from about -90 to better than -60.
    assert after["return_post"] > before["return_post"] + 20, (before, after)


def _cli_train(workdir, *extra):
    args = ["train", "--env", "nav2d", "--workdir", str(workdir), "--no-progress", "--hidden", "16",
            "--meta-batch", "10", "--trajectories", "10", "--eval-every", "10", "--eval-tasks",
            "20", "--eval-batch", "20", "--checkpoint-every", "2", *extra]
    return cli_main(args)


def test_cli_resume_equals_an_uninterrupted_run_and_eval_prints_returns(tmp_path, capsys):
    assert _cli_train(tmp_path / "full", "--steps", "4") == 0
    assert _cli_train(tmp_path / "split", "--steps", "2") == 0
    assert _cli_train(tmp_path / "split", "--steps", "4") == 2  # exists: needs --resume
    assert _cli_train(tmp_path / "split", "--steps", "4", "--resume") == 0
    cfg = Config.load(tmp_path / "full")
    assert cfg.env == "nav2d" and cfg.inner_lr == 0.1 and cfg.max_kl == 0.01  # protocol defaults
    template = RLRun(cfg).initial_state()
    full, step_full = restore_checkpoint(tmp_path / "full", template)
    split, step_split = restore_checkpoint(tmp_path / "split", template)
    assert step_full == step_split == 4
    _close(split, full, rtol=1e-6, atol=1e-7)
    assert read_metrics(tmp_path / "split")["train/kl"] == read_metrics(tmp_path / "full")["train/kl"]
    capsys.readouterr()
    assert cli_main(["eval", str(tmp_path / "full"), "--tasks", "20"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["env"] == "nav2d" and result["checkpoint_step"] == 4
    assert result["return_post"] < 0 and np.isfinite(result["return_pre"])


@pytest.mark.parametrize("flags, message", [
    (["--env", "mars"], "unknown --env 'mars'"),
    (["--env", "nav2d", "--horizon", "0"], "--horizon must be >= 1"),
    (["--env", "nav2d", "--algo", "reptile"], "--algo maml or anil"),
    (["--env", "halfcheetah-dir", "--physics", "bullet"], "unknown --physics 'bullet'"),
])
def test_cli_rejects_bad_rl_settings_with_a_clear_error(tmp_path, capsys, flags, message):
    assert cli_main(["train", "--workdir", str(tmp_path / "run"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "config.json").exists()


def test_nan_in_the_rollout_stops_training_with_a_clear_error(tmp_path):
    # A run whose policy params became NaN: the next rollouts are NaN, and resuming it stops
    # with an error that names the iteration and keeps the last checkpoint.
    from metajax.training import save_checkpoint

    cfg = Config(**{**SHORT, "steps": 3})
    state = RLRun(cfg).initial_state()
    state = state.replace(params=jax.tree_util.tree_map(lambda x: x * jnp.nan, state.params))
    cfg.save(tmp_path)
    save_checkpoint(tmp_path, state, 1)
    with pytest.raises(NonFiniteLossError, match="non-finite values in the rollouts of meta-iteration 2"
                       r".*checkpoint \(step 1\)"):
        train_rl(cfg, tmp_path, resume=True, progress=False)
