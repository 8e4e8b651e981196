"""README "Coming from learn2learn": the examples of examples/learn2learn/ run as shown, and every
metajax name the guide's table cites exists with the arguments it is shown with."""
from __future__ import annotations

import inspect
import re
import runpy
import sys
from pathlib import Path

import pytest

import metajax
import metajax.data
import metajax.training
from metajax.algorithms import metasgd

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "learn2learn"
README = ROOT / "README.md"


def guide() -> str:
    text = README.read_text()
    start = text.index("## Coming from learn2learn")
    return text[start:text.index("\n## ", start + 1)]


def run_example(name, argv, monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out


def test_readme_shows_the_toy_example_verbatim_and_links_the_omniglot_one():
    section = guide()
    assert (EXAMPLES / "maml_toy.py").read_text().strip() in section
    assert "examples/learn2learn/omniglot.py" in section


def test_the_guide_sits_between_bring_your_own_and_many_devices():
    text = README.read_text()
    assert (text.index("## Bring your own") < text.index("## Coming from learn2learn")
            < text.index("## Many devices and hosts"))


def test_toy_maml_loop_learns(monkeypatch, capsys):
    out = run_example("maml_toy.py", ["501"], monkeypatch, capsys)
    mse = [float(v) for v in re.findall(r"query MSE after one inner step ([0-9.]+)", out)]
    assert len(mse) == 2, out                     # step 0 and step 500
    assert mse[1] < 0.6 * mse[0], out             # measured 6.8 -> 2.6


def test_omniglot_example_runs_on_real_omniglot(omniglot_data_dir, omniglot_first_load,
                                                monkeypatch, capsys):
    monkeypatch.setenv("METAJAX_CACHE_DIR", str(omniglot_first_load[2]))  # decoded once
    out = run_example("omniglot.py", [str(omniglot_data_dir), "--algo", "maml", "--steps", "2",
                                      "--meta-batch", "2", "--eval-tasks", "2"],
                      monkeypatch, capsys)
    accuracy = re.search(r"test accuracy \(2 tasks\): ([0-9.]+)", out)
    assert accuracy and 0.0 <= float(accuracy.group(1)) <= 1.0, out
    assert "step 1: train query accuracy" in out


def test_omniglot_example_offers_the_learners_the_table_maps():
    source = (EXAMPLES / "omniglot.py").read_text()
    for name in ("metajax.maml", "metajax.fomaml", "metajax.anil", "metasgd",
                 "metajax.protonets"):
        assert name in source


@pytest.mark.parametrize("function, arguments", [
    (metajax.maml, ["model", "objective", "inner_lr", "inner_steps", "first_order"]),
    (metajax.anil, ["model", "objective", "inner_lr", "inner_steps"]),
    (metasgd, ["model", "objective", "inner_lr", "inner_steps", "first_order"]),
    (metajax.protonets, ["model", "objective"]),
    (metajax.adapt, ["params", "loss_fn", "support", "inner_lr", "steps", "first_order"]),
    (metajax.meta_loss, ["params", "loss_fn", "task", "inner_lr", "steps", "first_order"]),
    (metajax.train_and_evaluate, ["cfg", "workdir", "model", "data", "learner"]),
    (metajax.evaluate_run, ["workdir", "tasks"]),
    (metajax.data.sample_episode, ["key", "images", "ways", "shots", "queries"]),
    (metajax.data.sample_ragged_episode, ["key", "data", "ways", "shots", "queries"]),
    (metajax.data.load_omniglot, ["data_dir"]),
    (metajax.data.load_splits, ["dataset", "data_dir"]),
    (metajax.training.batch_task_grads, ["learner", "params", "tasks"]),
    (metajax.training.map_tasks, ["fn", "tasks"]),
])
def test_the_tables_calls_exist_with_their_arguments(function, arguments):
    parameters = inspect.signature(function).parameters
    assert [a for a in arguments if a not in parameters] == []


def test_learner_methods_are_called_as_the_table_shows():
    import jax
    import jax.numpy as jnp

    from metajax.data import sample_sinusoid_task

    model = metajax.build_model("mlp", num_outputs=1)
    learner = metajax.maml(model, metajax.regression(), inner_lr=0.01, inner_steps=1)
    params = learner.init(metajax.init_params(model, jax.random.PRNGKey(0), jnp.zeros((1, 1))))
    task = sample_sinusoid_task(jax.random.PRNGKey(1), shots=5, queries=5)
    grads, metrics, _ = learner.task_grad(params, task)
    assert jax.tree.structure(grads) == jax.tree.structure(params) and "outer/loss" in metrics
    adapted = learner.adapt(params, task[0], 3)
    assert jax.tree.structure(adapted) == jax.tree.structure(params)
    assert "outer/mse" in learner.evaluate(params, task, 3)
