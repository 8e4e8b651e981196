"""Omniglot loading from the real archives: splits, rotations, cache and error handling."""
from __future__ import annotations

import hashlib
import os
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from metajax.data import DataError, load_omniglot, omniglot_split_indices, resolve_data_dir
from metajax.data import omniglot as omniglot_mod

ARCHIVES = ("images_background.zip", "images_evaluation.zip")


def _class_hashes(classes: np.ndarray) -> set[bytes]:
    return {hashlib.sha1(c.tobytes()).digest() for c in classes}


# --- splits ---------------------------------------------------------------------------------

def test_split_shapes_and_dtype(omniglot_splits):
    expected = {"train": 1100 * 4, "val": 100 * 4, "test": 423 * 4}
    for name, n in expected.items():
        split = getattr(omniglot_splits, name)
        assert split.shape == (n, 20, 28, 28, 1), name
        assert split.dtype == np.uint8, name
        assert split.flags.c_contiguous, name


def test_strokes_are_bright_on_dark_background(omniglot_splits):
    train = omniglot_splits.train
    assert train.max() == 255
    # Strokes cover a small fraction of each drawing, so the background dominates.
    assert np.median(train) == 0
    assert train.mean() < 64
    # Every drawing has some ink.
    assert (train.reshape(*train.shape[:2], -1).max(axis=-1) > 128).all()


def test_splits_share_no_character(omniglot_splits):
    train, val, test = (_class_hashes(s) for s in omniglot_splits)
    assert len(train) == 4400 and len(val) == 400 and len(test) == 1692
    assert not train & val
    assert not train & test
    assert not val & test
    # Unrotated classes of different splits differ too (the check the protocol asks for).
    upright = [_class_hashes(s[::4]) for s in omniglot_splits]
    assert not upright[0] & upright[1] and not upright[0] & upright[2]
    assert not upright[1] & upright[2]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_rotations_follow_their_character(omniglot_splits, split):
    classes = getattr(omniglot_splits, split)
    upright = classes[0::4]
    for r in (1, 2, 3):
        np.testing.assert_array_equal(classes[r::4], np.rot90(upright, k=r, axes=(2, 3)))
    # Class 4c + 1 is class 4c rotated by 90 degrees, drawing by drawing.
    np.testing.assert_array_equal(classes[1], np.rot90(classes[0], k=1, axes=(1, 2)))


def test_split_indices_are_a_fixed_partition():
    train, val, test = omniglot_split_indices()
    assert (len(train), len(val), len(test)) == (1100, 100, 423)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val, test])), np.arange(1623))
    # Pins the split: if NumPy ever changed default_rng(0).permutation, every published number
    # would silently refer to other classes.
    assert train[:5].tolist() == [1229, 854, 493, 864, 898]
    assert val[:5].tolist() == [1590, 1386, 472, 509, 79]
    assert test[:5].tolist() == [0, 1595, 65, 1336, 1618]


# --- cache ----------------------------------------------------------------------------------

def test_cached_load_is_identical_and_faster(omniglot_first_load, omniglot_data_dir):
    splits, uncached_seconds, cache_dir = omniglot_first_load
    assert len(list(Path(cache_dir).glob("*.npz"))) == 1
    start = time.perf_counter()
    cached = load_omniglot(omniglot_data_dir, cache_dir=cache_dir)
    cached_seconds = time.perf_counter() - start
    for a, b in zip(splits, cached):
        np.testing.assert_array_equal(a, b)
    assert cached_seconds < uncached_seconds
    # No temporary files are left behind by the atomic write.
    assert sorted(p.suffix for p in Path(cache_dir).iterdir()) == [".npz"]


def test_no_rotations(omniglot_first_load, omniglot_data_dir):
    splits, _, cache_dir = omniglot_first_load
    plain = load_omniglot(omniglot_data_dir, cache_dir=cache_dir, rotations=False)
    assert [s.shape[0] for s in plain] == [1100, 100, 423]
    for rotated, upright in zip(splits, plain):
        np.testing.assert_array_equal(rotated[::4], upright)


def _corrupt_garbage(path: Path) -> None:
    path.write_bytes(b"this is not an npz file")


def _corrupt_truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt_wrong_shape(path: Path) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, images=np.zeros((3, 20, 28, 28), np.uint8), format_version=np.int64(1))


@pytest.mark.parametrize("corrupt", [_corrupt_garbage, _corrupt_truncate, _corrupt_wrong_shape])
def test_corrupt_cache_is_rebuilt(omniglot_first_load, omniglot_data_dir, tmp_path, monkeypatch,
                                  corrupt):
    splits, _, good_cache_dir = omniglot_first_load
    (good_file,) = Path(good_cache_dir).glob("*.npz")
    with np.load(good_file, allow_pickle=False) as npz:
        decoded = npz["images"]
    cache_file = tmp_path / good_file.name
    shutil.copyfile(good_file, cache_file)
    corrupt(cache_file)

    # The real decode already ran in the session fixture; reuse its output to keep this fast.
    calls = []

    def fake_decode(paths, image_size, progress):
        calls.append(image_size)
        return decoded.copy()

    monkeypatch.setattr(omniglot_mod, "_decode_archives", fake_decode)
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        rebuilt = load_omniglot(omniglot_data_dir, cache_dir=tmp_path)
    assert calls == [28]
    for a, b in zip(splits, rebuilt):
        np.testing.assert_array_equal(a, b)
    # The rebuilt cache is valid again and is used without decoding.
    with np.load(cache_file, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["images"], decoded)
    load_omniglot(omniglot_data_dir, cache_dir=tmp_path)
    assert calls == [28]


