"""Omniglot (Lake et al. 2015) read straight from the two official zip archives.

The split follows the protocol of Vinyals et al. (2016) and Finn et al. (2017, MAML): the 1623
characters of ``images_background.zip`` and ``images_evaluation.zip`` are pooled, sorted by
(archive, alphabet, character) and shuffled with ``np.random.default_rng(SPLIT_SEED)`` where
``SPLIT_SEED = 0``. The first 1100 characters are for training, the next 100 for validation (so
train + val = 1200 as in the papers) and the last 423 for testing. Rotations by 0/90/180/270 degrees
turn every character into four classes; a rotation always stays in the split of its character, so
no split ever sees a rotated copy of another split's character.

Decoding the 32,460 PNGs takes a few seconds, so the decoded (unrotated) arrays are cached as an
``.npz`` file keyed by the archives' names, sizes and modification times and the image size.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
import zipfile
import zlib
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from metajax.data.errors import DataError

__all__ = [
    "ARCHIVES",
    "DOWNLOAD_URL",
    "DRAWINGS_PER_CHARACTER",
    "NUM_CHARACTERS",
    "SPLIT_SEED",
    "SPLIT_SIZES",
    "OmniglotSplits",
    "default_cache_dir",
    "load_omniglot",
    "omniglot_split_indices",
    "resolve_data_dir",
]

DOWNLOAD_URL = "https://github.com/brendenlake/omniglot/tree/master/python"
ARCHIVES = ("images_background.zip", "images_evaluation.zip")
# Counts of the official archives; a different count means a partial or wrong download, and the
# fixed split sizes below would silently mean something else.
EXPECTED_CHARACTERS = {"images_background.zip": 964, "images_evaluation.zip": 659}
DRAWINGS_PER_CHARACTER = 20
NUM_CHARACTERS = sum(EXPECTED_CHARACTERS.values())  # 1623
SPLIT_SIZES = (1100, 100, 423)  # train, val, test characters
SPLIT_SEED = 0  # fixed so that every run and every user gets the same split
NUM_ROTATIONS = 4

# Bump when the decoded array changes meaning (resampling filter, inversion, ordering, ...), so that
# stale caches are never read back.
CACHE_FORMAT_VERSION = 1

DATA_DIR_ENV = "METAJAX_DATA_DIR"
CACHE_DIR_ENV = "METAJAX_CACHE_DIR"

_DATASET_FILES = {"omniglot": ARCHIVES}
_DATASET_HINTS = {
    "omniglot": (
        f"download images_background.zip and images_evaluation.zip from {DOWNLOAD_URL} and put "
        "them, unextracted, in DIR or in DIR/omniglot/"
    ),
}

# Everything zipfile, zlib and PIL raise for a damaged archive or member.
_CORRUPT_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    OSError,  # includes PIL.UnidentifiedImageError
    ValueError,
    SyntaxError,  # raised by some PIL plugins on malformed headers
    Image.DecompressionBombError,
)


class OmniglotSplits(NamedTuple):
    """Omniglot split into disjoint class sets.

    Each field is a uint8 array of shape ``(num_classes, 20, image_size, image_size, 1)`` with
    strokes bright (255) on a dark (0) background. With rotations, class ``4 * c + r`` is character
    ``c`` of the split rotated by ``r * 90`` degrees counter-clockwise.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def resolve_data_dir(data_dir: str | os.PathLike | None, dataset: str = "omniglot") -> Path:
    """Finds the folder holding a dataset's files.

    Args:
      data_dir: the folder holding the files, or a parent folder with a ``<dataset>/`` subfolder
        holding them. ``None`` (or ``""``) falls back to the ``METAJAX_DATA_DIR`` environment
        variable.
      dataset: dataset name; only ``"omniglot"`` is known.

    Returns:
      The absolute path of the folder that holds the dataset's files.

    Raises:
      DataError: no folder was given, it does not exist, or it lacks the dataset's files.
    """
    if dataset not in _DATASET_FILES:
        raise DataError(
            f"unknown dataset {dataset!r}; use one of {', '.join(sorted(_DATASET_FILES))}"
        )
    required = _DATASET_FILES[dataset]
    hint = _DATASET_HINTS[dataset]
    listing = ", ".join(required)

    source = "the data directory"
    if data_dir is None or str(data_dir) == "":
        env = os.environ.get(DATA_DIR_ENV, "")
        if not env:
            raise DataError(
                f"no data directory given for {dataset}; pass --data-dir DIR or set "
                f"{DATA_DIR_ENV}=DIR; {hint}"
            )
        data_dir, source = env, f"{DATA_DIR_ENV}"
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(
            f"{source} {str(root)!r} does not exist or is not a folder; point --data-dir or "
            f"{DATA_DIR_ENV} at the folder holding {listing}; {hint}"
        )

    candidates = [root, root / dataset]
    for folder in candidates:
        if all((folder / name).is_file() for name in required):
            return folder.resolve()

    # Report against the candidate closest to complete, preferring the dataset subfolder when it
    # exists, since that is where the user most likely meant to put the files.
    def found(folder: Path) -> int:
        return sum((folder / name).is_file() for name in required)

    target = max(reversed(candidates), key=lambda f: (found(f), f.is_dir()))
    missing = [name for name in required if not (target / name).is_file()]
    raise DataError(
        f"{target} lacks {', '.join(missing)}; the data directory DIR must hold {listing} "
        f"directly or in the subfolder DIR/{dataset}/; {hint}"
    )


