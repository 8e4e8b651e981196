"""The Omniglot one-shot benchmark (all_runs.zip): reading it, and `metajax eval --benchmark`."""
from __future__ import annotations

import contextlib
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from metajax.cli import main
from metajax.configs import get_named_config
from metajax.data import DataError, load_omniglot_runs
from metajax.training import checkpoint
from metajax.training.benchmarks import character_overlap


@pytest.fixture(scope="module")
def runs(omniglot_data_dir):
    return load_omniglot_runs(omniglot_data_dir)


@pytest.fixture
def shared_omniglot_cache(omniglot_first_load, monkeypatch):
    """Point the default cache at the session's decoded Omniglot: no second decode."""
    monkeypatch.setenv("METAJAX_CACHE_DIR", str(omniglot_first_load[2]))


def _rewrite(source: Path, target: Path, edit) -> Path:
    """Copies a zip member by member; ``edit(name, data)`` returns ``(name, data)`` or None."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            out = edit(info.filename, src.read(info))
            if out is not None:
                dst.writestr(out[0], out[1])
    return target


def _folder_with(omniglot_data_dir: Path, folder: Path, edit) -> Path:
    """A data folder with the real Omniglot zips (linked) and an edited all_runs.zip."""
    folder.mkdir()
    for name in ("images_background.zip", "images_evaluation.zip"):
        (folder / name).symlink_to(omniglot_data_dir / name)
    _rewrite(omniglot_data_dir / "all_runs.zip", folder / "all_runs.zip", edit)
    return folder


def test_real_benchmark_layout(runs, omniglot_data_dir, shared_omniglot_cache):
    assert runs.support.shape == runs.query.shape == (20, 20, 28, 28, 1)
    assert runs.support.dtype == np.uint8
    np.testing.assert_array_equal(runs.support_labels, np.tile(np.arange(20), (20, 1)))
    for labels in runs.query_labels:
        assert sorted(labels.tolist()) == list(range(20))  # one test drawing per class
    # Run 1's first lines of class_labels.txt: item01 -> class08, item02 -> class09.
    assert runs.query_labels[0, :2].tolist() == [7, 8]
    assert np.median(runs.query) == 0 and runs.query.max() == 255
    # Preprocessed exactly like training images: every training drawing of the benchmark is
    # bit-identical to a drawing of the loaded Omniglot splits.
    overlap = character_overlap(runs, omniglot_data_dir)
    assert overlap["not_found"] == 0 and sum(overlap.values()) == 400


def test_wrapped_in_a_folder(runs, omniglot_data_dir, tmp_path):
    folder = _folder_with(omniglot_data_dir, tmp_path / "wrapped",
                          lambda name, data: (f"all_runs/{name}", data))
    wrapped = load_omniglot_runs(folder)
    for a, b in zip(runs, wrapped):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("edit, match", [
    (lambda n, d: None if n == "run05/test/item03.png" else (n, d), "lacks run05/test/item03.png"),
    (lambda n, d: None if n == "run20/class_labels.txt" else (n, d),
     "lacks run20/class_labels.txt"),
    (lambda n, d: (n, d.replace(b"class08", b"class09")) if n == "run01/class_labels.txt"
     else (n, d), "one-to-one"),
    (lambda n, d: (n, b"garbage line\n" + d) if n == "run02/class_labels.txt" else (n, d),
     "has the line 'garbage line'"),
    (lambda n, d: (n, b"not a png") if n == "run07/training/class11.png" else (n, d),
     "run07/training/class11.png is corrupt"),
    (lambda n, d: ("../escape.png", d) if n == "run01/test/item01.png" else (n, d),
     "zip-slip"),
])
def test_damaged_benchmark(omniglot_data_dir, tmp_path, edit, match):
    folder = _folder_with(omniglot_data_dir, tmp_path / "damaged", edit)
    with pytest.raises(DataError, match=match):
        load_omniglot_runs(folder)


def test_truncated_or_missing_benchmark(omniglot_data_dir, tmp_path):
    (tmp_path / "cut").mkdir()
    data = (omniglot_data_dir / "all_runs.zip").read_bytes()
    (tmp_path / "cut" / "all_runs.zip").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="not a readable zip.*download all_runs.zip again"):
        load_omniglot_runs(tmp_path / "cut")
    with pytest.raises(DataError, match="lacks all_runs.zip"):
        load_omniglot_runs(tmp_path)


# --- metajax eval --benchmark omniglot-runs --------------------------------------------------

def _cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def untrained_run(omniglot_data_dir, omniglot_first_load, tmp_path_factory):
    """An ANIL 5-way Omniglot run directory whose checkpoint is the initialisation."""
    from metajax.training.loop import _Run

    workdir = tmp_path_factory.mktemp("anil-run")
    cfg = get_named_config("omniglot_anil").replace(data_dir=str(omniglot_data_dir))
    cfg.save(workdir)
    # Reuse the session's decoded Omniglot instead of decoding the archives again.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METAJAX_CACHE_DIR", str(omniglot_first_load[2]))
        checkpoint.save_checkpoint(workdir, _Run(cfg).initial_state(), 1)
    return workdir


def test_five_way_run_needs_another_head(untrained_run):
    code, out, err = _cli("eval", str(untrained_run), "--benchmark", "omniglot-runs")
    assert code == 2 and out == ""
    assert "trained 5-way" in err and "--head nil" in err and "--head zero" in err


def test_benchmark_needs_an_omniglot_run(tmp_path):
    get_named_config("miniimagenet_anil").save(tmp_path)
    code, _, err = _cli("eval", str(tmp_path), "--benchmark", "omniglot-runs", "--head", "nil")
    assert code == 2 and "needs a run trained on Omniglot" in err and "miniimagenet" in err


def test_zero_head_needs_plain_meta_parameters(tmp_path):
    get_named_config("omniglot_metasgd").save(tmp_path)
    code, _, err = _cli("eval", str(tmp_path), "--benchmark", "omniglot-runs", "--head", "zero")
    assert code == 2 and "--head zero needs" in err and "metasgd" in err


def _permute_classes(seed: int):
    """An all_runs.zip edit renumbering every run's 20 classes by a random permutation."""
    perm = np.random.default_rng(seed).permutation(20)

    def edit(name, data):
        new_class = lambda m: f"class{perm[int(m[1]) - 1] + 1:02d}"  # noqa: E731
        if name.endswith("class_labels.txt"):
            return name, re.sub(rb"class(\d\d)", lambda m: new_class(m).encode(), data)
        return re.sub(r"class(\d\d)", new_class, name), data

    return edit


