"""Several processes (jax.distributed, gloo collectives on localhost) and several devices: the same
training as one process, one writer, exact resume, no hidden copies, clear launch errors."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from flax import serialization

import jax

from metajax.training import list_checkpoints, read_metrics

SMALL = ["--steps", "20", "--meta-batch", "4", "--eval-tasks", "4", "--eval-batch", "4",
         "--eval-every", "10", "--checkpoint-every", "10", "--log-every", "5", "--no-progress"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    flags = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count",
                                                    "--unused")
    return {**os.environ, "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={devices}"}


def _launch(workdir, args, *, processes: int, devices: int, extra=()):
    cli = [sys.executable, "-m", "metajax.cli", "train", "--workdir", str(workdir), *args, *extra]
    if processes == 1:
        return [subprocess.Popen(cli, env=_env(devices), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)]
    port = _port()
    return [subprocess.Popen([*cli, "--coordinator-address", f"localhost:{port}",
                              "--num-processes", str(processes), "--process-id", str(i)],
                             env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
            for i in range(processes)]


def _finish(procs, timeout=600):
    results = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    return results


def _leaves(path: Path):
    return jax.tree_util.tree_leaves(serialization.msgpack_restore(path.read_bytes()))


@pytest.mark.parametrize("dataset", ["sinusoid", "omniglot", "omniglot-host"])
def test_two_processes_train_like_one_process_with_the_same_devices(dataset, tmp_path,
                                                                    omniglot_data_dir):
    """``omniglot-host``: tasks streamed from the host; each of the two processes draws only its
    own devices' tasks, one process draws them all."""
    args = list(SMALL)
    if dataset.startswith("omniglot"):
        args += ["--dataset", "omniglot", "--data-dir", str(omniglot_data_dir), "--ways", "3",
                 "--shots", "1", "--query", "2", "--hidden", "8", "--steps", "4",
                 "--checkpoint-every", "2", "--eval-every", "4", "--log-every", "2"]
    if dataset.endswith("host"):
        args += ["--data-on", "host"]
    one, two = tmp_path / "one", tmp_path / "two"
    _finish(_launch(one, args, processes=1, devices=4))
    outputs = _finish(_launch(two, args, processes=2, devices=2))
    last = list_checkpoints(one)[-1][1].name
    assert [p.name for _, p in list_checkpoints(two)] == [p.name for _, p in list_checkpoints(one)]
    if dataset == "sinusoid":
        for a, b in zip(_leaves(one / "checkpoints" / last), _leaves(two / "checkpoints" / last),
                        strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    else:
        # Conv4's conv biases feed batch norm, which cancels them: their gradients are float
        # noise, which Adam normalises to full-size steps, so they differ with the order of the
        # all-reduce. Everything the loss depends on agrees: the kernels and every metric.
        state_one, state_two = (serialization.msgpack_restore(
            (w / "checkpoints" / last).read_bytes()) for w in (one, two))
        for name in ("conv1", "conv2", "conv3", "conv4"):
            np.testing.assert_allclose(state_one["params"]["body"][name]["kernel"],
                                       state_two["params"]["body"][name]["kernel"],
                                       rtol=1e-3, atol=1e-5)
    metrics_one, metrics_two = read_metrics(one), read_metrics(two)
    for name, values in metrics_one.items():
        if not name.startswith("time/"):
            np.testing.assert_allclose([v for _, v in metrics_two[name]],
                                       [v for _, v in values], rtol=1e-3, atol=1e-5)
    rows = (two / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) == len(set(rows)) and rows  # one writer: no duplicated rows
    assert read_metrics(two).keys() == read_metrics(one).keys()
    # process 1 printed nothing of the run (process 0 reports)
    assert "done:" in outputs[0][1] and "done:" not in outputs[1][1]
    assert not [p for p in two.rglob("*") if ".tmp" in p.name]


def test_both_processes_killed_then_resumed_equal_an_uninterrupted_run(tmp_path):
    args = [*SMALL, "--steps", "300", "--checkpoint-every", "20", "--eval-every", "300",
            "--log-every", "20"]
    killed = tmp_path / "killed"
    procs = _launch(killed, args, processes=2, devices=2)
    deadline = time.time() + 300
    while not list_checkpoints(killed) and time.time() < deadline:
        time.sleep(0.01)
    for p in procs:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    steps = [s for s, _ in list_checkpoints(killed)]
    assert steps and max(steps) < 300, steps
    _finish(_launch(killed, args, processes=2, devices=2, extra=["--resume"]))
    _finish(_launch(tmp_path / "straight", args, processes=2, devices=2))
    name = "checkpoints/step_00000300.msgpack"
    assert (killed / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()


def test_four_devices_train_without_device_to_device_copies(tmp_path):
    script = (
        "import jax, sys\n"
        "from metajax.training import Config, train_and_evaluate\n"
        "assert jax.device_count() == 4\n"
        "cfg = Config(steps=6, meta_batch=8, eval_every=3, eval_tasks=8, eval_batch=8, "
        "checkpoint_every=3, log_every=3)\n"
        "with jax.transfer_guard_device_to_device('disallow'):\n"
        "    train_and_evaluate(cfg, sys.argv[1], progress=False)\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "w")], env=_env(4),
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


@pytest.mark.parametrize("extra, message", [
    (["--coordinator-address", "localhost:1", "--num-processes", "2", "--process-id", "2"],
     "--process-id 2 is out of range: with --num-processes 2 use 0..1"),
    (["--coordinator-address", "localhost", "--num-processes", "2", "--process-id", "0"],
     "expected HOST:PORT"),
    (["--num-processes", "2"], "needs all of --coordinator-address"),
])
def test_bad_launch_flags_are_clear_errors(extra, message, tmp_path):
    (proc,) = _launch(tmp_path / "w", SMALL, processes=1, devices=1, extra=extra)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and message in err, err
    assert not (tmp_path / "w").exists()


def test_an_unreachable_coordinator_times_out_with_a_message(tmp_path):
    (proc,) = _launch(tmp_path / "w", SMALL, processes=1, devices=1,
                      extra=["--coordinator-address", f"localhost:{_port()}",
                             "--num-processes", "2", "--process-id", "1", "--init-timeout", "5"])
    start = time.time()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "could not join the multi-process run" in err and "within 5 s" in err, err
    assert time.time() - start < 90


def test_a_meta_batch_that_does_not_split_over_the_devices_names_the_fix(tmp_path):
    (proc,) = _launch(tmp_path / "w", [*SMALL, "--meta-batch", "6"], processes=1, devices=4)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert "--meta-batch 6 cannot be split evenly over the 4 devices" in err
    assert "use a multiple of 4" in err