def default_cache_dir() -> Path:
    """Returns ``$METAJAX_CACHE_DIR`` if set, else ``~/.cache/metajax``."""
    env = os.environ.get(CACHE_DIR_ENV, "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "metajax"


def omniglot_split_indices() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns the character indices of the train, val and test splits.

    Indices refer to the 1623 characters sorted by (archive, alphabet, character), background
    archive first. They are a fixed permutation from ``np.random.default_rng(SPLIT_SEED)``.

    Returns:
      ``(train, val, test)`` int64 arrays of 1100, 100 and 423 distinct indices.
    """
    perm = np.random.default_rng(SPLIT_SEED).permutation(NUM_CHARACTERS)
    n_train, n_val, _ = SPLIT_SIZES
    return perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]


def load_omniglot(
    data_dir: str | os.PathLike | None = None,
    *,
    image_size: int = 28,
    rotations: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> OmniglotSplits:
    """Loads Omniglot from the official zips, split into train/val/test classes.

    Args:
      data_dir: folder with ``images_background.zip`` and ``images_evaluation.zip`` (or a parent
        with an ``omniglot/`` subfolder); ``None`` uses ``$METAJAX_DATA_DIR``.
      image_size: side length of the square output images (105 keeps the original size).
      rotations: if true, every character gives four classes (0/90/180/270 degrees); class
        ``4 * c + r`` is character ``c`` rotated by ``r * 90`` degrees.
      cache_dir: folder for the decoded-image cache; ``None`` uses ``default_cache_dir()``.
      progress: show a progress bar while decoding the PNGs (a cached load decodes nothing).

    Returns:
      ``OmniglotSplits`` of uint8 arrays ``(num_classes, 20, image_size, image_size, 1)`` with
      1100/100/423 characters (times 4 with rotations) and strokes = 255, background = 0.

    Raises:
      DataError: the data folder or archives are missing, corrupt or not the official ones.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}; use e.g. 28")
    image_size = int(image_size)
    folder = resolve_data_dir(data_dir, "omniglot")
    paths = [folder / name for name in ARCHIVES]

    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache_path = cache_root / f"omniglot-{image_size}px-{_cache_key(paths, image_size)}.npz"
    images = _read_cache(cache_path, image_size)
    if images is None:
        images = _decode_archives(paths, image_size, progress)
        _write_cache(cache_path, images)

    return OmniglotSplits(*(_make_classes(images[idx], rotations)
                            for idx in omniglot_split_indices()))


def _make_classes(characters: np.ndarray, rotations: bool) -> np.ndarray:
    """(n, 20, S, S) -> (n or 4n, 20, S, S, 1), rotated copies adjacent to their character."""
    characters = characters[..., None]
    if rotations:
        rotated = np.stack([np.rot90(characters, k=r, axes=(2, 3)) for r in range(NUM_ROTATIONS)],
                           axis=1)
        characters = rotated.reshape(-1, *characters.shape[1:])
    return np.ascontiguousarray(characters)


