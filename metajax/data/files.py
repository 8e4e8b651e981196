"""What every dataset loader shares: finding the data folder, and the decoded-array cache.

Loaders read the standard files a user already has (offline, never downloading) and cache the
decoded arrays as an uncompressed ``.npz`` in ``$METAJAX_CACHE_DIR`` (default
``~/.cache/metajax``). A cache file's name carries a fingerprint of its source files (names,
sizes, modification times) and of the decoding settings, so a changed source is decoded again
instead of being served stale.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple

import numpy as np
from PIL import Image

from metajax.data.errors import DataError

__all__ = [
    "CACHE_DIR_ENV",
    "CORRUPT_ERRORS",
    "DATA_DIR_ENV",
    "DATASET_FILES",
    "DatasetFiles",
    "FewShotSplits",
    "default_cache_dir",
    "file_digest",
    "fingerprint",
    "read_array_cache",
    "resolve_data_dir",
    "write_array_cache",
]

DATA_DIR_ENV = "METAJAX_DATA_DIR"
CACHE_DIR_ENV = "METAJAX_CACHE_DIR"

# Everything zipfile, zlib, tarfile and PIL raise for a damaged archive, member or image.
CORRUPT_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    OSError,  # includes PIL.UnidentifiedImageError and tarfile.ReadError's gzip errors
    ValueError,
    SyntaxError,  # raised by some PIL plugins on malformed headers
    Image.DecompressionBombError,
)


class FewShotSplits(NamedTuple):
    """A few-shot dataset split into disjoint class sets.

    Each field is a uint8 array ``(num_classes, examples_per_class, H, W, C)``, the layout that
    :func:`metajax.data.sample_episode` draws tasks from.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


class DatasetFiles(NamedTuple):
    """Where a dataset's files are, for :func:`resolve_data_dir`.

    Attributes:
      layouts: alternative sets of paths relative to the data folder, any one of which is enough;
        a path ending in ``/`` is a folder.
      subfolders: names of subfolders of the given directory to look in as well.
      hint: how to get the files, appended to every error message.
    """

    layouts: tuple[tuple[str, ...], ...]
    subfolders: tuple[str, ...]
    hint: str


OMNIGLOT_URL = "https://github.com/brendenlake/omniglot/tree/master/python"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"

DATASET_FILES = {
    "omniglot": DatasetFiles(
        (("images_background.zip", "images_evaluation.zip"),), ("omniglot",),
        f"download images_background.zip and images_evaluation.zip from {OMNIGLOT_URL} and put "
        "them, unextracted, in DIR or in DIR/omniglot/"),
    "omniglot-runs": DatasetFiles(
        (("all_runs.zip",),), ("omniglot",),
        f"download all_runs.zip (the one-shot benchmark of Lake et al.) from {OMNIGLOT_URL} and "
        "put it, unextracted, in DIR or in DIR/omniglot/"),
    "miniimagenet": DatasetFiles(
        (("images/", "train.csv", "val.csv", "test.csv"),),
        ("miniimagenet", "mini-imagenet", "mini_imagenet"),
        "MiniImageNet (Ravi & Larochelle split) is the folder images/ with the .jpg files beside "
        "train.csv, val.csv and test.csv (header filename,label); put them in DIR or in "
        "DIR/miniimagenet/"),
    "cifar100": DatasetFiles(
        (("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"),
         ("cifar-100-python.tar.gz",)),
        ("cifar100", "cifar-100"),
        f"download the CIFAR-100 python version (cifar-100-python.tar.gz) from {CIFAR100_URL} "
        "and put it, extracted or not, in DIR or in DIR/cifar100/"),
}


