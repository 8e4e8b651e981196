"""MiniImageNet: loading, cache and errors on a small folder of real images; one full real load."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from datagen import read_csv, write_csv, write_miniimagenet_subset
from PIL import Image

from metajax.data import DataError, load_miniimagenet
from metajax.data import miniimagenet as mini_mod


@pytest.fixture(scope="session")
def miniimagenet_splits(miniimagenet_data_dir):
    """The full real MiniImageNet, decoded once per session into the session's cache folder
    ($METAJAX_CACHE_DIR), so that later loads of the real folder in the session are cached."""
    start = time.perf_counter()
    splits = load_miniimagenet(miniimagenet_data_dir)
    return splits, time.perf_counter() - start


@pytest.fixture
def subset(miniimagenet_data_dir, tmp_path):
    """5 classes x 6 real images per split, as symbolic links."""
    return write_miniimagenet_subset(miniimagenet_data_dir, tmp_path / "mini")


def _decode_listed(folder: Path, split: str) -> np.ndarray:
    """The split decoded straight with PIL, classes sorted by label, csv order within a class."""
    by_label: dict[str, list[str]] = {}
    for name, label in read_csv(folder / f"{split}.csv")[1:]:
        by_label.setdefault(label, []).append(name)
    return np.stack([np.stack([np.asarray(Image.open(folder / "images" / n).convert("RGB"))
                               for n in by_label[label]]) for label in sorted(by_label)])


def test_full_real_dataset(miniimagenet_splits):
    splits, seconds = miniimagenet_splits
    assert splits.train.shape == (64, 600, 84, 84, 3)
    assert splits.val.shape == (16, 100, 84, 84, 3)  # the shared copy keeps 100 per val class
    assert splits.test.shape == (20, 600, 84, 84, 3)
    assert all(s.dtype == np.uint8 for s in splits)
    # Natural photos: mid-range mean, full range, and no all-black (undecoded) images.
    assert 80 < splits.test.mean() < 160 and splits.test.max() == 255
    assert (splits.val.reshape(16, 100, -1).max(axis=-1) > 0).all()
    print(f"MiniImageNet first load: {seconds:.1f} s")


def test_subset_matches_direct_decoding(subset):
    splits = load_miniimagenet(subset)
    for split in ("train", "val", "test"):
        array = getattr(splits, split)
        assert array.shape == (5, 6, 84, 84, 3)
        np.testing.assert_array_equal(array, _decode_listed(subset, split))


def test_cache_is_reused_and_invalidated(subset, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_miniimagenet(subset, cache_dir=cache)
    assert len(list(cache.glob("miniimagenet-84px-*.npz"))) == 1

    calls = []
    real_decode = mini_mod.decode_image

    def counting_decode(path):
        calls.append(path.name)
        return real_decode(path)

    monkeypatch.setattr(mini_mod, "decode_image", counting_decode)
    again = load_miniimagenet(subset, cache_dir=cache)
    assert calls == []  # served from the cache
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)

    # Replacing one image (new bytes, new mtime) invalidates the cache.
    name = read_csv(subset / "test.csv")[1][0]
    image = subset / "images" / name
    flipped = np.asarray(Image.open(image))[:, ::-1]
    image.unlink()
    Image.fromarray(flipped).save(image, format="JPEG", quality=95)
    changed = load_miniimagenet(subset, cache_dir=cache)
    assert len(calls) == 90  # all 3 x 5 x 6 images decoded again
    assert not np.array_equal(changed.test[0, 0], first.test[0, 0])
    np.testing.assert_array_equal(changed.train, first.train)
    # So does editing a split file (here: dropping the last image of every class).
    rows = read_csv(subset / "val.csv")
    write_csv(subset / "val.csv", [rows[0]] + [r for i, r in enumerate(rows[1:]) if i % 6 != 5])
    assert load_miniimagenet(subset, cache_dir=cache).val.shape == (5, 5, 84, 84, 3)
    assert len(list(cache.glob("*.npz"))) == 3


def test_corrupt_cache_is_rebuilt(subset, tmp_path):
    cache = tmp_path / "cache"
    good = load_miniimagenet(subset, cache_dir=cache)
    (cache_file,) = cache.glob("*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:1000])
    with pytest.warns(RuntimeWarning, match="MiniImageNet cache.*rebuilding"):
        rebuilt = load_miniimagenet(subset, cache_dir=cache)
    np.testing.assert_array_equal(rebuilt.val, good.val)


def test_other_image_sizes_and_modes_are_converted(subset, tmp_path):
    name = read_csv(subset / "train.csv")[1][0]
    path = subset / "images" / name
    big = Image.open(path).convert("L").resize((500, 375))
    path.unlink()
    big.save(path, format="JPEG")
    splits = load_miniimagenet(subset, cache_dir=tmp_path)
    pixel = splits.train[0, 0]
    assert pixel.shape == (84, 84, 3)
    # A greyscale source becomes three equal channels.
    np.testing.assert_array_equal(pixel[..., 0], pixel[..., 2])


# --- errors ------------------------------------------------------------------------------------

def test_missing_image(subset, tmp_path):
    names = [r[0] for r in read_csv(subset / "train.csv")[1:]]
    for name in names[:4]:
        (subset / "images" / name).unlink()
    with pytest.raises(DataError, match=r"train.csv names 4 image\(s\) absent from .*images"):
        load_miniimagenet(subset, cache_dir=tmp_path)


def test_truncated_image(subset, tmp_path):
    name = read_csv(subset / "val.csv")[3][0]
    path = subset / "images" / name
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"{name} is corrupt or truncated"):
        load_miniimagenet(subset, cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.npz"))  # nothing half-decoded was cached


@pytest.mark.parametrize("edit, match", [
    (lambda rows: [["file", "class"]] + rows[1:], "must start with the header 'filename,label'"),
    (lambda rows: rows + [[rows[1][0], rows[1][1]]], "lists .* more than once"),
    (lambda rows: rows[:-1], "different numbers of images"),
    (lambda rows: rows + [["../train.csv", rows[1][1]]], "not a plain file name"),
    (lambda rows: rows + [["x.jpg"]], r"expected 'filename,label'"),
])
def test_malformed_split_file(subset, tmp_path, edit, match):
    write_csv(subset / "test.csv", edit(read_csv(subset / "test.csv")))
    with pytest.raises(DataError, match=match):
        load_miniimagenet(subset, cache_dir=tmp_path)


def test_overlapping_splits(subset, tmp_path):
    train, test = read_csv(subset / "train.csv"), read_csv(subset / "test.csv")
    # A training image listed under a test class.
    write_csv(subset / "test.csv", [test[0], [train[1][0], test[1][1]]] + test[2:])
    with pytest.raises(DataError, match="listed in both train.csv and test.csv"):
        load_miniimagenet(subset, cache_dir=tmp_path)
    # A test class that is also a training class.
    write_csv(subset / "test.csv", test[:1] + [[n, train[1][1]] for n, _ in test[1:]])
    with pytest.raises(DataError, match=f"class {train[1][1]} is in both train.csv and test.csv"):
        load_miniimagenet(subset, cache_dir=tmp_path)


def test_missing_folder_parts(subset, tmp_path, monkeypatch):
    os.unlink(subset / "val.csv")
    with pytest.raises(DataError, match="lacks val.csv.*images/, train.csv, val.csv, test.csv"):
        load_miniimagenet(subset, cache_dir=tmp_path)
    monkeypatch.delenv("METAJAX_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="--data-dir"):
        load_miniimagenet(None, cache_dir=tmp_path)
