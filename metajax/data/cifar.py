"""CIFAR-FS (Bertinetto et al. 2019) and FC100 (Oreshkin et al. 2018), built from CIFAR-100.

Both read the CIFAR-100 "python version" (``cifar-100-python/{train,test,meta}``, extracted or
as ``cifar-100-python.tar.gz``), pool its 500 training and 100 test images of every class (600
per class, 32x32 RGB) and split the 100 classes:

- CIFAR-FS: 64 / 16 / 20 classes, the lists of Bertinetto et al. (as shipped with their code and
  with torchmeta), random over classes;
- FC100: by superclass, 12 / 4 / 4 superclasses = 60 / 20 / 20 classes (Oreshkin et al.), so no
  superclass is shared between splits.

The files are pickles, and unpickling can run arbitrary code. They are read with a restricted
unpickler that only builds the plain types the real files contain (dicts, lists, strings,
numbers and uint8 NumPy arrays); any other reference makes the load fail before it can run.
Decoding takes about a second, so there is no cache.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from metajax.data.archives import check_member_name
from metajax.data.errors import DataError
from metajax.data.files import CIFAR100_URL, FewShotSplits, resolve_data_dir

__all__ = [
    "CIFAR_FS_SPLITS",
    "CIFAR100_FILES_MD5",
    "FC100_SUPERCLASS_SPLITS",
    "CifarArrays",
    "UnsafePickleError",
    "load_cifar_fs",
    "load_fc100",
    "read_cifar100",
    "restricted_loads",
    "split_classes",
]

# CIFAR-FS class lists (Bertinetto et al., "Meta-learning with differentiable closed-form
# solvers", ICLR 2019; the same lists as torchmeta's cifar-fs assets), by fine label name.
CIFAR_FS_SPLITS = {
    "train": (
        "apple", "aquarium_fish", "bear", "bee", "bottle", "bowl", "boy", "bridge", "bus",
        "can", "castle", "caterpillar", "chair", "clock", "cloud", "cockroach", "couch", "cup",
        "dinosaur", "dolphin", "elephant", "forest", "girl", "hamster", "house", "kangaroo",
        "keyboard", "lawn_mower", "lion", "lizard", "lobster", "mountain", "mouse", "mushroom",
        "oak_tree", "orange", "orchid", "palm_tree", "pear", "pine_tree", "plate", "porcupine",
        "possum", "rabbit", "raccoon", "ray", "road", "seal", "shrew", "skunk", "skyscraper",
        "snake", "spider", "squirrel", "streetcar", "sunflower", "tank", "tiger", "train",
        "trout", "tulip", "turtle", "willow_tree", "wolf",
    ),
    "val": (
        "beaver", "beetle", "butterfly", "camel", "cattle", "crab", "crocodile", "flatfish",
        "lamp", "maple_tree", "motorcycle", "otter", "sea", "shark", "television", "tractor",
    ),
    "test": (
        "baby", "bed", "bicycle", "chimpanzee", "fox", "leopard", "man", "pickup_truck",
        "plain", "poppy", "rocket", "rose", "snail", "sweet_pepper", "table", "telephone",
        "wardrobe", "whale", "woman", "worm",
    ),
}

# FC100 superclass split (Oreshkin et al., "TADAM", NeurIPS 2018): coarse label indices
# train {1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19}, val {8, 11, 13, 16}, test {0, 7, 12, 14}.
FC100_SUPERCLASS_SPLITS = {
    "train": (
        "fish", "flowers", "food_containers", "fruit_and_vegetables",
        "household_electrical_devices", "household_furniture", "large_man-made_outdoor_things",
        "large_natural_outdoor_scenes", "reptiles", "trees", "vehicles_1", "vehicles_2",
    ),
    "val": ("large_carnivores", "large_omnivores_and_herbivores", "non-insect_invertebrates",
            "small_mammals"),
    "test": ("aquatic_mammals", "insects", "medium_mammals", "people"),
}

# MD5 sums of the official files (as published with torchvision's CIFAR100 loader).
CIFAR100_FILES_MD5 = {
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
    "train": "16019d7e3df5f24257cddd939b257f8d",
    "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "meta": "7973b15100ade9c7d40fb424638fde48",
}

_MEMBERS = ("train", "test", "meta")
_READ_ERRORS = (OSError, EOFError, ValueError)
_FIX = (f"the CIFAR-100 python files are damaged or not the real ones; download "
        f"cifar-100-python.tar.gz again from {CIFAR100_URL}")
IMAGE_SHAPE = (32, 32, 3)


class CifarArrays(NamedTuple):
    """CIFAR-100 as plain arrays, the train file's images before the test file's."""

    images: np.ndarray  # uint8 (60000, 32, 32, 3)
    fine: np.ndarray  # int64 fine labels in [0, 100)
    coarse: np.ndarray  # int64 superclass labels in [0, 20)
    fine_names: list[str]
    coarse_names: list[str]


# --- restricted unpickling --------------------------------------------------------------------

class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for something the restricted unpickler does not allow."""