def test_cache_key_tracks_archives_and_size(omniglot_data_dir, tmp_path):
    for name in ARCHIVES:
        shutil.copy2(omniglot_data_dir / name, tmp_path / name)
    paths = [tmp_path / name for name in ARCHIVES]
    key = omniglot_mod._cache_key(paths, 28)
    assert key == omniglot_mod._cache_key(paths, 28)
    assert key != omniglot_mod._cache_key(paths, 14)
    st = paths[1].stat()
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert key != omniglot_mod._cache_key(paths, 28)


# --- data directory -------------------------------------------------------------------------

def test_resolve_accepts_folder_or_parent(omniglot_data_dir):
    assert resolve_data_dir(omniglot_data_dir) == omniglot_data_dir.resolve()
    assert resolve_data_dir(omniglot_data_dir.parent) == omniglot_data_dir.resolve()
    assert resolve_data_dir(str(omniglot_data_dir)) == omniglot_data_dir.resolve()


def test_resolve_uses_env_var(omniglot_data_dir, monkeypatch):
    monkeypatch.setenv("METAJAX_DATA_DIR", str(omniglot_data_dir.parent))
    assert resolve_data_dir(None) == omniglot_data_dir.resolve()


def test_resolve_without_dir_or_env(monkeypatch):
    monkeypatch.delenv("METAJAX_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="--data-dir") as info:
        resolve_data_dir(None)
    assert "METAJAX_DATA_DIR" in str(info.value)
    with pytest.raises(DataError, match="METAJAX_DATA_DIR"):
        load_omniglot()


def test_resolve_missing_dir(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="does not exist") as info:
        resolve_data_dir(missing)
    assert "nope" in str(info.value)


def test_resolve_dir_without_archives(tmp_path):
    with pytest.raises(DataError) as info:
        resolve_data_dir(tmp_path)
    message = str(info.value)
    for name in ARCHIVES:
        assert name in message
    assert "github.com/brendenlake/omniglot" in message


def test_resolve_names_only_the_missing_archive(omniglot_data_dir, tmp_path):
    (tmp_path / "omniglot").mkdir()
    (tmp_path / "omniglot" / "images_background.zip").symlink_to(
        omniglot_data_dir / "images_background.zip")
    with pytest.raises(DataError) as info:
        resolve_data_dir(tmp_path)
    message = str(info.value)
    assert "lacks images_evaluation.zip;" in message
    assert str(tmp_path / "omniglot") in message


# --- corrupt archives -----------------------------------------------------------------------

def _dir_with_evaluation(omniglot_data_dir: Path, folder: Path, evaluation: bytes) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "images_background.zip").symlink_to(omniglot_data_dir / "images_background.zip")
    (folder / "images_evaluation.zip").write_bytes(evaluation)
    return folder


def test_truncated_archive(omniglot_data_dir, tmp_path):
    data = (omniglot_data_dir / "images_evaluation.zip").read_bytes()
    folder = _dir_with_evaluation(omniglot_data_dir, tmp_path / "data", data[: len(data) // 2])
    with pytest.raises(DataError, match="images_evaluation.zip") as info:
        load_omniglot(folder, cache_dir=tmp_path / "cache")
    assert "re-download" in str(info.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_non_zip_archive(omniglot_data_dir, tmp_path):
    folder = _dir_with_evaluation(omniglot_data_dir, tmp_path / "data", b"<html>Not Found</html>")
    with pytest.raises(DataError, match="images_evaluation.zip.*not a readable zip"):
        load_omniglot(folder, cache_dir=tmp_path / "cache")


def test_archive_without_pngs(omniglot_data_dir, tmp_path):
    folder = _dir_with_evaluation(omniglot_data_dir, tmp_path / "data", b"")
    with zipfile.ZipFile(folder / "images_evaluation.zip", "w") as zf:
        zf.writestr("images_evaluation/README.txt", "no drawings here")
    with pytest.raises(DataError, match="0 character folders.*expected 659"):
        load_omniglot(folder, cache_dir=tmp_path / "cache")


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    page = np.ones((105, 105), dtype=bool)  # one-bit like the real files: white page
    page[30:75, 30:75] = False  # a black blot in the middle
    buf = io.BytesIO()
    Image.fromarray(page).save(buf, format="PNG")
    return buf.getvalue()


def test_member_with_bad_crc(tmp_path):
    path = tmp_path / "images_evaluation.zip"
    png = _png_bytes()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("images_evaluation/A/character01/0001_01.png", png)
    raw = bytearray(path.read_bytes())
    at = raw.index(png) + len(png) // 2
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as zf:
        with pytest.raises(DataError, match="images_evaluation.zip.*corrupt.*re-download"):
            omniglot_mod.decode_drawing(zf, zf.namelist()[0], path, 28)


def test_member_that_is_not_an_image(tmp_path):
    path = tmp_path / "images_background.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("images_background/A/character01/0001_01.png", b"not a png")
        zf.writestr("images_background/A/character01/0001_02.png", _png_bytes())
    with zipfile.ZipFile(path) as zf:
        with pytest.raises(DataError, match="0001_01.png is corrupt"):
            omniglot_mod.decode_drawing(zf, "images_background/A/character01/0001_01.png", path, 28)
        good = omniglot_mod.decode_drawing(zf, "images_background/A/character01/0001_02.png", path, 28)
    assert good.shape == (28, 28) and good.dtype == np.uint8
    # A black blot on white in the file becomes a bright blot on black.
    assert good[14, 14] == 255 and good[0, 0] == 0


def test_bad_image_size(omniglot_data_dir, tmp_path):
    with pytest.raises(DataError, match="image_size"):
        load_omniglot(omniglot_data_dir, image_size=0, cache_dir=tmp_path)
