"""The training step and loop: vmap vs loop, jit vs no-jit, recompilation, NaN, resume, eval."""
import functools
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax.algorithms import classification, make_algorithm, regression
from metajax.configs import CONFIGS, get_named_config
from metajax.data.episodes import sample_episode
from metajax.models import build_model, init_params
from metajax.training import (Config, NonFiniteLossError, batch_task_grads,
                              create_train_state, default_task_chunk, evaluate_run,
                              list_checkpoints, make_meta_step, read_metrics, restore_checkpoint,
                              sample_tasks, train_and_evaluate)

SINUSOID = Config(steps=40, meta_batch=4, log_every=10, eval_every=20, eval_tasks=8,
                  eval_batch=4, checkpoint_every=10)


def _synthetic_images(classes=12, examples=6, size=10):
    return jax.random.randint(jax.random.PRNGKey(3), (classes, examples, size, size, 1), 0, 256
                              ).astype(jnp.uint8)


def _conv_setup(algo, meta_batch=3):
    images = _synthetic_images()
    sample = functools.partial(sample_episode, ways=3, shots=1, queries=2)
    model = build_model("conv4", 3, hidden=4)
    learner = make_algorithm(algo, model, classification(), inner_lr=0.3, inner_steps=2)
    params = init_params(model, jax.random.PRNGKey(0), jnp.zeros((3, 10, 10, 1)))
    tasks = sample_tasks(sample, jax.random.split(jax.random.PRNGKey(1), meta_batch), images)
    return learner, params, tasks, sample, images


def _assert_trees_close(a, b, **tol):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(x, y, **tol)


