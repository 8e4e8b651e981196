"""MiniImageNet (Vinyals et al. 2016) in the split of Ravi & Larochelle (2017).

The layout is the one of the original split files: a folder ``images/`` with the ``.jpg`` files
and ``train.csv``, ``val.csv``, ``test.csv`` beside it, each with the header ``filename,label``
(label = ImageNet synset id). The official split has 64 / 16 / 20 classes of 600 images, 84x84
RGB. Classes are ordered by label, images within a class by their order in the csv file.

Decoding ~60,000 JPEGs takes a while, so the decoded uint8 arrays are cached as one ``.npz`` in
the cache folder, keyed by the csv files and every listed image's name, size and modification
time: editing, adding or replacing a file makes the next load decode again.
"""
from __future__ import annotations

import csv
import io
import os
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from metajax.data.errors import DataError
from metajax.data.files import (
    CORRUPT_ERRORS,
    FewShotSplits,
    cache_root,
    fingerprint,
    read_array_cache,
    resolve_data_dir,
    write_array_cache,
)

__all__ = ["IMAGE_SIZE", "OFFICIAL_COUNTS", "SPLITS", "MiniImageNetIndex", "index_miniimagenet",
           "load_miniimagenet"]

SPLITS = ("train", "val", "test")
IMAGE_SIZE = 84  # the Ravi & Larochelle images are 84x84; others are resized to it
# (classes, images per class) of the official split files.
OFFICIAL_COUNTS = {"train": (64, 600), "val": (16, 600), "test": (20, 600)}
# Bump when the decoded arrays change meaning (resizing, ordering, ...).
CACHE_FORMAT_VERSION = 1
_HEADER = ["filename", "label"]
_FIX = "fix or replace the file from your MiniImageNet copy"


class MiniImageNetIndex(NamedTuple):
    """The split files, checked: ``classes[split]`` is a tuple of ``(label, filenames)``."""

    folder: Path
    classes: dict[str, tuple[tuple[str, tuple[str, ...]], ...]]

    def counts(self) -> dict[str, dict[str, int]]:
        """``{split: {"classes": C, "images_per_class": E, "images": C * E}}``."""
        out = {}
        for split, classes in self.classes.items():
            per_class = len(classes[0][1]) if classes else 0
            out[split] = {"classes": len(classes), "images_per_class": per_class,
                          "images": len(classes) * per_class}
        return out


def index_miniimagenet(data_dir: str | os.PathLike | None) -> MiniImageNetIndex:
    """Reads and checks the three split files without decoding any image.

    Args:
      data_dir: the folder with ``images/`` and the csv files, or its parent (with a
        ``miniimagenet/`` subfolder); ``None`` uses ``$METAJAX_DATA_DIR``.

    Returns:
      A :class:`MiniImageNetIndex`.

    Raises:
      DataError: a file is missing or malformed, a split names an image that is absent or names
        one twice, the classes of a split have different numbers of images, or two splits share
        a class or an image.
    """
    folder = resolve_data_dir(data_dir, "miniimagenet")
    images = folder / "images"
    present = set(os.listdir(images))
    classes = {split: _read_split(folder / f"{split}.csv", present) for split in SPLITS}

    seen_label: dict[str, str] = {}
    seen_file: dict[str, str] = {}
    for split in SPLITS:
        for label, names in classes[split]:
            if label in seen_label:
                raise DataError(f"class {label} is in both {seen_label[label]}.csv and "
                                f"{split}.csv; the splits must have disjoint classes, so "
                                f"{_FIX}")
            seen_label[label] = split
            for name in names:
                if name in seen_file:
                    raise DataError(f"{name} is listed in both {seen_file[name]}.csv and "
                                    f"{split}.csv; the splits must not share images, so {_FIX}")
                seen_file[name] = split
    return MiniImageNetIndex(folder, classes)


