"""A researcher's own model, data, config and algorithm on the supported path (README "Bring your
own"): the files of examples/byo/ run here as the README shows them."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import metajax
from metajax.algorithms import classification
from metajax.cli import main
from metajax.core.partition import broadcast_mask
from metajax.training import list_checkpoints

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "byo"
README = Path(__file__).resolve().parents[1] / "README.md"


def make_image_folder(root: Path, *, classes=(6, 4, 4), size=20, seed=0) -> Path:
    """train/val/test folders of grayscale PNGs, 3..7 images per class (ragged); each class has
    its own pattern, so the classes are learnable."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "val", "test"), classes):
        for c in range(count):
            folder = root / split / f"class_{c:02d}"
            folder.mkdir(parents=True)
            pattern = rng.integers(0, 256, (size, size))
            for i in range(3 + (c % 5)):
                noise = rng.integers(-40, 40, (size, size))
                pixels = np.clip(pattern + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels, "L").save(folder / f"img_{i}.png")
    return root


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture
def in_examples(monkeypatch):
    monkeypatch.chdir(EXAMPLES)


def _train_args(workdir, root, *extra):
    return ["train", "--config", "my_config.py", "--workdir", str(workdir), "--data-dir",
            str(root), "--no-progress", *extra]


def test_readme_shows_the_example_files_verbatim():
    readme = README.read_text()
    for name in ("my_model.py", "my_config.py", "my_algorithm.py", "train_python.py"):
        assert (EXAMPLES / name).read_text().strip() in readme, name