@pytest.mark.parametrize("algo", ["maml", "fomaml", "anil"])
def test_vmapped_task_batch_equals_python_loop(algo):
    learner, params, tasks, _, _ = _conv_setup(algo)
    grads, metrics, _ = jax.jit(functools.partial(batch_task_grads, learner, chunk=0))(params, tasks)
    task_grad = jax.jit(learner.task_grad)
    per_task = [task_grad(params, jax.tree_util.tree_map(lambda x: x[i], tasks)) for i in range(3)]
    loop_grads = jax.tree_util.tree_map(lambda *g: sum(g) / 3, *[g for g, _, _ in per_task])
    loop_loss = sum(m["outer/loss"] for _, m, _ in per_task) / 3
    _assert_trees_close(grads, loop_grads, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(metrics["outer/loss"], loop_loss, rtol=1e-5)


def test_task_chunks_give_the_vmapped_meta_gradient():
    # chunk 1: a sequential map (the CPU default); chunk 2 of 3 tasks: a vmapped chunk + remainder.
    # How tasks are mapped does not depend on the model: a small MLP on sinusoids compiles fast.
    from metajax.data.sinusoid import sample_sinusoid_task
    model = build_model("mlp", 1, hidden=16)
    learner = make_algorithm("maml", model, regression(), inner_lr=0.05, inner_steps=2)
    params = init_params(model, jax.random.PRNGKey(0), jnp.zeros((5, 1)))
    sample = lambda key, data: sample_sinusoid_task(key, shots=5, queries=5)
    tasks = sample_tasks(sample, jax.random.split(jax.random.PRNGKey(1), 3), None)
    grads = {chunk: jax.jit(functools.partial(batch_task_grads, learner, chunk=chunk))(params, tasks)
             for chunk in (0, 1, 2)}
    for chunk in (1, 2):
        _assert_trees_close(grads[chunk][0], grads[0][0], rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(grads[chunk][1]["outer/loss"], grads[0][1]["outer/loss"],
                                   rtol=1e-5)
    with pytest.raises(ValueError, match="task chunk must be >= 0"):
        batch_task_grads(learner, params, tasks, chunk=-1)
    assert default_task_chunk("cpu") == 1 and default_task_chunk("gpu") == 0


def test_jitted_meta_step_equals_unjitted_and_does_not_recompile():
    from metajax.data.sinusoid import sample_sinusoid_task
    model = build_model("mlp", 1)
    learner = make_algorithm("maml", model, regression(), inner_lr=0.01, inner_steps=2)
    params = init_params(model, jax.random.PRNGKey(0), jnp.zeros((5, 1)))
    sample = lambda key, data: sample_sinusoid_task(key, shots=5, queries=5)
    optimizer = optax.adam(1e-3)
    state = create_train_state(learner, optimizer, params, jax.random.PRNGKey(7))
    eager = make_meta_step(learner, optimizer, sample, 4, jit=False)
    jitted = make_meta_step(learner, optimizer, sample, 4)
    with jax.disable_jit():
        s_eager, m_eager = eager(state, None)
    copy = jax.tree_util.tree_map(jnp.array, state)  # the jitted step donates its input
    s_jit, m_jit = jitted(copy, None)
    _assert_trees_close(s_jit.params, s_eager.params, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m_jit["outer/loss"], m_eager["outer/loss"], rtol=1e-5)
    assert int(s_jit.step) == 1 and not np.array_equal(s_jit.rng, state.rng)
    s_jit2, _ = jitted(s_jit, None)
    assert jitted._cache_size() == 1
    assert int(s_jit2.step) == 2


def _train(workdir, cfg=SINUSOID, **kw):
    return train_and_evaluate(cfg, workdir, progress=False, **kw)


def test_train_writes_metrics_checkpoints_and_refuses_to_overwrite(tmp_path):
    state = _train(tmp_path)
    assert int(state.step) == SINUSOID.steps
    assert [s for s, _ in list_checkpoints(tmp_path)] == [30, 40]  # keep_checkpoints=2
    metrics = read_metrics(tmp_path)
    assert [s for s, _ in metrics["train/outer/loss"]] == [10, 20, 30, 40]
    assert [s for s, _ in metrics["val/outer/mse"]] == [20, 40]
    assert not any(p.name.startswith(".") for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(FileExistsError, match="--resume"):
        _train(tmp_path)


def test_resume_continues_an_extended_run_exactly(tmp_path):
    full = _train(tmp_path / "full")
    _train(tmp_path / "part", SINUSOID.replace(steps=20))
    resumed = _train(tmp_path / "part", SINUSOID, resume=True)
    for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed)):
        assert np.array_equal(a, b)
    assert [s for s, _ in read_metrics(tmp_path / "part")["train/outer/loss"]] == [10, 20, 30, 40]


def test_nan_meta_loss_stops_with_the_step_and_the_fix(tmp_path):
    # (test_faults.py checks which checkpoint is kept and the resume with lower rates)
    cfg = SINUSOID.replace(steps=200, meta_lr=1e4, inner_lr=50.0, checkpoint_every=1)
    with pytest.raises(NonFiniteLossError, match="is (nan|inf) at step 2") as err:
        _train(tmp_path, cfg)
    assert "--meta-lr" in str(err.value) and "no checkpoint was kept" in str(err.value)


def test_checkpoints_never_unpickle(tmp_path):
    _train(tmp_path, SINUSOID.replace(steps=10))
    marker = tmp_path / "pwned"
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "checkpoints" / "step_00000099.msgpack"
    evil.write_bytes(pickle.dumps(Evil()))
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        state, step = restore_checkpoint(tmp_path, _run_template(tmp_path))
    assert step == 10 and not marker.exists()


def _run_template(workdir):
    from metajax.training.loop import _Run
    return _Run(Config.load(workdir)).initial_state()


def test_evaluate_run_reports_mean_and_ci(tmp_path):
    _train(tmp_path)
    result = evaluate_run(tmp_path, tasks=10, inner_steps=3, batch=4)
    assert result["tasks"] == 10 and result["inner_steps"] == 3 and result["checkpoint_step"] == 40
    assert result["mse"] > 0 and 0 < result["ci95"] < result["mse"]
    again = evaluate_run(tmp_path, tasks=10, inner_steps=3, batch=5)
    np.testing.assert_allclose(again["mse"], result["mse"], rtol=1e-5)  # batch size is no factor


def test_sinusoid_maml_beats_pretrained_baseline(tmp_path):
    short = dict(steps=3000, log_every=1000, eval_every=3000, eval_tasks=10, checkpoint_every=3000)
    results = {}
    for algo, config in (("maml", "default"), ("pretrain", "sinusoid_pretrain")):
        _train(tmp_path / algo, get_named_config(config).replace(**short))
        results[algo] = evaluate_run(tmp_path / algo, tasks=200, inner_steps=10)
    maml_mse, base_mse = results["maml"]["mse"], results["pretrain"]["mse"]
    assert maml_mse + results["maml"]["ci95"] < base_mse - results["pretrain"]["ci95"]
    assert maml_mse < 0.6 * base_mse, results


@pytest.mark.parametrize("name", CONFIGS)
def test_every_named_config_runs_one_step(name, tmp_path, omniglot_data_dir,
                                          miniimagenet_data_dir):
    cfg = get_named_config(name)
    data_dirs = {"omniglot": omniglot_data_dir, "miniimagenet": miniimagenet_data_dir}
    # Small sizes (the config's own model, algorithm and switches, fewer filters and one
    # validation step): the test is that every config builds, steps, validates and checkpoints.
    cfg = cfg.replace(steps=1, eval_tasks=2, eval_batch=2, meta_batch=2, eval_inner_steps=1,
                      hidden=8 if cfg.dataset != "sinusoid" else cfg.hidden,
                      data_dir=str(data_dirs[cfg.dataset]) if cfg.dataset in data_dirs else None)
    state = _train(tmp_path, cfg)
    assert int(state.step) == 1
    assert list_checkpoints(tmp_path)[-1][0] == 1


def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "metajax.cli", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, **kw)