def _cache_key(paths: list[Path], image_size: int) -> str:
    stats = []
    for path in paths:
        st = path.stat()
        stats.append([path.name, st.st_size, st.st_mtime_ns])
    blob = json.dumps({"version": CACHE_FORMAT_VERSION, "image_size": image_size,
                       "archives": stats}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_cache(path: Path, image_size: int) -> np.ndarray | None:
    """Returns the cached array, or None when there is no usable cache (missing or corrupt)."""
    if not path.is_file():
        return None
    expected = (NUM_CHARACTERS, DRAWINGS_PER_CHARACTER, image_size, image_size)
    try:
        with np.load(path, allow_pickle=False) as npz:
            version = int(npz["format_version"])
            images = npz["images"]
        if version != CACHE_FORMAT_VERSION or images.shape != expected or images.dtype != np.uint8:
            raise ValueError(f"unexpected contents (version {version}, shape {images.shape}, "
                             f"dtype {images.dtype})")
    except (*_CORRUPT_ERRORS, KeyError, TypeError) as e:
        warnings.warn(f"ignoring unreadable Omniglot cache {path} ({e}); rebuilding it",
                      RuntimeWarning, stacklevel=3)
        return None
    return images


def _write_cache(path: Path, images: np.ndarray) -> None:
    """Writes the cache atomically so that a crash or a concurrent run never sees half a file."""
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            # Uncompressed: the file is small (~25 MB at 28 px) and loads in milliseconds.
            np.savez(fh, images=images, format_version=np.int64(CACHE_FORMAT_VERSION))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as e:
        # A read-only home must not stop training; it only costs decoding again next time.
        warnings.warn(f"could not write the Omniglot cache {path} ({e}); the next load will decode "
                      f"the archives again; set {CACHE_DIR_ENV} to a writable folder to avoid this",
                      RuntimeWarning, stacklevel=3)
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def _redownload(path: Path) -> str:
    return f"re-download {path.name} from {DOWNLOAD_URL} into {path.parent}"


def _index_archive(zf: zipfile.ZipFile, path: Path) -> list[list[str]]:
    """Groups the PNG members by character folder and checks the official counts.

    Returns:
      One sorted list of member names per character, characters sorted by folder path (so by
      alphabet, then character).
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for info in zf.infolist():
        name = info.filename
        if info.is_dir() or not name.lower().endswith(".png"):
            continue
        parts = name.split("/")
        # Skip metadata that macOS zip tools add; they are not drawings.
        if any(p == "__MACOSX" or p.startswith(".") for p in parts[:-1]) or parts[-1].startswith("._"):
            continue
        if len(parts) < 3:
            raise DataError(
                f"{path.name} holds {name!r} outside a <alphabet>/<character>/ folder, so it is not "
                f"the official archive; {_redownload(path)}"
            )
        groups["/".join(parts[:-1])].append(name)

    expected = EXPECTED_CHARACTERS[path.name]
    if len(groups) != expected:
        raise DataError(
            f"{path} holds {len(groups)} character folders with PNG drawings, expected {expected} "
            f"(layout <split>/<Alphabet>/characterNN/XXXX_YY.png); {_redownload(path)}"
        )
    for folder, names in groups.items():
        if len(names) != DRAWINGS_PER_CHARACTER:
            raise DataError(
                f"{path.name}: {folder} holds {len(names)} drawings, expected "
                f"{DRAWINGS_PER_CHARACTER}; {_redownload(path)}"
            )
    return [sorted(groups[folder]) for folder in sorted(groups)]


def _decode_png(zf: zipfile.ZipFile, name: str, path: Path, image_size: int) -> np.ndarray:
    """Decodes one drawing to (image_size, image_size) uint8 with bright strokes."""
    try:
        # zf.read verifies the member's CRC, so a flipped byte surfaces here as BadZipFile.
        data = zf.read(name)
        with Image.open(io.BytesIO(data)) as img:
            gray = img.convert("L")
        if gray.size != (image_size, image_size):
            gray = gray.resize((image_size, image_size), Image.Resampling.LANCZOS)
        pixels = np.asarray(gray, dtype=np.uint8)
    except _CORRUPT_ERRORS as e:
        raise DataError(f"{path.name}: member {name} is corrupt ({type(e).__name__}: {e}); "
                        f"{_redownload(path)}") from e
    # The PNGs draw dark strokes on white; models expect a zero background.
    return 255 - pixels


def _open_archive(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except _CORRUPT_ERRORS as e:
        raise DataError(f"{path} is not a readable zip archive ({type(e).__name__}: {e}); it is "
                        f"probably truncated or not the real file; {_redownload(path)}") from e


def _decode_archives(paths: list[Path], image_size: int, progress: bool) -> np.ndarray:
    """Decodes all drawings, characters in (archive, alphabet, character) order.

    Returns:
      uint8 array (1623, 20, image_size, image_size).
    """
    opened: list[zipfile.ZipFile] = []
    try:
        # Open and index every archive before decoding any, so that a broken second archive
        # fails in milliseconds instead of after decoding the first.
        indexed = []
        for path in paths:
            zf = _open_archive(path)
            opened.append(zf)
            try:
                characters = _index_archive(zf, path)
            except DataError:
                raise
            except _CORRUPT_ERRORS as e:
                raise DataError(f"{path} has an unreadable directory ({type(e).__name__}: {e}); "
                                f"{_redownload(path)}") from e
            indexed.append((zf, path, characters))

        from tqdm.auto import tqdm  # imported lazily: only needed when decoding

        images = np.empty((NUM_CHARACTERS, DRAWINGS_PER_CHARACTER, image_size, image_size),
                          dtype=np.uint8)
        with tqdm(total=NUM_CHARACTERS * DRAWINGS_PER_CHARACTER, desc="Decoding Omniglot",
                  unit="img", disable=not progress) as bar:
            c = 0
            for zf, path, characters in indexed:
                for names in characters:
                    for e, name in enumerate(names):
                        images[c, e] = _decode_png(zf, name, path, image_size)
                    c += 1
                    bar.update(len(names))
        return images
    finally:
        for zf in opened:
            zf.close()