@pytest.mark.parametrize("algo", ["maml", "fomaml", "anil", "reptile"])
def test_user_model_trains_evaluates_and_analyses_from_its_run_directory(
        algo, image_root, tmp_path, in_examples, capsys):
    workdir = tmp_path / algo
    assert main(_train_args(workdir, image_root, "--algo", algo, "--steps", "4")) == 0
    assert json.loads((workdir / "config.json").read_text())["model"] == "my_model:small_net"
    capsys.readouterr()
    assert main(["eval", str(workdir), "--tasks", "4", "--batch", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["algo"] == algo and 0.0 <= result["accuracy"] <= 1.0
    assert np.isfinite(result["loss"])
    out = tmp_path / "analysis"
    assert main(["analyze", str(workdir), "--out", str(out), "--weight-distance",
                 "--tasks", "4", "--checkpoints", "last"]) == 0
    distance = json.loads((out / "weight_distance.json").read_text())
    text = json.dumps(distance)
    for layer in ("Conv_0", "BatchNorm_0", "Dense_0", "head"):
        assert f'"{layer}"' in text, layer


def test_running_averages_are_trained_and_used_at_evaluation(image_root, tmp_path, in_examples,
                                                             capsys):
    workdir = tmp_path / "run"
    assert main(_train_args(workdir, image_root, "--steps", "4")) == 0
    run_state = metajax.training.loop._Run(metajax.Config.load(workdir)).restore(workdir)[0]
    stats = run_state.model_state["batch_stats"]["BatchNorm_0"]
    assert not np.allclose(stats["mean"], 0.0)  # updated from the tasks' query batches
    capsys.readouterr()
    results = {}
    for mode in ("batch", "running"):
        assert main(["eval", str(workdir), "--tasks", "4", "--bn-stats", mode]) == 0
        results[mode] = json.loads(capsys.readouterr().out)["loss"]
    assert results["batch"] != results["running"]


def test_python_api_example(image_root, tmp_path):
    out = subprocess.run([sys.executable, "train_python.py", str(image_root), str(tmp_path / "w")],
                         cwd=EXAMPLES, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["algo"] == "anil" and result["tasks"] == 8
    assert list_checkpoints(tmp_path / "w")


def test_custom_algorithm_by_import_path(image_root, tmp_path, in_examples, capsys):
    workdir = tmp_path / "zero"
    assert main(_train_args(workdir, image_root, "--algo", "my_algorithm:zero_head_maml",
                            "--steps", "3")) == 0
    capsys.readouterr()
    assert main(["eval", str(workdir), "--tasks", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["algo"] == "my_algorithm:zero_head_maml"


def test_boil_can_freeze_and_anil_says_why_not(image_root, tmp_path, in_examples, capsys):
    boil_dir, anil_dir = tmp_path / "boil", tmp_path / "anil"
    assert main(_train_args(boil_dir, image_root, "--algo", "boil", "--steps", "2")) == 0
    capsys.readouterr()
    assert main(["eval", str(boil_dir), "--tasks", "4", "--freeze", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["frozen"] == ["Conv_0"]
    assert main(_train_args(anil_dir, image_root, "--algo", "anil", "--steps", "2")) == 0
    capsys.readouterr()
    assert main(["eval", str(anil_dir), "--tasks", "4", "--freeze", "1"]) == 2
    err = capsys.readouterr().err
    assert "adapts a fixed part" in err and "boil" in err


def test_host_streamed_data_trains_exactly_like_data_on_the_device(image_root, tmp_path,
                                                                   in_examples):
    finals = {}
    for placement in ("device", "host"):
        workdir = tmp_path / placement
        assert main(_train_args(workdir, image_root, "--steps", "6", "--data-on", placement)) == 0
        finals[placement] = (workdir / "checkpoints" / "step_00000006.msgpack").read_bytes()
        metrics = (workdir / "metrics.csv").read_text()
        finals[placement + "-val"] = [line for line in metrics.splitlines() if "val/" in line]
    assert finals["device"] == finals["host"]  # same keys, same tasks, same state, bit for bit
    assert finals["device-val"] == finals["host-val"]


def test_user_model_resumes_bit_exactly_after_sigkill(image_root, tmp_path):
    args = ["--config", "my_config.py", "--data-dir", str(image_root), "--steps", "60",
            "--checkpoint-every", "5", "--eval-every", "60", "--log-every", "5", "--hidden", "4",
            "--image-size", "8", "--no-progress"]
    cli = [sys.executable, "-m", "metajax.cli", "train"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cli, "--workdir", str(killed), *args], cwd=EXAMPLES,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not list_checkpoints(killed) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps_at_kill = [s for s, _ in list_checkpoints(killed)]
    assert steps_at_kill and max(steps_at_kill) < 60, steps_at_kill
    for workdir, resume in ((killed, ["--resume"]), (tmp_path / "straight", [])):
        out = subprocess.run([*cli, "--workdir", str(workdir), *resume, *args], cwd=EXAMPLES,
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    name = "checkpoints/step_00000060.msgpack"
    assert (killed / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()


class _BNNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.BatchNorm()(nn.Dense(6)(x)))
        return nn.Dense(3, name="classifier")(x)


def _bn_task(dtype=jnp.float32):
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    xs = jax.random.normal(keys[0], (6, 4), dtype)
    xq = jax.random.normal(keys[1], (6, 4), dtype)
    ys = yq = jnp.arange(6) % 3
    return (xs, ys), (xq, yq)


def test_maml_meta_gradient_through_batch_norm_matches_finite_differences():
    with jax.enable_x64():
        model = metajax.as_model(_BNNet())
        task = _bn_task(jnp.float64)
        params, state = model.init(jax.random.PRNGKey(1), task[0][0])
        params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), params)
        state = jax.tree_util.tree_map(lambda s: s.astype(jnp.float64), state)
        learner = metajax.maml(model, classification(), inner_lr=0.5, inner_steps=2)
        grads, _, _ = jax.jit(learner.task_grad)(params, task, state=state)

        def loss(p):
            return learner.task_grad(p, task, state=state)[1]["outer/loss"]

        direction = jax.tree_util.tree_map(
            lambda p: jax.random.normal(jax.random.PRNGKey(p.size), p.shape, p.dtype), params)
        eps = 1e-5
        plus = jax.tree_util.tree_map(lambda p, d: p + eps * d, params, direction)
        minus = jax.tree_util.tree_map(lambda p, d: p - eps * d, params, direction)
        numeric = (loss(plus) - loss(minus)) / (2 * eps)
        analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(grads),
                                                       jax.tree_util.tree_leaves(direction)))
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6)
        # second order: the gradient differs from the first-order one
        fo = metajax.fomaml(model, classification(), inner_lr=0.5, inner_steps=2)
        g_fo = jax.jit(fo.task_grad)(params, task, state=state)[0]
        assert not np.allclose(g_fo["Dense_0"]["kernel"], grads["Dense_0"]["kernel"])


def test_anil_with_a_named_head_equals_maml_with_the_head_only_mask():
    model = metajax.as_model(_BNNet(), head="classifier")
    task = _bn_task()
    params, state = model.init(jax.random.PRNGKey(1), task[0][0])
    mask = model.head_mask(params)
    assert broadcast_mask(mask, params)["classifier"]["kernel"] is True
    assert mask["Dense_0"]["kernel"] is False
    anil = metajax.anil(model, classification(), inner_lr=0.5, inner_steps=3)
    masked = metajax.maml(model, classification(), inner_lr=0.5, inner_steps=3, mask=mask)
    g_a, m_a, s_a = jax.jit(anil.task_grad)(params, task, state=state)
    g_m, m_m, s_m = jax.jit(masked.task_grad)(params, task, state=state)
    for a, b in zip(jax.tree_util.tree_leaves((g_a, m_a, s_a)),
                    jax.tree_util.tree_leaves((g_m, m_m, s_m))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dropout_keys_are_threaded_per_task_and_step():
    class Drop(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.Dropout(0.5)(nn.relu(nn.Dense(16)(x)), deterministic=True))

    model = metajax.as_model(Drop())
    task = _bn_task()
    params, state = model.init(jax.random.PRNGKey(1), task[0][0])
    learner = metajax.maml(model, classification(), inner_lr=0.5, inner_steps=2)
    with pytest.raises(ValueError, match="needs a random key"):
        learner.task_grad(params, task)
    grad = jax.jit(learner.task_grad)
    a = grad(params, task, key=jax.random.PRNGKey(1))[0]
    b = grad(params, task, key=jax.random.PRNGKey(1))[0]
    c = grad(params, task, key=jax.random.PRNGKey(2))[0]
    np.testing.assert_array_equal(a["Dense_0"]["kernel"], b["Dense_0"]["kernel"])
    assert not np.allclose(a["Dense_0"]["kernel"], c["Dense_0"]["kernel"])
    # evaluation is deterministic: no key needed, the same result twice
    evaluate = jax.jit(learner.evaluate, static_argnums=2)
    assert evaluate(params, task, 2)["outer/loss"] == evaluate(params, task, 2)["outer/loss"]


@pytest.mark.parametrize("flag, value, message", [
    ("--model", "no_such_module:factory", "cannot import module 'no_such_module'"),
    ("--model", "my_model:missing", "has no attribute 'missing'"),
    ("--model", "my_model", "unknown model 'my_model'"),
    ("--algo", "my_model:small_net", "small_net is not an algorithm factory"),
    ("--model", "my_algorithm:zero_head_maml", "a model factory takes factory(num_outputs"),
    ("--config", "no_such_config.py", "no such file"),
])
def test_bad_import_paths_say_what_is_wrong(flag, value, message, image_root, tmp_path,
                                            in_examples, capsys):
    args = _train_args(tmp_path / "w", image_root, "--steps", "1")
    if flag == "--config":
        args[args.index("my_config.py")] = value
    else:
        args += [flag, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err, err
