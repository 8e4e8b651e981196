"""CIFAR-FS and FC100 from a generated archive in the CIFAR-100 python layout; safe unpickling."""
from __future__ import annotations

import io
import os
import pickle
import tarfile

import numpy as np
import pytest
from datagen import CIFAR100_SUPERCLASSES, FINE_NAMES, cifar_image, write_cifar100

from metajax.data import DataError, load_cifar_fs, load_fc100
from metajax.data.cifar import (CIFAR_FS_SPLITS, FC100_SUPERCLASS_SPLITS, read_cifar100,
                                restricted_loads)

PER_CLASS = 6  # 5 in the train file + 1 in the test file


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    return write_cifar100(tmp_path_factory.mktemp("cifar"))


def _decode_ids(split: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, E, 32, 32, 3) test images -> fine class and example index of every image."""
    return split[:, :, 0, 0, 0], split[:, :, 0, 0, 1]


def test_published_lists_partition_the_100_classes():
    fs = [set(CIFAR_FS_SPLITS[s]) for s in ("train", "val", "test")]
    assert [len(s) for s in fs] == [64, 16, 20]
    assert not (fs[0] & fs[1] or fs[0] & fs[2] or fs[1] & fs[2])
    assert set.union(*fs) == set(FINE_NAMES)
    supers = [set(FC100_SUPERCLASS_SPLITS[s]) for s in ("train", "val", "test")]
    assert [len(s) for s in supers] == [12, 4, 4]
    assert set.union(*supers) == set(CIFAR100_SUPERCLASSES)
    assert not (supers[0] & supers[1] or supers[0] & supers[2] or supers[1] & supers[2])


def test_cifar_fs_splits(cifar_dir):
    splits = load_cifar_fs(cifar_dir)
    for name, n in (("train", 64), ("val", 16), ("test", 20)):
        split = getattr(splits, name)
        assert split.shape == (n, PER_CLASS, 32, 32, 3) and split.dtype == np.uint8
        fine, index = _decode_ids(split)
        # Class c of the split is the c-th listed class, and holds all its images in file order.
        expected = [FINE_NAMES.index(f) for f in CIFAR_FS_SPLITS[name]]
        np.testing.assert_array_equal(fine, np.repeat(np.array(expected)[:, None], PER_CLASS, 1))
        np.testing.assert_array_equal(index, np.tile(np.arange(PER_CLASS), (n, 1)))
    # Channel-first rows became channels-last images exactly.
    np.testing.assert_array_equal(splits.test[3, 2], cifar_image(
        FINE_NAMES.index(CIFAR_FS_SPLITS["test"][3]), 2))


def test_fc100_splits_by_superclass(cifar_dir):
    splits = load_fc100(cifar_dir)
    assert [s.shape[0] for s in splits] == [60, 20, 20]
    for name, split in splits._asdict().items():
        fine, _ = _decode_ids(split)
        names = {FINE_NAMES[f] for f in fine[:, 0]}
        expected = {f for s in FC100_SUPERCLASS_SPLITS[name] for f in CIFAR100_SUPERCLASSES[s]}
        assert names == expected, name


def test_tarball_gives_the_same_arrays(cifar_dir, tmp_path):
    packed = write_cifar100(tmp_path / "packed", tarball=True)
    assert not (packed / "cifar-100-python").exists()
    for a, b in zip(load_fc100(packed), load_fc100(cifar_dir)):
        np.testing.assert_array_equal(a, b)
    # A parent folder with a cifar100/ subfolder works too.
    (tmp_path / "parent").mkdir()
    (tmp_path / "parent" / "cifar100").symlink_to(packed)
    np.testing.assert_array_equal(load_cifar_fs(tmp_path / "parent").val,
                                  load_cifar_fs(cifar_dir).val)


# --- safety and damaged files ------------------------------------------------------------------

class _RunsCode:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        # Unpickling this calls os.system: exactly what a hostile "dataset" file would do.
        return os.system, (f"touch {self.path}",)


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"data": _RunsCode(marker)}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load posix.system|os.system"):
        restricted_loads(evil)
    assert not marker.exists()
    # A plain pickle (what CIFAR files hold) loads, NumPy 2 and protocol 2 bytes included.
    plain = {"data": np.arange(6, dtype=np.uint8).reshape(2, 3), "names": ["a", b"b"], "n": 1.5}
    for protocol in (2, 3, 4, 5):
        loaded = restricted_loads(pickle.dumps(plain, protocol=protocol))
        np.testing.assert_array_equal(loaded["data"], plain["data"])
        assert loaded["names"] == ["a", b"b"] and loaded["n"] == 1.5
    with pytest.raises(pickle.UnpicklingError, match="object-dtype"):
        restricted_loads(pickle.dumps(np.array([1, "x"], dtype=object), protocol=2))


def test_hostile_cifar_file_is_a_data_error(cifar_dir, tmp_path):
    folder = write_cifar100(tmp_path / "evil")
    marker = tmp_path / "pwned"
    (folder / "cifar-100-python" / "meta").write_bytes(
        pickle.dumps({"fine_label_names": _RunsCode(marker)}, protocol=2))
    with pytest.raises(DataError, match="meta: refusing to load.*download cifar-100-python.tar.gz"):
        read_cifar100(folder)
    assert not marker.exists()


def test_truncated_and_missing_files(tmp_path):
    folder = write_cifar100(tmp_path / "cut")
    train = folder / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[:5000])
    with pytest.raises(DataError, match="train is not a readable CIFAR-100 pickle.*truncated"):
        load_cifar_fs(folder)
    packed = write_cifar100(tmp_path / "packed", tarball=True)
    tarball = packed / "cifar-100-python.tar.gz"
    tarball.write_bytes(tarball.read_bytes()[: tarball.stat().st_size // 2])
    with pytest.raises(DataError, match="not a readable tar.gz archive"):
        load_fc100(packed)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="lacks cifar-100-python/train.*cifar-100-python.tar.gz"):
        load_fc100(tmp_path / "empty")


def test_tarball_without_a_member(tmp_path):
    folder = tmp_path / "partial"
    folder.mkdir()
    with tarfile.open(folder / "cifar-100-python.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("cifar-100-python/meta")
        payload = pickle.dumps({"fine_label_names": [], "coarse_label_names": []}, protocol=2)
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    with pytest.raises(DataError, match="lacks cifar-100-python/train, cifar-100-python/test"):
        load_cifar_fs(folder)


def test_wrong_structure(tmp_path):
    folder = write_cifar100(tmp_path / "odd")
    meta = folder / "cifar-100-python" / "meta"
    meta.write_bytes(pickle.dumps({"fine_label_names": FINE_NAMES[:10],
                                   "coarse_label_names": []}, protocol=2))
    with pytest.raises(DataError, match="100 fine_label_names"):
        load_cifar_fs(folder)
