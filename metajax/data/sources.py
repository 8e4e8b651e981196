"""The image datasets by name, from local files (default) or prepared TFDS data."""
from __future__ import annotations

import os
from typing import NamedTuple

from metajax.data.cifar import load_cifar_fs, load_fc100
from metajax.data.errors import DataError
from metajax.data.files import FewShotSplits
from metajax.data.miniimagenet import load_miniimagenet
from metajax.data.omniglot import load_omniglot

__all__ = ["IMAGE_DATASETS", "SOURCES", "ImageDataset", "load_splits"]

SOURCES = ("files", "tfds")


class ImageDataset(NamedTuple):
    """What a training run needs to know about a dataset before loading it."""

    model: str  # the standard backbone of the papers (see metajax.models.build_model)
    image_shape: tuple[int, int, int]


IMAGE_DATASETS = {
    "omniglot": ImageDataset("conv4", (28, 28, 1)),
    "miniimagenet": ImageDataset("conv4-pool", (84, 84, 3)),
    "cifar-fs": ImageDataset("conv4-pool", (32, 32, 3)),
    "fc100": ImageDataset("conv4-pool", (32, 32, 3)),
}


def load_splits(dataset: str, data_dir: str | os.PathLike | None = None, *,
                source: str = "files", progress: bool = False) -> FewShotSplits:
    """Loads an image dataset's train/val/test classes.

    Args:
      dataset: a key of ``IMAGE_DATASETS``.
      data_dir: the dataset's folder (``files``) or TFDS's ``data_dir`` (``tfds``).
      source: ``files`` (the original archives, read offline) or ``tfds`` (prepared
        tensorflow-datasets data; needs ``pip install 'metajax[tfds]'``).
      progress: show a progress bar while decoding.

    Returns:
      uint8 arrays ``(classes, examples, H, W, C)`` per split.

    Raises:
      DataError: unknown dataset or source, or missing/corrupt data (the message says the fix).
    """
    if dataset not in IMAGE_DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose one of: "
                        f"{', '.join(IMAGE_DATASETS)}")
    if source == "tfds":
        from metajax.data.tfds_source import load_tfds  # TFDS stays optional

        return load_tfds(dataset, data_dir)
    if source != "files":
        raise DataError(f"unknown --source {source!r}; choose one of: {', '.join(SOURCES)}")
    if dataset == "omniglot":
        return load_omniglot(data_dir, progress=progress)
    if dataset == "miniimagenet":
        return load_miniimagenet(data_dir, progress=progress)
    if dataset == "cifar-fs":
        return load_cifar_fs(data_dir)
    return load_fc100(data_dir)