def resolve_data_dir(data_dir: str | os.PathLike | None, dataset: str = "omniglot") -> Path:
    """Finds the folder holding a dataset's files.

    Args:
      data_dir: the folder holding the files, or a parent folder with a ``<dataset>/`` subfolder
        holding them. ``None`` (or ``""``) falls back to the ``METAJAX_DATA_DIR`` environment
        variable.
      dataset: a key of ``DATASET_FILES`` (``omniglot``, ``omniglot-runs``, ``miniimagenet``,
        ``cifar100``).

    Returns:
      The absolute path of the folder that holds the dataset's files.

    Raises:
      DataError: no folder was given, it does not exist, or it lacks the dataset's files.
    """
    if dataset not in DATASET_FILES:
        raise DataError(
            f"unknown dataset {dataset!r}; use one of {', '.join(sorted(DATASET_FILES))}"
        )
    spec = DATASET_FILES[dataset]
    listing = " or ".join(", ".join(layout) for layout in spec.layouts)

    source = "the data directory"
    if data_dir is None or str(data_dir) == "":
        env = os.environ.get(DATA_DIR_ENV, "")
        if not env:
            raise DataError(
                f"no data directory given for {dataset}; pass --data-dir DIR or set "
                f"{DATA_DIR_ENV}=DIR; {spec.hint}"
            )
        data_dir, source = env, f"{DATA_DIR_ENV}"
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(
            f"{source} {str(root)!r} does not exist or is not a folder; point --data-dir or "
            f"{DATA_DIR_ENV} at the folder holding {listing}; {spec.hint}"
        )

    candidates = [root, *(root / sub for sub in spec.subfolders)]
    for folder in candidates:
        if any(all(_exists(folder, p) for p in layout) for layout in spec.layouts):
            return folder.resolve()

    # Report against the candidate closest to complete, preferring a dataset subfolder when it
    # exists, since that is where the user most likely meant to put the files.
    def found(folder: Path) -> tuple[int, bool]:
        best = max(sum(_exists(folder, p) for p in layout) for layout in spec.layouts)
        return best, folder.is_dir()

    target = max(reversed(candidates), key=found)
    layout = max(spec.layouts, key=lambda lay: sum(_exists(target, p) for p in lay))
    missing = [p for p in layout if not _exists(target, p)]
    where = " or ".join(f"DIR/{sub}/" for sub in spec.subfolders)
    raise DataError(
        f"{target} lacks {', '.join(missing)}; the data directory DIR must hold {listing} "
        f"directly or in the subfolder {where}; {spec.hint}"
    )


def _exists(folder: Path, relative: str) -> bool:
    path = folder / relative
    return path.is_dir() if relative.endswith("/") else path.is_file()


def default_cache_dir() -> Path:
    """Returns ``$METAJAX_CACHE_DIR`` if set, else ``~/.cache/metajax``."""
    env = os.environ.get(CACHE_DIR_ENV, "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metajax"


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """``cache_dir`` as a path, or :func:`default_cache_dir` when it is ``None``."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def fingerprint(paths: Iterable[Path], settings: Mapping) -> str:
    """A short hex key that changes when a source file or a decoding setting changes.

    Args:
      paths: the source files; each contributes its name, size and modification time, which
        is cheap (no reading) yet catches a replaced, re-downloaded or edited file.
      settings: JSON-serialisable decoding settings (format version, image size, ...).

    Returns:
      16 hex digits.
    """
    digest = hashlib.sha256(json.dumps(dict(settings), sort_keys=True).encode())
    for path in paths:
        st = path.stat()
        digest.update(f"\0{path.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_array_cache(path: Path, expected: Mapping[str, tuple], version: int,
                     what: str) -> dict[str, np.ndarray] | None:
    """Reads a cache written by :func:`write_array_cache`, checking every array's shape.

    Args:
      path: the ``.npz`` file.
      expected: array name -> expected shape; every array must be uint8.
      version: the loader's cache format version; another version is not used.
      what: the dataset's name, for the warning.

    Returns:
      The arrays, or ``None`` when there is no usable cache (missing, corrupt or stale), in which
      case the caller decodes the source again; a damaged cache only costs time, never an error.
    """
    if not path.is_file():
        return None
    try:
        arrays = {}
        with np.load(path, allow_pickle=False) as npz:
            found_version = int(npz["format_version"])
            if found_version != version:
                raise ValueError(f"format version {found_version}, expected {version}")
            for name, shape in expected.items():
                arrays[name] = npz[name]
                if arrays[name].shape != tuple(shape) or arrays[name].dtype != np.uint8:
                    raise ValueError(f"{name} has shape {arrays[name].shape} and dtype "
                                     f"{arrays[name].dtype}, expected {tuple(shape)} uint8")
    except (*CORRUPT_ERRORS, KeyError, TypeError) as e:
        warnings.warn(f"ignoring unreadable {what} cache {path} ({e}); rebuilding it",
                      RuntimeWarning, stacklevel=3)
        return None
    return arrays


def write_array_cache(path: Path, arrays: Mapping[str, np.ndarray], version: int,
                      what: str) -> None:
    """Writes arrays atomically, so that a crash or a concurrent run never sees half a file.

    An unwritable cache folder only warns: it must not stop training, it only costs decoding
    again next time.
    """
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            # Uncompressed: decoded images barely compress and an uncompressed file loads at
            # disk speed.
            np.savez(fh, **arrays, format_version=np.int64(version))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as e:
        warnings.warn(f"could not write the {what} cache {path} ({e}); the next load will decode "
                      f"the source files again; set {CACHE_DIR_ENV} to a writable folder to avoid "
                      "this", RuntimeWarning, stacklevel=3)
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
