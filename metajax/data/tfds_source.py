"""tensorflow-datasets as an optional source (``pip install 'metajax[tfds]'``, ``--source tfds``).

For users who already have TFDS data prepared. metajax never asks TFDS to download: it opens the
prepared dataset with ``tfds.data_source`` (random access, no TensorFlow needed, ArrayRecord
files) or, failing that, ``tfds.load`` + ``tfds.as_numpy`` (needs TensorFlow), with
``download=False``. TFDS is imported only here and only when this source is used, so the default
file source needs neither TFDS nor TensorFlow.

Datasets: ``omniglot`` (TFDS ``omniglot``: its ``train`` split is ``images_background``, ``test``
is ``images_evaluation``) and ``cifar-fs`` / ``fc100`` (TFDS ``cifar100``). TFDS has no
MiniImageNet. The images get the same preprocessing and the same class splits as with the file
source; only the order of the examples within a class can differ (TFDS shuffles examples when it
prepares a dataset), so a given seed draws different episodes than with the files.
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Iterable

import numpy as np
from PIL import Image

from metajax.data.cifar import CIFAR_FS_SPLITS, CifarArrays, fc100_classes, split_classes
from metajax.data.errors import DataError
from metajax.data.files import DATA_DIR_ENV, FewShotSplits
from metajax.data.omniglot import (DRAWINGS_PER_CHARACTER, EXPECTED_CHARACTERS,
                                   preprocess_drawing, split_characters)

__all__ = ["TFDS_NAMES", "import_tfds", "load_tfds"]

# metajax dataset -> TFDS dataset it is built from.
TFDS_NAMES = {"omniglot": "omniglot", "cifar-fs": "cifar100", "fc100": "cifar100"}

_LOCAL_FILES = {
    "omniglot": "--source files --data-dir DIR, DIR holding images_background.zip and "
                "images_evaluation.zip",
    "cifar100": "--source files --data-dir DIR, DIR holding cifar-100-python/ or "
                "cifar-100-python.tar.gz",
}


def import_tfds():
    """Imports ``tensorflow_datasets``, or says how to install it or avoid it.

    Raises:
      DataError: tensorflow-datasets is not installed.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            f"--source tfds needs tensorflow-datasets, which is not installed ({e}); install it "
            "with pip install 'metajax[tfds]', or use the default --source files with "
            "--data-dir pointing at the dataset's original files"
        ) from e
    return tfds


def _examples(tfds, name: str, split: str, data_dir: str | None) -> Iterable[dict]:
    """The examples of a prepared TFDS split as dicts of NumPy values; never downloads."""
    where = data_dir or "TFDS's default data_dir (~/tensorflow_datasets or $TFDS_DATA_DIR)"
    errors = []
    # TFDS signals "not prepared", "not in ArrayRecord format" and "no TensorFlow" with many
    # exception types (AssertionError, FileNotFoundError, NotImplementedError, ImportError, its
    # own DatasetNotFoundError ...), so any failure here means: try the next way, then explain.
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        return (source[i] for i in range(len(source)))
    except Exception as e:  # noqa: BLE001 - see above
        errors.append(f"tfds.data_source: {type(e).__name__}: {e}")
    try:
        dataset = tfds.load(name, split=split, data_dir=data_dir, download=False)
        return tfds.as_numpy(dataset)
    except Exception as e:  # noqa: BLE001 - see above
        errors.append(f"tfds.load: {type(e).__name__}: {e}")
    raise DataError(
        f"TFDS has no prepared {name!r} split {split!r} in {where} and metajax never downloads "
        f"({'; '.join(errors)}). Prepare it where there is a network (tfds build {name} "
        f"--data_dir DIR), or read the original files instead: {_LOCAL_FILES[name]} (or "
        f"{DATA_DIR_ENV}=DIR)"
    )


def load_tfds(dataset: str, data_dir: str | os.PathLike | None = None, *,
              image_size: int = 28, rotations: bool = True) -> FewShotSplits:
    """Loads a metajax dataset from prepared TFDS data.

    Args:
      dataset: ``omniglot``, ``cifar-fs`` or ``fc100``.
      data_dir: TFDS's ``data_dir``; ``None`` lets TFDS use its default.
      image_size: Omniglot's image side (as :func:`metajax.data.load_omniglot`).
      rotations: Omniglot's rotated classes (as :func:`metajax.data.load_omniglot`).

    Returns:
      The same splits as the file source gives (``OmniglotSplits`` for Omniglot).

    Raises:
      DataError: the dataset is not available through TFDS, TFDS is not installed, or its data is
        not prepared.
    """
    if dataset not in TFDS_NAMES:
        raise DataError(f"--source tfds has no {dataset!r} (TFDS provides "
                        f"{', '.join(sorted(TFDS_NAMES))}); use --source files with --data-dir")
    tfds = import_tfds()
    data_dir = None if data_dir in (None, "") else str(data_dir)
    if dataset == "omniglot":
        return _omniglot(tfds, data_dir, image_size, rotations)
    cifar = _cifar100(tfds, data_dir)
    if dataset == "cifar-fs":
        return split_classes(cifar, CIFAR_FS_SPLITS, "cifar-fs")
    return split_classes(cifar, fc100_classes(cifar), "fc100")


def _omniglot(tfds, data_dir, image_size: int, rotations: bool):
    characters = []
    # TFDS "train" is images_background and "test" images_evaluation; its alphabet labels are
    # the sorted alphabet names and alphabet_char_id is characterNN - 1, so sorting by them gives
    # the file source's (archive, alphabet, character) order and hence the same split.
    for split, archive in (("train", "images_background.zip"), ("test", "images_evaluation.zip")):
        groups: dict[tuple[int, int], list[np.ndarray]] = defaultdict(list)
        for ex in _examples(tfds, "omniglot", split, data_dir):
            image = Image.fromarray(np.asarray(ex["image"], dtype=np.uint8).squeeze())
            key = (int(ex["alphabet"]), int(ex["alphabet_char_id"]))
            groups[key].append(preprocess_drawing(image, image_size))
        expected = EXPECTED_CHARACTERS[archive]
        if len(groups) != expected or any(len(g) != DRAWINGS_PER_CHARACTER
                                          for g in groups.values()):
            raise DataError(f"TFDS omniglot split {split!r} has {len(groups)} characters with "
                            f"{sorted({len(g) for g in groups.values()})} drawings, expected "
                            f"{expected} x {DRAWINGS_PER_CHARACTER} ({archive}); prepare it again "
                            f"or use {_LOCAL_FILES['omniglot']}")
        characters += [np.stack(groups[k]) for k in sorted(groups)]
    return split_characters(np.stack(characters), rotations)


def _cifar100(tfds, data_dir) -> CifarArrays:
    info = tfds.builder("cifar100", data_dir=data_dir).info
    fine_names = list(info.features["label"].names)
    coarse_names = list(info.features["coarse_label"].names)
    images, fine, coarse = [], [], []
    for split in ("train", "test"):
        for ex in _examples(tfds, "cifar100", split, data_dir):
            images.append(np.asarray(ex["image"], dtype=np.uint8))
            fine.append(int(ex["label"]))
            coarse.append(int(ex["coarse_label"]))
    if not images or images[0].shape != (32, 32, 3):
        raise DataError(f"TFDS cifar100 gave {len(images)} images of shape "
                        f"{images[0].shape if images else None}, expected 32x32x3; prepare it "
                        f"again or use {_LOCAL_FILES['cifar100']}")
    return CifarArrays(np.stack(images), np.asarray(fine, np.int64), np.asarray(coarse, np.int64),
                       fine_names, coarse_names)
