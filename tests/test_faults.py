"""Nothing lost, nothing silent: bad resumes, edited configs, divergence, shared workdirs and
file-system faults, each with its exit code, its message, and the run directory untouched where
nothing should change."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from metajax.cli import main
from metajax.training import (Config, list_checkpoints, restore_checkpoint, save_checkpoint,
                              train_and_evaluate)
from metajax.training.workdir import WorkdirLock

RUN = Config(steps=20, meta_batch=4, log_every=5, eval_every=20, eval_tasks=4, eval_batch=4,
             checkpoint_every=10, inner_steps=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("base") / "run"
    train_and_evaluate(RUN, workdir, progress=False)
    return workdir


@pytest.fixture
def run_copy(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    (copy / ".lock").unlink(missing_ok=True)
    return copy


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def _cli(args, capsys):
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


def _edit_config(workdir: Path, **changes):
    values = json.loads((workdir / "config.json").read_text())
    values.update(changes)
    (workdir / "config.json").write_text(json.dumps(values))


def _corrupt_newest(workdir):
    list_checkpoints(workdir)[-1][1].write_bytes(b"\x00garbage")


def _corrupt_all(workdir):
    for _, path in list_checkpoints(workdir):
        path.write_bytes(b"\x00garbage")


# (name, how the workdir is damaged, the command, the message it must print)
CASES = [
    ("edited optimiser", lambda w: _edit_config(w, outer_optimizer="sgd"),
     ["train", "--resume", "--steps", "30"], "outer_optimizer: 'adam' in the checkpoints"),
    ("edited meta-batch", lambda w: _edit_config(w, meta_batch=8),
     ["train", "--resume", "--steps", "30"], "meta_batch: 4 in the checkpoints, 8 now"),
    ("edited hidden units", lambda w: _edit_config(w, hidden=20),
     ["train", "--resume", "--steps", "30"], "hidden: None in the checkpoints, 20 now"),
    ("wrong type", lambda w: _edit_config(w, meta_batch="five"),
     ["train", "--resume", "--steps", "30"], "field 'meta_batch' must be int, got \"five\""),
    ("a list", lambda w: _edit_config(w, ways=[5]),
     ["train", "--resume"], "field 'ways' must be int"),
    ("invalid json", lambda w: (w / "config.json").write_text("{oops"),
     ["train", "--resume"], "config.json is not valid JSON"),
    ("all checkpoints corrupt", _corrupt_all,
     ["train", "--resume", "--steps", "30"], "no checkpoint can be resumed from"),
    ("newest corrupt", _corrupt_newest,
     ["train", "--resume", "--steps", "30"], "step_00000010.msgpack (step 10) loads"),
    ("flags differ on resume", lambda w: None,
     ["train", "--resume", "--meta-lr", "0.5"], "these flags differ"),
    ("run exists", lambda w: None, ["train", "--steps", "30"], "already holds a run"),
    ("negative inner rate", lambda w: None,
     ["train", "--inner-lr", "-0.1"], "--inner-lr must be a finite rate > 0"),
    ("negative meta rate", lambda w: None,
     ["train", "--meta-lr", "-1"], "--meta-lr must be a finite rate > 0"),
    ("eval tasks 0", lambda w: None, ["eval", "--tasks", "0"], "must be >= 1, got 0"),
    ("eval tasks -3", lambda w: None, ["eval", "--tasks", "-3"], "must be >= 1, got -3"),
    ("eval batch -5", lambda w: None, ["eval", "--batch", "-5"], "must be >= 1, got -5"),
    ("eval head zero", lambda w: None, ["eval", "--head", "zero"], "--head zero is for --benchmark"),
]


@pytest.mark.parametrize("name, damage, command, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_nothing_changes(name, damage, command, message, run_copy,
                                                  capsys):
    damage(run_copy)
    before = _digest(run_copy)
    if command[0] == "train":
        args = [*command[:1], "--workdir", str(run_copy), "--no-progress", *command[1:]]
    else:
        args = [command[0], str(run_copy), *command[1:]]
    code, err = _cli(args, capsys)
    assert code == 2, err
    assert message in err, err
    assert "Traceback" not in err
    assert _digest(run_copy) == before


def test_resume_of_a_missing_or_empty_workdir_is_refused(tmp_path, capsys):
    for workdir in (tmp_path / "typo", tmp_path):
        code, err = _cli(["train", "--workdir", str(workdir), "--resume"], capsys)
        assert code == 2 and "nothing to resume" in err, err
    assert not (tmp_path / "typo").exists() and not any(tmp_path.iterdir())


def test_a_folder_with_the_users_own_files_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"mine": true}')
    (tmp_path / "notes.txt").write_text("my notes")
    before = _digest(tmp_path)
    code, err = _cli(["train", "--workdir", str(tmp_path), "--steps", "2"], capsys)
    assert code == 2 and "holds files metajax did not write (notes.txt)" in err, err
    assert _digest(tmp_path) == before


def test_a_workdir_in_use_is_refused_and_a_dead_owners_lock_is_taken_over(run_copy, capsys):
    before = _digest(run_copy)
    with WorkdirLock(run_copy):
        code, err = _cli(["train", "--workdir", str(run_copy), "--resume", "--steps", "30",
                          "--no-progress"], capsys)
    assert code == 2 and "is in use by another run (pid" in err, err
    assert _digest(run_copy) == before
    (run_copy / ".lock").write_text("pid 999999 on elsewhere since 2026-01-01 00:00:00")
    code, err = _cli(["train", "--workdir", str(run_copy), "--resume", "--steps", "25",
                      "--no-progress"], capsys)
    assert code == 0, err
    assert "taking over" in err and "pid 999999" in err


def test_two_runs_started_together_in_one_workdir(tmp_path):
    args = [sys.executable, "-m", "metajax.cli", "train", "--workdir", str(tmp_path / "w"),
            "--steps", "200", "--no-progress", "--eval-every", "200"]
    procs = [subprocess.Popen(args, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    assert any("in use by another run" in err or "already holds a run" in err
               for _, err in results), results
    rows = (tmp_path / "w" / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) == len(set(rows))  # one history, no duplicated rows


def test_divergence_stops_keeps_a_checkpoint_whose_next_step_is_finite_and_resumes_lower(
        tmp_path, capsys):
    workdir = tmp_path / "w"
    # 10 test-time steps of 0.9 diverge in validation although training is finite.
    args = ["train", "--workdir", str(workdir), "--steps", "40", "--inner-lr", "0.9",
            "--meta-lr", "0.02", "--checkpoint-every", "1", "--eval-every", "20",
            "--eval-tasks", "4", "--eval-batch", "4", "--no-progress"]
    code, err = _cli(args, capsys)
    assert code == 2, err
    assert "val/outer/loss is nan at step 20" in err and "--inner-lr" in err, err
    saved = [s for s, _ in list_checkpoints(workdir)]
    assert saved and saved[-1] == 19, saved
    state, _ = restore_checkpoint(workdir, _template(workdir))
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(state.params))
    assert json.loads((workdir / "history.json").read_text())[-1]["event"] == "diverged"
    # a higher rate is refused, a lower one accepted and recorded
    code, err = _cli(["train", "--workdir", str(workdir), "--resume", "--inner-lr", "2",
                      "--no-progress"], capsys)
    assert code == 2 and "these flags differ" in err, err
    code, err = _cli(["train", "--workdir", str(workdir), "--resume", "--inner-lr", "0.05",
                      "--no-progress"], capsys)
    assert code == 0, err
    assert Config.load(workdir).inner_lr == 0.05
    events = json.loads((workdir / "history.json").read_text())
    assert events[-1]["event"] == "resumed" and events[-1]["changes"]["inner_lr"] == [0.9, 0.05]


def test_eval_of_one_task_prints_valid_json_with_null_ci(run_copy, capsys):
    assert main(["eval", str(run_copy), "--tasks", "1"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out)  # strict JSON: NaN would not parse with this hook
    json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))
    assert result["ci95"] is None and "ci95" in result["undefined"]


def test_checkpoint_names_hold_any_step_count(tmp_path):
    state = {"w": np.arange(3.0)}
    save_checkpoint(tmp_path, state, 123_456_789, keep=2)
    save_checkpoint(tmp_path, state, 99, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [99, 123_456_789]
    save_checkpoint(tmp_path, state, 1_000_000_000, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [123_456_789, 1_000_000_000]
    assert restore_checkpoint(tmp_path, state)[1] == 1_000_000_000


def test_relative_data_dir_is_stored_absolute(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = _cli(["train", "--workdir", "w", "--data-dir", "data", "--steps", "2",
                      "--no-progress", "--eval-tasks", "2", "--eval-batch", "2"], capsys)
    assert code == 0, err
    assert Config.load(tmp_path / "w").data_dir == str(tmp_path / "data")


def _template(workdir):
    from metajax.training.loop import _Run
    return _Run(Config.load(workdir)).initial_state()


def _train_cmd(workdir, *extra):
    return [sys.executable, "-m", "metajax.cli", "train", "--workdir", str(workdir),
            "--steps", "40", "--checkpoint-every", "1", "--eval-every", "40", "--log-every", "10",
            "--eval-tasks", "4", "--eval-batch", "4", "--meta-batch", "4", "--no-progress",
            *extra]


def test_sigkill_during_checkpoint_writes_resumes_exactly_without_debris(tmp_path):
    killed = tmp_path / "killed"
    rng = random.Random(0)
    for _ in range(3):  # kill at a random moment while it writes a checkpoint every step
        resume = ["--resume"] if list_checkpoints(killed) else []
        proc = subprocess.Popen(_train_cmd(killed, *resume), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        first = max([s for s, _ in list_checkpoints(killed)], default=0)
        deadline = time.time() + 120
        while (max([s for s, _ in list_checkpoints(killed)], default=0) <= first
               and time.time() < deadline and proc.poll() is None):
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert subprocess.run(_train_cmd(killed, "--resume")).returncode == 0
    assert subprocess.run(_train_cmd(tmp_path / "straight")).returncode == 0
    name = "checkpoints/step_00000040.msgpack"
    assert (killed / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()
    debris = [p for p in killed.rglob("*") if ".tmp" in p.name]
    assert not debris, debris


def test_a_full_disk_leaves_a_resumable_run(tmp_path):
    # RLIMIT_FSIZE makes writes past 40 kB fail (EFBIG, like ENOSPC), without needing a mount:
    # a checkpoint (~21 kB) fits, metrics.csv outgrows it after ~250 logged steps.
    limited = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000)); "
               "from metajax.cli import main; sys.exit(main(sys.argv[1:]))")
    workdir = tmp_path / "w"
    args = _train_cmd(workdir, "--steps", "400", "--log-every", "1")[3:]
    out = subprocess.run([sys.executable, "-c", limited, *args], capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "cannot write" in out.stderr and "file size limit" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    saved = list_checkpoints(workdir)
    assert saved, "the limit should allow the first checkpoints"
    restore_checkpoint(workdir, _template(workdir))  # the newest one loads
    assert subprocess.run(_train_cmd(workdir, "--resume", "--steps", "400",
                                     "--log-every", "1")).returncode == 0
    assert not [p for p in workdir.rglob("*") if ".tmp" in p.name]


def test_ctrl_c_keeps_the_newest_checkpoint_and_says_how_to_resume(tmp_path):
    workdir = tmp_path / "w"
    proc = subprocess.Popen(_train_cmd(workdir, "--steps", "100000", "--checkpoint-every", "20"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list_checkpoints(workdir) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "--resume" in err and "Traceback" not in err
    assert not [p for p in workdir.rglob("*") if ".tmp" in p.name]
    restore_checkpoint(workdir, _template(workdir))


def test_help_answers_without_jax_and_groups_every_flag():
    out = subprocess.run([sys.executable, "-c", "import sys; from metajax.cli import main\n"
                          "try:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass\n"
                          "print('jax' in sys.modules)"], capture_output=True, text=True)
    assert out.stdout.strip().endswith("False"), out.stdout[-300:]
    for group in ("data:", "model:", "algorithm:", "training:", "meta-RL:"):
        assert f"\n{group}\n" in out.stdout, group
    assert "--shard-tasks true|false" in out.stdout


def test_the_algorithm_names_listed_without_jax_are_the_registry():
    from metajax.algorithms import ALGORITHMS
    from metajax.data.names import ALGORITHM_NAMES
    assert set(ALGORITHM_NAMES) == set(ALGORITHMS)


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_ctrl_c_inside_an_atomic_write_leaves_no_temporary(tmp_path, monkeypatch, where):
    """A KeyboardInterrupt during the write or the rename propagates unchanged, the target keeps
    its old content and the ``.tmp-<pid>`` file is gone (CI once caught one left by Ctrl-C)."""
    from metajax.training import checkpoint as ckpt

    target = tmp_path / "config.json"
    target.write_bytes(b"old")

    def interrupt(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.os, where, interrupt)
    with pytest.raises(KeyboardInterrupt):
        ckpt.write_atomically(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_own_temporaries_are_removed_and_other_processes_are_not(tmp_path):
    from metajax.training.workdir import remove_own_temporaries

    (tmp_path / "checkpoints").mkdir()
    mine = tmp_path / "checkpoints" / f".config.json.tmp-{os.getpid()}"
    other = tmp_path / "checkpoints" / f".config.json.tmp-{os.getpid() + 1}"
    for p in (mine, other):
        p.write_bytes(b"x")
    remove_own_temporaries(tmp_path)
    assert not mine.exists() and other.exists()
