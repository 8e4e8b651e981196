"""HalfCheetah on MuJoCo: the C engine (pure_callback) and MJX agree, the rewards follow the task
definitions, and a meta-iteration runs end to end from the CLI."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.cli import main as cli_main
from metajax.rl.envs import make_env
from metajax.rl.envs.halfcheetah import halfcheetah_env
from metajax.rl.envs.mujoco_physics import make_physics
from metajax.training import read_metrics


@pytest.fixture
def x64():
    """float64 process-wide for the test: the C engine's callbacks run on XLA's threads, where
    the thread-local ``jax.enable_x64`` context does not reach."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


def _trajectory(env, actions, task, key):
    def run(key):
        state, obs = env.reset(key, task)

        def step(state, action):
            state, obs, reward, done = env.step(state, action, task)
            return state, (obs, reward, done, state.qpos)
        return obs, jax.lax.scan(step, state, actions)[1]
    # Two environments at once: the C engine's callback sees a batch, as in rollouts.
    return jax.jit(jax.vmap(run))(jax.random.split(key, 2))


def test_c_engine_and_mjx_give_the_same_trajectory_in_float64(x64):
    actions = 4.0 * jax.random.normal(jax.random.PRNGKey(0), (12, 6), jnp.float64)
    out = {}
    for engine in ("c", "mjx"):
        sim = make_physics("half_cheetah.xml", "torso", engine=engine, frame_skip=5,
                           dtype=jnp.float64)
        out[engine] = _trajectory(halfcheetah_env("vel", sim, jnp.float64), actions, 1.3,
                                  jax.random.PRNGKey(1))
    (obs0_c, (obs_c, rew_c, _, qpos_c)), (obs0_m, (obs_m, rew_m, _, qpos_m)) = out["c"], out["mjx"]
    assert obs_c.shape == (2, 12, 20) and obs_c.dtype == jnp.float64
    np.testing.assert_allclose(obs0_c, obs0_m, atol=1e-12)
    np.testing.assert_allclose(qpos_c, qpos_m, atol=1e-9)
    np.testing.assert_allclose(obs_c, obs_m, atol=1e-8)
    np.testing.assert_allclose(rew_c, rew_m, atol=1e-8)
    # The cheetah moved: these are not trivially equal trajectories.
    assert np.ptp(np.asarray(qpos_c[:, :, 0])) > 0.05


def test_rewards_follow_the_direction_and_velocity_task_definitions(x64):
    actions = 3.0 * jax.random.normal(jax.random.PRNGKey(2), (8, 6), jnp.float64)
    key = jax.random.PRNGKey(3)
    env_dir = make_env("halfcheetah-dir", dtype=jnp.float64)
    env_vel = make_env("halfcheetah-vel", dtype=jnp.float64)
    _, (_, forward, done, qpos) = _trajectory(env_dir, actions, 1.0, key)
    _, (_, backward, _, _) = _trajectory(env_dir, actions, -1.0, key)
    _, (_, vel_reward, _, _) = _trajectory(env_vel, actions, 0.5, key)
    state, _ = jax.vmap(env_dir.reset, in_axes=(0, None))(jax.random.split(key, 2), 1.0)
    ctrl = np.clip(np.asarray(actions), -10, 10) / 10
    cost = 0.05 * np.sum(ctrl ** 2, axis=-1)
    x = np.concatenate([np.asarray(state.qpos[:, :1]), np.asarray(qpos[:, :, 0])], axis=1)
    velocity = np.diff(x, axis=1) / 0.05
    np.testing.assert_allclose(forward, velocity - cost, atol=1e-9)
    np.testing.assert_allclose(backward, -velocity - cost, atol=1e-9)
    np.testing.assert_allclose(vel_reward, -np.abs(velocity - 0.5) - cost, atol=1e-9)
    assert not np.any(done)
    # Tasks: directions are +-1, goal velocities lie in [0, 2].
    dirs = jax.vmap(env_dir.sample_task)(jax.random.split(key, 64))
    vels = jax.vmap(env_vel.sample_task)(jax.random.split(key, 64))
    assert set(np.asarray(dirs).tolist()) == {-1.0, 1.0}
    assert 0 <= float(vels.min()) and float(vels.max()) <= 2 and float(vels.std()) > 0.3


@pytest.mark.parametrize("algo", ["maml", "anil"])
def test_halfcheetah_meta_iteration_runs_from_the_cli(tmp_path, algo):
    flags = ["train", "--env", "halfcheetah-vel", "--algo", algo, "--workdir", str(tmp_path),
             "--no-progress", "--meta-batch", "2", "--trajectories", "3", "--horizon", "10",
             "--hidden", "8", "--steps", "2", "--eval-every", "2", "--eval-tasks", "2",
             "--eval-batch", "2"]
    assert cli_main(flags) == 0
    metrics = read_metrics(tmp_path)
    assert [step for step, _ in metrics["train/return_post"]] == [1, 2]
    assert all(np.isfinite(v) for _, v in metrics["val/return_post"])
    assert metrics["train/accepted"][0][1] in (0.0, 1.0)
