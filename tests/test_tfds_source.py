"""The optional TFDS source, against a stand-in module with TFDS's API (TFDS is not installed)."""
from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest
from datagen import write_cifar100

from metajax.data import DataError, load_cifar_fs, load_splits
from metajax.data.cifar import read_cifar100
from metajax.data.omniglot import split_characters
from metajax.data.tfds_source import load_tfds

BACKGROUND, EVALUATION = 964, 659


class FakeTFDS(types.ModuleType):
    """The part of ``tensorflow_datasets`` metajax uses: ``data_source``, ``load`` +
    ``as_numpy``, ``builder(...).info.features[...].names``; records how it was called."""

    def __init__(self, splits, label_names=None, *, array_record=True, prepared=True):
        super().__init__("tensorflow_datasets")
        self.splits, self.label_names = splits, label_names or {}
        self.array_record, self.prepared = array_record, prepared
        self.calls = []

    def _check(self, name, split, download):
        assert download is False, "metajax must never let TFDS download"
        if not self.prepared or (name, split) not in self.splits:
            raise AssertionError(f"Dataset {name}: could not find data in /fake/tfds")

    def data_source(self, name, *, split, data_dir=None, download=True):
        self.calls.append(("data_source", name, split, data_dir))
        self._check(name, split, download)
        if not self.array_record:
            raise NotImplementedError("Random access data source for file format tfrecord")
        return list(self.splits[name, split])

    def load(self, name, *, split, data_dir=None, download=True):
        self.calls.append(("load", name, split, data_dir))
        self._check(name, split, download)
        return ("dataset", name, split)

    def as_numpy(self, dataset):
        _, name, split = dataset
        return iter(self.splits[name, split])

    def builder(self, name, data_dir=None):
        features = {k: types.SimpleNamespace(names=v) for k, v in self.label_names.items()}
        return types.SimpleNamespace(info=types.SimpleNamespace(features=features))


def _fake_omniglot(seed=0):
    """TFDS-like Omniglot: 50 alphabets (sorted names -> labels), 1623 characters x 20 drawings
    whose 28x28 grey pixels encode (character in file order, drawing); examples shuffled as
    TFDS shuffles them. Returns the fake module and the images in the file loader's order."""
    rng = np.random.default_rng(seed)
    alphabets = rng.permutation(50)  # which alphabet labels (sorted names) go to which archive
    layout = {"train": (sorted(alphabets[:30]), [33] * 4 + [32] * 26),
              "test": (sorted(alphabets[30:]), [33] * 19 + [32])}
    expected, splits, g = [], {}, 0
    for split, (labels, sizes) in layout.items():
        examples = []
        for alphabet, size in zip(labels, sizes):
            for char in range(size):
                drawings = []
                for d in range(20):
                    grey = np.full((28, 28), 255, np.uint8)  # white page, dark "strokes"
                    grey[0, :3] = (g // 256, g % 256, d)
                    drawings.append(255 - grey)  # what metajax makes of it: inverted
                    examples.append({"image": np.repeat(grey[..., None], 3, axis=-1),
                                     "alphabet": alphabet, "alphabet_char_id": char,
                                     "label": g})
                expected.append(np.stack(drawings))
                g += 1
        splits["omniglot", split] = [examples[i] for i in rng.permutation(len(examples))]
    assert g == BACKGROUND + EVALUATION
    return splits, np.stack(expected)


@pytest.fixture(scope="module")
def fake_omniglot():
    return _fake_omniglot()


def _install(monkeypatch, fake):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)


def _sort_drawings(split: np.ndarray) -> np.ndarray:
    """Orders every class's drawings by the drawing index they encode (TFDS shuffles them)."""
    order = np.argsort(255 - split[:, :, 0, 2, 0], axis=1)
    return np.take_along_axis(split, order[:, :, None, None, None], axis=1)


@pytest.mark.parametrize("array_record", [True, False])
def test_omniglot_from_tfds_matches_the_file_protocol(monkeypatch, fake_omniglot, array_record):
    examples, expected = fake_omniglot
    fake = FakeTFDS(examples, array_record=array_record)
    _install(monkeypatch, fake)
    splits = load_tfds("omniglot", "/data/tfds", rotations=False)
    # The same characters in the same splits as the file source (drawing order aside).
    for got, want in zip(splits, split_characters(expected, rotations=False)):
        np.testing.assert_array_equal(_sort_drawings(got), want)
    used = {c[0] for c in fake.calls}
    assert used == ({"data_source"} if array_record else {"data_source", "load"})
    assert all(c[3] == "/data/tfds" for c in fake.calls)
    assert load_tfds("omniglot", None).train.shape == (4400, 20, 28, 28, 1)


def test_cifar_from_tfds_equals_the_files(monkeypatch, tmp_path):
    folder = write_cifar100(tmp_path / "cifar")
    cifar = read_cifar100(folder)
    n_train = 500  # the generator writes 5 per class to train: 500 images
    examples = [{"image": img, "label": int(f), "coarse_label": int(c)}
                for img, f, c in zip(cifar.images, cifar.fine, cifar.coarse)]
    fake = FakeTFDS({("cifar100", "train"): examples[:n_train],
                     ("cifar100", "test"): examples[n_train:]},
                    {"label": cifar.fine_names, "coarse_label": cifar.coarse_names})
    _install(monkeypatch, fake)
    for a, b in zip(load_splits("cifar-fs", None, source="tfds"), load_cifar_fs(folder)):
        np.testing.assert_array_equal(a, b)
    assert [s.shape[0] for s in load_tfds("fc100")] == [60, 20, 20]


def test_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail
    with pytest.raises(DataError, match=r"pip install 'metajax\[tfds\]'.*--source files"):
        load_splits("omniglot", None, source="tfds")


def test_not_prepared_says_how_to_use_local_files(monkeypatch):
    _install(monkeypatch, FakeTFDS({}, prepared=False))
    with pytest.raises(DataError) as info:
        load_tfds("omniglot", "/data/tfds")
    message = str(info.value)
    assert "never downloads" in message and "/data/tfds" in message
    assert "--source files --data-dir DIR" in message and "images_background.zip" in message
    assert "could not find data" in message  # TFDS's own reason is kept


def test_datasets_tfds_lacks(monkeypatch):
    _install(monkeypatch, FakeTFDS({}))
    with pytest.raises(DataError, match="--source tfds has no 'miniimagenet'.*--source files"):
        load_splits("miniimagenet", None, source="tfds")
    with pytest.raises(DataError, match="unknown --source 'hub'"):
        load_splits("omniglot", None, source="hub")


def test_default_source_needs_neither_tfds_nor_tensorflow():
    code = ("import sys, metajax, metajax.cli, metajax.data, metajax.training.tasks; "
            "bad = [m for m in ('tensorflow_datasets', 'tensorflow') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
