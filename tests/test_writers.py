"""Metric writers and learning curves: metrics.csv's rows as TensorBoard event files
(``--tensorboard true``), and ``metajax plot`` over runs and multi-seed runs."""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from metajax._extras import MissingExtraError
from metajax.analysis.curves import plot_learning_curves
from metajax.cli import main
from metajax.training import Config, MetricsLog, train_and_evaluate

# A tiny sinusoid run: logs at 5, 10, ...; validates and checkpoints at 10, 20, ...
TINY = Config(steps=20, meta_batch=2, log_every=5, eval_every=10, eval_tasks=4, eval_batch=4,
              checkpoint_every=10, eval_inner_steps=2, tensorboard=True)


def _csv_rows(workdir) -> dict[str, list[tuple[int, str]]]:
    """``{name: [(step, value text), ...]}`` as metrics.csv holds them."""
    out = {}
    with open(Path(workdir) / "metrics.csv", newline="") as f:
        for step, name, value in list(csv.reader(f))[1:]:
            out.setdefault(name, []).append((int(step), value))
    return out


def _tensorboard_scalars(workdir) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows: its own reader over ``workdir/tensorboard``, purges applied."""
    acc = EventAccumulator(str(Path(workdir) / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    # (a tag whose events were all purged stays listed, with none)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
            if acc.Scalars(tag)}


def _raw_scalar_steps(workdir, tag) -> list[int]:
    """Every event of ``tag`` in the files, purged or not, in file order."""
    steps = []
    for path in sorted((Path(workdir) / "tensorboard").iterdir()):
        for event in EventFileLoader(str(path)).Load():
            steps += [event.step for v in event.summary.value if v.tag == tag]
    return steps


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory):
    """A real run with --tensorboard true: 20 steps, then resumed to 30."""
    workdir = tmp_path_factory.mktemp("tb") / "run"
    train_and_evaluate(TINY, workdir, progress=False)
    train_and_evaluate(TINY.replace(steps=30), workdir, resume=True, progress=False)
    return workdir


def test_tensorboard_events_hold_exactly_the_csv_rows(tensorboard_run):
    rows = _csv_rows(tensorboard_run)
    scalars = _tensorboard_scalars(tensorboard_run)
    assert {"train/outer/loss", "train/outer/mse", "val/outer/mse", "time/step_s"} <= set(rows)
    assert set(scalars) == set(rows)
    for name, expected in rows.items():
        # The CSV's 6 significant digits, recovered exactly from TensorBoard's float32.
        assert [(s, f"{v:.6g}") for s, v in scalars[name]] == expected, name
    assert [s for s, _ in scalars["train/outer/loss"]] == [5, 10, 15, 20, 25, 30]
    assert [s for s, _ in scalars["val/outer/mse"]] == [10, 20, 30]
    # One event file per writer: the run and its resume.
    assert len(list((tensorboard_run / "tensorboard").glob("events.out.tfevents.*"))) == 2


def test_resume_hides_the_killed_runs_later_events(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=True)
    for step in (1, 2, 3, 4):
        log.write(step, {"train/outer/loss": step, "val/outer/acc": 0.123456789})
    log.close()
    # Resumed from the checkpoint at step 2: steps 3 and 4 are logged again, with new values.
    log = MetricsLog(tmp_path, resume_step=2, tensorboard=True)
    for step in (3, 4):
        log.write(step, {"train/outer/loss": 10 * step})
    log.close()
    expected = [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    assert _tensorboard_scalars(tmp_path)["train/outer/loss"] == expected
    assert _tensorboard_scalars(tmp_path)["val/outer/acc"] == [
        (1, pytest.approx(0.123457, rel=1e-7)), (2, pytest.approx(0.123457, rel=1e-7))]
    assert [(s, float(v)) for s, v in _csv_rows(tmp_path)["train/outer/loss"]] == expected
    # The killed run's steps 3 and 4 are still in its file: the purge marker hides them.
    assert _raw_scalar_steps(tmp_path, "train/outer/loss") == [1, 2, 3, 4, 3, 4]
    # A new run in the folder (no checkpoint to resume) starts both files afresh.
    log = MetricsLog(tmp_path, tensorboard=True)
    log.write(1, {"train/outer/loss": 7.0})
    assert _tensorboard_scalars(tmp_path) == {"train/outer/loss": [(1, 7.0)]}
    assert _csv_rows(tmp_path) == {"train/outer/loss": [(1, "7")]}


def test_missing_tensorboardx_names_the_extra_and_changes_nothing(tmp_path, monkeypatch,
                                                                   capsys):
    MetricsLog(tmp_path).write(5, {"train/outer/loss": 1.5})
    before = (tmp_path / "metrics.csv").read_text()
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import tensorboardX now fails
    with pytest.raises(MissingExtraError, match=r"pip install 'metajax\[tensorboard\]'"):
        MetricsLog(tmp_path, resume_step=0, tensorboard=True)
    assert (tmp_path / "metrics.csv").read_text() == before
    assert not (tmp_path / "tensorboard").exists()
    # The CLI: one line and exit status 2, no traceback.
    code = main(["train", "--workdir", str(tmp_path / "cli"), "--steps", "2", "--meta-batch",
                 "2", "--eval-tasks", "2", "--eval-batch", "2", "--no-progress",
                 "--tensorboard", "true"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "metajax: error: --tensorboard true" in err and "metajax[tensorboard]" in err
    assert "Traceback" not in err


def test_tensorboard_is_a_train_flag_and_off_by_default():
    from metajax.cli import build_parser

    args = build_parser().parse_args(["train", "--workdir", "w", "--tensorboard", "true"])
    assert args.tensorboard is True
    assert Config().tensorboard is False
    assert Config.from_json(Config().replace(tensorboard=True).to_json()).tensorboard is True


# --- metajax plot -------------------------------------------------------------------------------

def _write_csv(workdir: Path, rows) -> Path:
    """A hand-written metrics.csv (and config.json, as a run directory has)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(Config().to_json())
    with open(workdir / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "name", "value"])
        writer.writerows(rows)
    return workdir


