"""`metajax data verify`: the real shared folders, and damaged copies that must fail."""
from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest
from datagen import read_csv, write_cifar100, write_csv, write_miniimagenet_subset

from metajax.cli import main


def _verify(dataset, folder) -> tuple[int, dict | None, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["data", "verify", "--dataset", dataset, "--data-dir", str(folder)])
    return code, (json.loads(out.getvalue()) if code == 0 else None), err.getvalue()


def test_real_omniglot(omniglot_data_dir, omniglot_first_load, monkeypatch):
    # The session already decoded these archives; verify reads that cache (same files).
    monkeypatch.setenv("METAJAX_CACHE_DIR", str(omniglot_first_load[2]))
    code, summary, err = _verify("omniglot", omniglot_data_dir)
    assert code == 0, err
    archives = summary["archives"]
    assert (archives["images_background.zip"]["characters"],
            archives["images_evaluation.zip"]["characters"]) == (964, 659)
    assert archives["images_background.zip"]["drawings"] == 964 * 20
    assert archives["images_evaluation.zip"]["drawings"] == 659 * 20
    assert (archives["images_background.zip"]["alphabets"],
            archives["images_evaluation.zip"]["alphabets"]) == (30, 20)
    assert {k: v["characters"] for k, v in summary["splits"].items()} == {
        "train": 1100, "val": 100, "test": 423}
    assert summary["splits"]["train"]["classes"] == 4400
    assert summary["image_shape"] == [28, 28, 1]
    # The shared small zips are the official bytes; the full zips were re-packed (data README).
    extras = summary["extra_archives"]
    assert extras["images_background_small1.zip"]["checksum"] == "matches the official release"
    assert archives["images_background.zip"]["checksum"].startswith("differs")
    assert extras["all_runs.zip"]["runs"] == 20 and summary["ok"] is True


def test_real_miniimagenet(miniimagenet_data_dir):
    code, summary, err = _verify("miniimagenet", miniimagenet_data_dir)
    assert code == 0, err
    assert summary["splits"] == {
        "train": {"classes": 64, "images_per_class": 600, "images": 38400},
        "val": {"classes": 16, "images_per_class": 100, "images": 1600},
        "test": {"classes": 20, "images_per_class": 600, "images": 12000},
    }
    assert summary["official_counts"] == {"train": True, "val": False, "test": True}
    assert summary["image_shape"] == [84, 84, 3] and summary["unlisted_images"] == 0


def test_truncated_omniglot_archive(omniglot_data_dir, tmp_path):
    (tmp_path / "images_background.zip").symlink_to(omniglot_data_dir / "images_background.zip")
    data = (omniglot_data_dir / "images_evaluation.zip").read_bytes()
    (tmp_path / "images_evaluation.zip").write_bytes(data[: len(data) * 2 // 3])
    code, _, err = _verify("omniglot", tmp_path)
    assert code == 2 and "images_evaluation.zip" in err and "re-download" in err


def test_miniimagenet_absent_and_overlapping(miniimagenet_data_dir, tmp_path):
    folder = write_miniimagenet_subset(miniimagenet_data_dir, tmp_path / "mini")
    code, summary, err = _verify("miniimagenet", folder)
    assert code == 0, err
    assert summary["splits"]["val"] == {"classes": 5, "images_per_class": 6, "images": 30}

    # The same picture under a second name in the test split: overlapping splits.
    train, test = read_csv(folder / "train.csv"), read_csv(folder / "test.csv")
    shutil.copyfile(folder / "images" / train[1][0], folder / "images" / "copy.jpg")
    write_csv(folder / "test.csv", [test[0], ["copy.jpg", test[1][1]]] + test[2:])
    code, _, err = _verify("miniimagenet", folder)
    assert code == 2 and "also occurs in the train split" in err

    # A split file naming an image that is not there.
    (folder / "images" / "copy.jpg").unlink()
    code, _, err = _verify("miniimagenet", folder)
    assert code == 2 and "test.csv names 1 image(s) absent" in err and "copy.jpg" in err


def test_cifar(tmp_path):
    folder = write_cifar100(tmp_path / "cifar", tarball=True)
    code, summary, err = _verify("cifar-fs", folder)
    assert code == 0, err
    assert {k: v["classes"] for k, v in summary["splits"].items()} == {
        "train": 64, "val": 16, "test": 20}
    assert summary["files"]["cifar-100-python.tar.gz"]["checksum"].startswith("differs")
    code, summary, err = _verify("fc100", folder)
    assert code == 0 and [summary["splits"][s]["classes"] for s in ("train", "val", "test")] == [
        60, 20, 20]
    tarball = folder / "cifar-100-python.tar.gz"
    tarball.write_bytes(tarball.read_bytes()[:2000])
    code, _, err = _verify("fc100", folder)
    assert code == 2 and "truncated" in err


def test_unknown_dataset_and_missing_folder(tmp_path):
    with pytest.raises(SystemExit) as info, contextlib.redirect_stderr(io.StringIO()):
        main(["data", "verify", "--dataset", "imagenet", "--data-dir", str(tmp_path)])
    assert info.value.code == 2
    code, _, err = _verify("miniimagenet", tmp_path / "nope")
    assert code == 2 and "does not exist" in err