@pytest.mark.parametrize("args, message", [
    (["--algo", "nope"], "unknown algorithm 'nope'; choose one of: maml"),
    (["--dataset", "imagenet42"], "unknown dataset 'imagenet42'"),
    (["--shots", "0"], "--shots must be >= 1"),
    (["--query", "0"], "--query must be >= 1"),
    (["--dataset", "omniglot", "--data-dir", "/nonexistent/dir"], "/nonexistent/dir"),
])
def test_cli_rejects_bad_input_with_a_clear_message(args, message, tmp_path):
    out = _cli("train", "--workdir", str(tmp_path / "run"), "--steps", "1", *args)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_rejects_more_ways_than_classes(tmp_path, omniglot_data_dir):
    out = _cli("train", "--dataset", "omniglot", "--data-dir", str(omniglot_data_dir),
               "--ways", "2000", "--workdir", str(tmp_path), "--steps", "1")
    assert out.returncode == 2
    assert "--ways 2000" in out.stderr and "400" in out.stderr  # the val split has 400 classes


def test_cli_data_dir_without_archives(tmp_path):
    (tmp_path / "empty").mkdir()
    out = _cli("train", "--dataset", "omniglot", "--workdir", str(tmp_path / "run"),
               env={"METAJAX_DATA_DIR": str(tmp_path / "empty")})
    assert out.returncode == 2 and "images_background.zip" in out.stderr


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    args = ["--steps", "3000", "--checkpoint-every", "100", "--eval-every", "3000",
            "--eval-tasks", "4", "--log-every", "100", "--no-progress"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "metajax.cli", "train", "--workdir",
                             str(killed), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not list_checkpoints(killed) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps_at_kill = [s for s, _ in list_checkpoints(killed)]
    assert steps_at_kill and max(steps_at_kill) < 3000, steps_at_kill
    resumed = _cli("train", "--workdir", str(killed), "--resume", *args)
    assert resumed.returncode == 0, resumed.stderr
    straight = _cli("train", "--workdir", str(tmp_path / "straight"), *args)
    assert straight.returncode == 0, straight.stderr
    a = (killed / "checkpoints" / "step_00003000.msgpack").read_bytes()
    b = (tmp_path / "straight" / "checkpoints" / "step_00003000.msgpack").read_bytes()
    assert a == b  # params, optimiser state, step and key, bit for bit


def test_cli_eval_prints_json(tmp_path):
    _train(tmp_path)
    out = _cli("eval", str(tmp_path), "--tasks", "6", "--inner-steps", "2")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["tasks"] == 6 and "mse" in result and "ci95" in result