def _encode_latin1(text, encoding="latin1", errors="strict"):
    # Python 3 pickles bytes with protocol 2 as _codecs.encode(str, "latin1"); allow just that.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafePickleError("only _codecs.encode(str, 'latin1') is allowed")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # NumPy 1.x
        from numpy.core import multiarray, numeric

    reconstruct, frombuffer = multiarray._reconstruct, numeric._frombuffer
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,  # NumPy 1 pickles (the real files)
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,  # NumPy 2 pickles
        ("numpy.core.numeric", "_frombuffer"): frombuffer,  # protocol 5
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _encode_latin1,
    }


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only the objects listed in ``_allowed_globals``: no other class or function."""

    def __init__(self, file, allowed):
        # latin1 turns Python 2 strings (the real files were written by Python 2) into str and
        # is what NumPy needs to restore Python 2 array buffers.
        super().__init__(file, encoding="latin1")
        self._allowed = allowed

    def find_class(self, module, name):
        try:
            return self._allowed[module, name]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: the file would run code or build an object "
                "that real CIFAR-100 files never contain") from None


def restricted_loads(data: bytes) -> Any:
    """Unpickles ``data`` allowing only plain types and uint8-compatible NumPy arrays.

    Raises:
      UnsafePickleError: the pickle references anything else, such as ``os.system``.
      pickle.UnpicklingError, EOFError, ...: the data is not a complete pickle.
    """
    result = _RestrictedUnpickler(io.BytesIO(data), _allowed_globals()).load()
    _check_plain(result)
    return result


def _check_plain(value) -> None:
    # An object-dtype array would hold arbitrary (if restricted) objects; real files never do.
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise UnsafePickleError("refusing an object-dtype array")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k)
            _check_plain(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_plain(v)
    elif not isinstance(value, (str, bytes, int, float, bool, type(None))):
        raise UnsafePickleError(f"unexpected {type(value).__name__} in a CIFAR-100 file")


# --- reading CIFAR-100 ------------------------------------------------------------------------

def _read_members(folder: Path) -> dict[str, bytes]:
    """The raw bytes of train, test and meta, from the extracted folder or the tarball."""
    extracted = folder / "cifar-100-python"
    if all((extracted / m).is_file() for m in _MEMBERS):
        return {m: (extracted / m).read_bytes() for m in _MEMBERS}
    archive = folder / "cifar-100-python.tar.gz"
    try:
        with tarfile.open(archive, "r:*") as tf:
            found = {}
            for info in tf.getmembers():
                name = check_member_name(info.name, archive)
                if name in {f"cifar-100-python/{m}" for m in _MEMBERS} and info.isfile():
                    found[name.rsplit("/", 1)[1]] = tf.extractfile(info).read()
    except DataError:
        raise
    except (tarfile.TarError, *_READ_ERRORS) as e:
        raise DataError(f"{archive} is not a readable tar.gz archive ({type(e).__name__}: {e}); "
                        f"it is probably truncated; {_FIX}") from e
    missing = [m for m in _MEMBERS if m not in found]
    if missing:
        raise DataError(f"{archive} lacks cifar-100-python/{', cifar-100-python/'.join(missing)}; "
                        f"{_FIX}")
    return found


def read_cifar100(data_dir: str | os.PathLike | None) -> CifarArrays:
    """Reads CIFAR-100 (python version) with the restricted unpickler.

    Args:
      data_dir: folder holding ``cifar-100-python/`` or ``cifar-100-python.tar.gz`` (or a parent
        with a ``cifar100/`` subfolder); ``None`` uses ``$METAJAX_DATA_DIR``.

    Returns:
      A :class:`CifarArrays`.

    Raises:
      DataError: files missing, truncated, not pickles, or holding anything but plain data.
    """
    folder = resolve_data_dir(data_dir, "cifar100")
    raw = _read_members(folder)
    parsed = {}
    for name, data in raw.items():
        try:
            parsed[name] = restricted_loads(data)
        except UnsafePickleError as e:
            raise DataError(f"{name}: {e}; {_FIX}") from e
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, MemoryError) as e:
            raise DataError(f"{name} is not a readable CIFAR-100 pickle ({type(e).__name__}: "
                            f"{e}); it is probably truncated; {_FIX}") from e
        if not isinstance(parsed[name], dict):
            raise DataError(f"{name} holds a {type(parsed[name]).__name__}, expected a dict; "
                            f"{_FIX}")

    meta = parsed["meta"]
    fine_names, coarse_names = meta.get("fine_label_names"), meta.get("coarse_label_names")
    if not (isinstance(fine_names, list) and len(fine_names) == 100
            and isinstance(coarse_names, list) and len(coarse_names) == 20):
        raise DataError(f"meta must list 100 fine_label_names and 20 coarse_label_names; {_FIX}")
    images, fine, coarse = [], [], []
    for name in ("train", "test"):
        part = parsed[name]
        try:
            data = np.asarray(part["data"])
            f = np.asarray(part["fine_labels"], dtype=np.int64)
            c = np.asarray(part["coarse_labels"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{name} lacks data, fine_labels or coarse_labels ({e}); {_FIX}") from e
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{name}: data is {data.dtype} {data.shape}, expected uint8 (N, 3072) "
                            f"rows of 32x32x3 channel-first pixels; {_FIX}")
        if not len(data) == len(f) == len(c):
            raise DataError(f"{name}: {len(data)} images but {len(f)} fine and {len(c)} coarse "
                            f"labels; {_FIX}")
        if len(f) and (f.min() < 0 or f.max() >= 100 or c.min() < 0 or c.max() >= 20):
            raise DataError(f"{name}: labels out of range; {_FIX}")
        # Rows are channel-first (R plane, G plane, B plane); models expect channels last.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        fine.append(f)
        coarse.append(c)
    fine_all, coarse_all = np.concatenate(fine), np.concatenate(coarse)
    # Each fine class belongs to exactly one superclass; anything else is not CIFAR-100.
    for label in np.unique(fine_all):
        supers = np.unique(coarse_all[fine_all == label])
        if len(supers) != 1:
            raise DataError(f"fine class {fine_names[label]} has {len(supers)} superclasses; "
                            f"{_FIX}")
    return CifarArrays(images=np.ascontiguousarray(np.concatenate(images)), fine=fine_all,
                       coarse=coarse_all, fine_names=[str(n) for n in fine_names],
                       coarse_names=[str(n) for n in coarse_names])


def split_classes(cifar: CifarArrays, class_names: dict[str, tuple[str, ...]],
                  dataset: str) -> FewShotSplits:
    """Groups the images of the named fine classes into ``(classes, images, 32, 32, 3)`` arrays.

    Classes keep the order of ``class_names``; images of a class keep file order (train file
    first). Every class must have the same number of images (600 in CIFAR-100).
    """
    index = {name: i for i, name in enumerate(cifar.fine_names)}
    out = []
    for split in ("train", "val", "test"):
        unknown = [n for n in class_names[split] if n not in index]
        if unknown:
            raise DataError(f"{dataset}: the {split} classes {', '.join(unknown)} are not in "
                            f"meta's fine_label_names; {_FIX}")
        members = [np.flatnonzero(cifar.fine == index[n]) for n in class_names[split]]
        sizes = {len(m) for m in members}
        if len(sizes) != 1 or 0 in sizes:
            raise DataError(f"{dataset}: the {split} classes have {sorted(sizes)} images each; "
                            f"every class needs the same number (600 in CIFAR-100); {_FIX}")
        out.append(np.stack([cifar.images[m] for m in members]))
    return FewShotSplits(*out)


def fc100_classes(cifar: CifarArrays) -> dict[str, tuple[str, ...]]:
    """The fine classes of FC100's splits: all classes of the split's superclasses."""
    coarse_index = {name: i for i, name in enumerate(cifar.coarse_names)}
    out = {}
    for split, supers in FC100_SUPERCLASS_SPLITS.items():
        unknown = [s for s in supers if s not in coarse_index]
        if unknown:
            raise DataError(f"fc100: the superclasses {', '.join(unknown)} are not in meta's "
                            f"coarse_label_names; {_FIX}")
        wanted = {coarse_index[s] for s in supers}
        labels = np.unique(cifar.fine[np.isin(cifar.coarse, list(wanted))])
        out[split] = tuple(cifar.fine_names[i] for i in labels)
    return out


def load_cifar_fs(data_dir: str | os.PathLike | None = None) -> FewShotSplits:
    """Loads CIFAR-FS.

    Args:
      data_dir: folder with ``cifar-100-python/`` or ``cifar-100-python.tar.gz`` (or a parent
        with a ``cifar100/`` subfolder); ``None`` uses ``$METAJAX_DATA_DIR``.

    Returns:
      ``FewShotSplits`` of uint8 ``(C, 600, 32, 32, 3)`` with C = 64 / 16 / 20, classes in the
      order of ``CIFAR_FS_SPLITS``.

    Raises:
      DataError: see :func:`read_cifar100`.
    """
    return split_classes(read_cifar100(data_dir), CIFAR_FS_SPLITS, "cifar-fs")


def load_fc100(data_dir: str | os.PathLike | None = None) -> FewShotSplits:
    """Loads FC100: the classes of 12 / 4 / 4 superclasses (``FC100_SUPERCLASS_SPLITS``).

    Args:
      data_dir: as for :func:`load_cifar_fs`.

    Returns:
      ``FewShotSplits`` of uint8 ``(C, 600, 32, 32, 3)`` with C = 60 / 20 / 20, classes by fine
      label.

    Raises:
      DataError: see :func:`read_cifar100`.
    """
    cifar = read_cifar100(data_dir)
    return split_classes(cifar, fc100_classes(cifar), "fc100")