def _read_split(path: Path, present: set[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path} ({type(e).__name__}: {e}); {_FIX}") from e
    if not rows or [c.strip() for c in rows[0]] != _HEADER:
        found = rows[0] if rows else "an empty file"
        raise DataError(f"{path} must start with the header 'filename,label', found {found!r}; "
                        f"{_FIX}")
    by_label: dict[str, list[str]] = {}
    missing = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path}:{line}: expected 'filename,label', found {row!r}; {_FIX}")
        name, label = row[0].strip(), row[1].strip()
        # A name is looked up in images/ only: a path could read files from anywhere.
        if "/" in name or "\\" in name or name in (".", ".."):
            raise DataError(f"{path}:{line}: {name!r} is not a plain file name in images/; {_FIX}")
        if name not in present:
            missing.append(name)
        by_label.setdefault(label, []).append(name)
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise DataError(f"{path.name} names {len(missing)} image(s) absent from "
                        f"{path.parent / 'images'} ({shown}); the images folder is incomplete "
                        "(an interrupted download or extraction?): restore it from your "
                        "MiniImageNet copy")
    if not by_label:
        raise DataError(f"{path} lists no images; {_FIX}")
    for label, names in by_label.items():
        dupes = [n for n, c in Counter(names).items() if c > 1]
        if dupes:
            raise DataError(f"{path.name} lists {dupes[0]} more than once; {_FIX}")
    sizes = Counter(len(names) for names in by_label.values())
    if len(sizes) > 1:
        detail = ", ".join(f"{label}: {len(names)}" for label, names in sorted(by_label.items())
                           if len(names) != sizes.most_common(1)[0][0])
        raise DataError(f"the classes of {path.name} have different numbers of images ({detail}; "
                        f"most have {sizes.most_common(1)[0][0]}); every class of a split needs "
                        f"the same number to form the (classes, images) array; {_FIX}")
    return tuple((label, tuple(by_label[label])) for label in sorted(by_label))


def load_miniimagenet(
    data_dir: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> FewShotSplits:
    """Loads MiniImageNet as uint8 arrays ``(classes, images, 84, 84, 3)`` per split.

    Args:
      data_dir: the folder with ``images/``, ``train.csv``, ``val.csv`` and ``test.csv`` (or its
        parent, with a ``miniimagenet/`` subfolder); ``None`` uses ``$METAJAX_DATA_DIR``.
      cache_dir: folder for the decoded-image cache; ``None`` uses ``default_cache_dir()``.
      progress: show a progress bar while decoding (a cached load decodes nothing).

    Returns:
      ``FewShotSplits(train, val, test)``; classes sorted by label.

    Raises:
      DataError: see :func:`index_miniimagenet`; also a listed image that cannot be decoded.
    """
    index = index_miniimagenet(data_dir)
    images_dir = index.folder / "images"
    sources = [index.folder / f"{split}.csv" for split in SPLITS]
    sources += [images_dir / name for split in SPLITS for _, names in index.classes[split]
                for name in names]
    key = fingerprint(sources, {"version": CACHE_FORMAT_VERSION, "image_size": IMAGE_SIZE})
    cache_path = cache_root(cache_dir) / f"miniimagenet-{IMAGE_SIZE}px-{key}.npz"
    counts = index.counts()
    expected = {split: (counts[split]["classes"], counts[split]["images_per_class"], IMAGE_SIZE,
                        IMAGE_SIZE, 3) for split in SPLITS}
    arrays = read_array_cache(cache_path, expected, CACHE_FORMAT_VERSION, "MiniImageNet")
    if arrays is None:
        arrays = _decode_splits(index, progress)
        write_array_cache(cache_path, arrays, CACHE_FORMAT_VERSION, "MiniImageNet")
    return FewShotSplits(*(arrays[split] for split in SPLITS))


def _decode_splits(index: MiniImageNetIndex, progress: bool) -> dict[str, np.ndarray]:
    from tqdm.auto import tqdm  # imported lazily: only needed when decoding

    images_dir = index.folder / "images"
    total = sum(c["images"] for c in index.counts().values())
    arrays = {}
    with tqdm(total=total, desc="Decoding MiniImageNet", unit="img", disable=not progress) as bar:
        for split in SPLITS:
            classes = index.classes[split]
            out = np.empty((len(classes), len(classes[0][1]), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
            for c, (_, names) in enumerate(classes):
                for e, name in enumerate(names):
                    out[c, e] = decode_image(images_dir / name)
                bar.update(len(names))
            arrays[split] = out
    return arrays


def decode_image(path: Path) -> np.ndarray:
    """One image file -> uint8 ``(84, 84, 3)`` RGB, resized with Lanczos if it is another size."""
    try:
        # Read the bytes first so the file handle is closed before PIL decodes lazily.
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB")  # ImageNet holds a few greyscale and CMYK JPEGs
        if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
            rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
        return np.asarray(rgb, dtype=np.uint8)
    except CORRUPT_ERRORS as e:
        raise DataError(f"{path} is corrupt or truncated ({type(e).__name__}: {e}); "
                        f"{_FIX}") from e
