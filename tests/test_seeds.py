"""Several seeds in one program (``--seeds``): each seed equals its own single-seed run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from metajax.analysis.runs import TrainedRun
from metajax.cli import main
from metajax.rl.envs.registry import resolve_physics
from metajax.training.checkpoint import CheckpointError, list_checkpoints
from metajax.training.config import Config
from metajax.training.loop import evaluate_run, train_and_evaluate

CFG = Config(dataset="sinusoid", steps=6, meta_batch=4, log_every=2, eval_every=3,
             checkpoint_every=3, eval_tasks=8, eval_batch=8, eval_inner_steps=2)


def _rows(run_dir: Path) -> list[str]:
    """metrics.csv without the wall-clock rows."""
    return [line for line in (run_dir / "metrics.csv").read_text().splitlines()
            if "time/" not in line]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    train_and_evaluate(CFG.replace(seeds=(0, 2), seed_chunk=1), root / "mapped", progress=False)
    for seed in (0, 2):
        train_and_evaluate(CFG.replace(seed=seed), root / f"single{seed}", progress=False)
    return root


@pytest.mark.parametrize("seed", [0, 2])
def test_each_seed_is_bit_identical_to_its_own_run(runs, seed):
    single, member = runs / f"single{seed}", runs / "mapped" / f"seed_{seed}"
    assert [s for s, _ in list_checkpoints(member)] == [3, 6]
    for step in (3, 6):
        name = f"checkpoints/step_{step:08d}.msgpack"
        assert (member / name).read_bytes() == (single / name).read_bytes()
    assert (member / "config.json").read_text() == (single / "config.json").read_text()
    assert _rows(member) == _rows(single)


def test_seeds_differ_from_each_other(runs):
    a = (runs / "mapped/seed_0/checkpoints/step_00000006.msgpack").read_bytes()
    b = (runs / "mapped/seed_2/checkpoints/step_00000006.msgpack").read_bytes()
    assert a != b


def test_vmapped_seeds_equal_their_runs_to_float_tolerance(runs, tmp_path):
    state = train_and_evaluate(CFG.replace(seeds="0,2", seed_chunk=0), tmp_path / "vmapped",
                               progress=False)
    for index, seed in enumerate((0, 2)):
        single = TrainedRun(runs / f"single{seed}").meta_params(6)
        own = jax.tree_util.tree_map(lambda leaf: leaf[index], state.params)
        for a, b in zip(jax.tree_util.tree_leaves(single), jax.tree_util.tree_leaves(own)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_eval_reports_each_seed_and_mean_and_sd(runs):
    result = evaluate_run(runs / "mapped", tasks=12)
    singles = [evaluate_run(runs / f"single{seed}", tasks=12) for seed in (0, 2)]
    assert result["seeds"] == [0, 2]
    assert result["checkpoint_steps"] == [6, 6]
    for seed, single in zip((0, 2), singles):
        assert result["per_seed"][str(seed)] == single
    values = np.array([s["mse"] for s in singles])
    assert result["mse"] == pytest.approx(values.mean())
    assert result["mse_sd"] == pytest.approx(values.std(ddof=1))
    assert result["loss_sd"] == pytest.approx(np.std([s["loss"] for s in singles], ddof=1))


def test_resume_after_a_kill_between_two_seeds_commits(runs, tmp_path):
    """A kill after seed 0 committed step 6 but before seed 2 did: the run resumes from the step
    both hold (3) and ends bit-identical to the uninterrupted run."""
    workdir = tmp_path / "run"
    cfg = CFG.replace(seeds=(0, 2), seed_chunk=1)
    train_and_evaluate(cfg, workdir, progress=False)
    (workdir / "seed_2/checkpoints/step_00000006.msgpack").unlink()
    train_and_evaluate(cfg, workdir, resume=True, progress=False)
    for seed in (0, 2):
        for step in (3, 6):
            name = f"checkpoints/step_{step:08d}.msgpack"
            assert ((workdir / f"seed_{seed}" / name).read_bytes()
                    == (runs / "mapped" / f"seed_{seed}" / name).read_bytes())
        assert _rows(workdir / f"seed_{seed}") == _rows(runs / "mapped" / f"seed_{seed}")


def test_resume_without_a_common_step_is_refused(runs, tmp_path):
    workdir = tmp_path / "run"
    cfg = CFG.replace(seeds=(0, 1), steps=3)
    train_and_evaluate(cfg, workdir, progress=False)
    (workdir / "seed_1/checkpoints/step_00000003.msgpack").unlink()
    with pytest.raises(CheckpointError, match=r"no checkpoint of a common step.*seed_1: none"):
        train_and_evaluate(cfg.replace(steps=6), workdir, resume=True, progress=False)


def test_a_seeds_folder_names_its_seed_folders(runs):
    with pytest.raises(FileNotFoundError, match=r"seeds 0,2.*seed_0"):
        TrainedRun(runs / "mapped")
    # each seed's folder is a run like any other
    assert TrainedRun(runs / "mapped" / "seed_2").steps == [3, 6]


@pytest.mark.parametrize("seeds, message", [
    ("0,0", "each seed once"),
    ("0,x", "comma-separated integers"),
    ("-1,2", "must be >= 0"),
])
def test_bad_seeds_are_refused(seeds, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        train_and_evaluate(CFG.replace(seeds=seeds), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_seeds_with_meta_rl_are_refused():
    with pytest.raises(ValueError, match="one seed per run"):
        Config(env="nav2d", seeds="0,1").validate()


def test_seeds_with_host_data_are_refused(tmp_path, omniglot_splits):
    cfg = CFG.replace(dataset="omniglot", ways=5, shots=1, query=1, seeds="0,1", data_on="host")
    with pytest.raises(ValueError, match="--data-on device"):
        train_and_evaluate(cfg, tmp_path / "run", data=omniglot_splits._asdict(), progress=False)


def test_cli_trains_and_evaluates_seeds(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert main(["train", "--workdir", str(workdir), "--seeds", "3,4", "--steps", "2",
                 "--meta-batch", "2", "--log-every", "1", "--eval-every", "2",
                 "--eval-tasks", "4", "--eval-batch", "4", "--no-progress"]) == 0
    assert json.loads((workdir / "config.json").read_text())["seeds"] == "3,4"
    assert json.loads((workdir / "seed_4" / "config.json").read_text())["seed"] == 4
    capsys.readouterr()
    assert main(["eval", str(workdir), "--tasks", "4", "--inner-steps", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(result["per_seed"]) == ["3", "4"] and "mse_sd" in result
    # the run's settings are kept on resume: another --seeds is refused
    assert main(["train", "--workdir", str(workdir), "--resume", "--seeds", "3,5"]) == 2
    assert "config.json: --seeds." in capsys.readouterr().err


def test_seeds_on_four_devices(tmp_path):
    """Seeds and a task mesh together: the task batch of every seed is split over 4 devices,
    with no device-to-device copy inside a step; each seed equals its 1-device run."""
    script = f"""