def _classification_rows(loss: list, acc: list, steps=(10, 20, 30)):
    rows = []
    for step, l, a in zip(steps, loss, acc):
        rows += [(step, "train/outer/loss", l), (step, "train/outer/acc", a),
                 (step, "val/outer/loss", l + 0.5), (step, "val/outer/acc", a - 0.1),
                 (step, "time/step_s", 0.01)]
    return rows


@pytest.fixture
def plot_runs(tmp_path):
    """Two single runs and a two-seed run (seed_1 has not reached step 30 yet)."""
    a = _write_csv(tmp_path / "runs" / "maml", _classification_rows([2.0, 1.5, 1.0],
                                                                    [0.3, 0.5, 0.7]))
    b = _write_csv(tmp_path / "runs" / "anil", _classification_rows([2.2, 1.8, 1.2],
                                                                    [0.25, 0.4, 0.6]))
    multi = tmp_path / "runs" / "protonets"
    _write_csv(multi / "seed_0", _classification_rows([1.0, 0.8, 0.5], [0.6, 0.7, 0.9]))
    _write_csv(multi / "seed_1", _classification_rows([3.0, 1.2], [0.4, 0.8], steps=(10, 20)))
    return a, b, multi


def test_plot_draws_each_metric_with_every_run_and_writes_its_numbers(plot_runs, tmp_path,
                                                                      capsys):
    a, b, multi = plot_runs
    out = tmp_path / "curves"
    assert main(["plot", str(a), str(b), str(multi), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [f["metric"] for f in printed["figures"]] == [
        "train/outer/loss", "val/outer/loss", "train/outer/acc", "val/outer/acc"]
    labels = ["maml", "anil", "protonets (2 seeds)"]
    assert printed["runs"] == labels
    for figure in printed["figures"]:
        assert figure["legend"] == labels
        with Image.open(figure["png"]) as image:
            assert image.format == "PNG"
            assert 500 <= image.size[0] <= 2000 and 300 <= image.size[1] <= 2000, image.size
            pixels = np.asarray(image.convert("RGB"))
        # Not a blank canvas: three coloured curves and a band beside the axes' black and grey.
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20

    data = json.loads((out / "train_outer_loss.json").read_text())
    assert data["xlabel"] == "step" and data["ylabel"] == "train/outer/loss"
    assert [r["label"] for r in data["runs"]] == labels and data["missing"] == []
    maml, anil, proto = data["runs"]
    assert maml["steps"] == [10, 20, 30] and maml["values"] == [2.0, 1.5, 1.0]
    assert maml["seeds"] is None and maml["dir"] == str(a.resolve())
    assert anil["values"] == [2.2, 1.8, 1.2]
    # Mean and sample sd over seeds, at the steps both seeds reached.
    assert proto["seeds"] == [0, 1] and proto["steps"] == [10, 20]
    assert proto["values"] == {"0": [1.0, 0.8], "1": [3.0, 1.2]}
    assert proto["mean"] == pytest.approx([2.0, 1.0])
    assert proto["sd"] == pytest.approx([math.sqrt(2.0), math.sqrt(0.08)])
    acc = json.loads((out / "val_outer_acc.json").read_text())
    assert acc["runs"][0]["values"] == pytest.approx([0.2, 0.4, 0.6])


def test_plot_library_returns_the_figures_legends_and_chosen_metrics(plot_runs, tmp_path):
    a, _, multi = plot_runs
    result = plot_learning_curves([multi, a], tmp_path / "out", metrics=["time/step_s"])
    assert [f["legend"] for f in result["figures"]] == [["protonets (2 seeds)", "maml"]]
    assert Path(result["figures"][0]["png"]).name == "time_step_s.png"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["time_step_s.json",
                                                                    "time_step_s.png"]


def test_plot_of_a_real_regression_run_shows_loss_and_mse(tensorboard_run, tmp_path):
    result = plot_learning_curves([tensorboard_run], tmp_path / "out")
    assert [f["metric"] for f in result["figures"]] == [
        "train/outer/loss", "val/outer/loss", "train/outer/mse", "val/outer/mse"]
    data = json.loads((tmp_path / "out" / "val_outer_mse.json").read_text())
    rows = _csv_rows(tensorboard_run)["val/outer/mse"]
    assert data["runs"][0]["steps"] == [s for s, _ in rows] == [10, 20, 30]
    assert data["runs"][0]["values"] == [float(v) for _, v in rows]


def test_plot_refuses_runs_without_metrics_with_the_directory_and_the_fix(plot_runs, tmp_path,
                                                                         capsys):
    a, _, multi = plot_runs
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["plot", str(a), str(empty), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"metajax: error: {empty} holds no metrics.csv" in err
    assert "seed_<s>/" in err and "metajax train" in err
    assert not (tmp_path / "o").exists()  # nothing drawn before every run is read

    (multi / "seed_2").mkdir()
    assert main(["plot", str(multi), "--out", str(tmp_path / "o")]) == 2
    assert f"{multi / 'seed_2'} holds no metrics.csv" in capsys.readouterr().err

    (multi / "seed_2").rmdir()
    with open(multi / "seed_0" / "metrics.csv", "a") as f:
        f.write("40,train/outer/loss,oops\n")
    assert main(["plot", str(multi), "--out", str(tmp_path / "o")]) == 2
    assert "metrics.csv, line 17: expected step,name,value" in capsys.readouterr().err

    assert main(["plot", str(a), "--out", str(tmp_path / "o"), "--metrics", "val/nope"]) == 2
    err = capsys.readouterr().err
    assert "no run logged val/nope" in err and "train/outer/acc" in err


def test_plot_without_matplotlib_names_the_extra(plot_runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["plot", str(plot_runs[0]), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "metajax plot draws with matplotlib" in err and "metajax[analysis]" in err


def test_plot_help_answers_without_jax_or_matplotlib():
    out = subprocess.run([sys.executable, "-c", "import sys; from metajax.cli import main\n"
                          "try:\n    main(['plot', '--help'])\nexcept SystemExit:\n    pass\n"
                          "print('jax' in sys.modules, 'matplotlib' in sys.modules)"],
                         capture_output=True, text=True)
    assert out.stdout.strip().endswith("False False"), out.stdout[-300:] + out.stderr[-300:]
    assert "--out DIR" in out.stdout and "seed_<s>/" in out.stdout