def _benchmark(workdir, head, *extra) -> dict:
    code, out, err = _cli("eval", str(workdir), "--benchmark", "omniglot-runs", "--head", head,
                          *extra)
    assert code == 0, err
    return json.loads(out)


def test_benchmark_with_nil_head(untrained_run, shared_omniglot_cache):
    result = _benchmark(untrained_run, "nil")
    assert result["benchmark"] == "omniglot-runs" and result["head"] == "nil"
    assert result["runs"] == 20 and len(result["per_run_accuracy"]) == 20
    assert result["accuracy"] == pytest.approx(np.mean(result["per_run_accuracy"]), abs=1e-4)
    assert result["trained_ways"] == 5 and result["inner_steps"] == 0
    assert sum(result["train_overlap"].values()) == 400
    # Even untrained conv features beat 20-way chance (5%; sd 1.1% over 400 drawings) when the
    # drawings, labels and preprocessing line up; a mislabelled benchmark would score ~5%.
    assert result["accuracy"] > 0.1, result


def test_zero_head_ignores_class_numbering(untrained_run, omniglot_data_dir, tmp_path,
                                           shared_omniglot_cache):
    result = _benchmark(untrained_run, "zero")
    assert result["head"] == "zero" and result["inner_steps"] == 10
    assert result["accuracy"] > 0.1, result
    # Renumbering the classes of every run changes nothing: all 20 outputs of a zero head start
    # equal, so adaptation cannot favour a class index.
    folder = _folder_with(omniglot_data_dir, tmp_path / "renumbered", _permute_classes(3))
    renumbered = _benchmark(untrained_run, "zero", "--data-dir", str(folder))
    np.testing.assert_allclose(renumbered["per_run_accuracy"], result["per_run_accuracy"])