import jax, numpy as np
from metajax.training.config import Config
from metajax.training.loop import train_and_evaluate
cfg = Config(dataset="sinusoid", steps=4, meta_batch=4, log_every=2, eval_every=4,
             checkpoint_every=4, eval_tasks=8, eval_batch=8, eval_inner_steps=1, seeds="0,1")
assert jax.device_count() == 4
with jax.transfer_guard_device_to_device("disallow"):
    state = train_and_evaluate(cfg, {str(tmp_path / 'mesh')!r}, progress=False)
one = train_and_evaluate(cfg.replace(shard_tasks=False), {str(tmp_path / 'one')!r},
                         progress=False)
for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(one.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
print("ok")
"""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


def test_physics_auto_is_mjx_on_accelerators_and_c_on_cpus():
    assert resolve_physics("auto", "gpu") == "mjx"
    assert resolve_physics("auto", "tpu") == "mjx"
    assert resolve_physics("auto", "cpu") == "c"
    assert resolve_physics("c", "gpu") == "c"
    assert Config().physics == "auto"
    with pytest.raises(ValueError, match="unknown --physics 'bullet'"):
        resolve_physics("bullet")


def test_eval_of_an_older_checkpoint_equals_a_copy_holding_only_it(runs, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs / "single0", copy)
    (copy / "checkpoints" / "step_00000006.msgpack").unlink()
    older = evaluate_run(runs / "single0", tasks=8, checkpoint=3)
    assert older["checkpoint_step"] == 3
    assert older == evaluate_run(copy, tasks=8)
    assert older != evaluate_run(runs / "single0", tasks=8)
    # several seeds: every seed at that step
    assert evaluate_run(runs / "mapped", tasks=8, checkpoint=3)["checkpoint_steps"] == [3, 3]
    assert main(["eval", str(runs / "single0"), "--tasks", "4", "--checkpoint", "4"]) == 2
    assert "no checkpoint of step 4" in capsys.readouterr().err


def test_json_output_says_why_a_value_is_undefined():
    from metajax.cli import _json_safe

    out = _json_safe({"accuracy_sd": float("nan"), "ci95": float("nan"), "loss": float("inf"),
                      "per_seed": {"0": {"accuracy": 0.5}}})
    assert out["accuracy_sd"] is None and out["per_seed"] == {"0": {"accuracy": 0.5}}
    assert "at least 2 seeds" in out["undefined"]["accuracy_sd"]
    assert "at least 2 tasks" in out["undefined"]["ci95"]
    assert "diverged" in out["undefined"]["loss"]
