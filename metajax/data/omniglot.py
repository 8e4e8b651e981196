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

import io
import os
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from metajax.data.archives import check_member_name
from metajax.data.errors import DataError
from metajax.data.files import (
    CORRUPT_ERRORS,
    OMNIGLOT_URL,
    cache_root,
    default_cache_dir,
    fingerprint,
    read_array_cache,
    resolve_data_dir,
    write_array_cache,
)

__all__ = [
    "ARCHIVES",
    "DOWNLOAD_URL",
    "DRAWINGS_PER_CHARACTER",
    "NUM_CHARACTERS",
    "SPLIT_SEED",
    "SPLIT_SIZES",
    "OmniglotSplits",
    "decode_drawing",
    "default_cache_dir",
    "index_archive",
    "load_omniglot",
    "omniglot_split_indices",
    "open_archive",
    "preprocess_drawing",
    "resolve_data_dir",
    "split_characters",
]

DOWNLOAD_URL = OMNIGLOT_URL
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

class OmniglotSplits(NamedTuple):
    """Omniglot split into disjoint class sets.

    Each field is a uint8 array of shape ``(num_classes, 20, image_size, image_size, 1)`` with
    strokes bright (255) on a dark (0) background. With rotations, class ``4 * c + r`` is character
    ``c`` of the split rotated by ``r * 90`` degrees counter-clockwise.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


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

    key = _cache_key(paths, image_size)
    cache_path = cache_root(cache_dir) / f"omniglot-{image_size}px-{key}.npz"
    expected = {"images": (NUM_CHARACTERS, DRAWINGS_PER_CHARACTER, image_size, image_size)}
    cached = read_array_cache(cache_path, expected, CACHE_FORMAT_VERSION, "Omniglot")
    if cached is not None:
        images = cached["images"]
    else:
        images = _decode_archives(paths, image_size, progress)
        write_array_cache(cache_path, {"images": images}, CACHE_FORMAT_VERSION, "Omniglot")

    return split_characters(images, rotations)


def split_characters(images: np.ndarray, rotations: bool = True) -> OmniglotSplits:
    """Splits all 1623 characters' drawings into the train/val/test classes.

    Args:
      images: uint8 ``(1623, 20, S, S)``, characters sorted by (archive, alphabet, character),
        background archive first.
      rotations: as in :func:`load_omniglot`.

    Returns:
      ``OmniglotSplits`` as returned by :func:`load_omniglot`.
    """
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
    return fingerprint(paths, {"version": CACHE_FORMAT_VERSION, "image_size": image_size})


def _redownload(path: Path) -> str:
    return f"re-download {path.name} from {DOWNLOAD_URL} into {path.parent}"


def index_archive(zf: zipfile.ZipFile, path: Path) -> list[list[str]]:
    """Groups the PNG members by character folder and checks the official counts.

    Args:
      zf: the open archive (see :func:`open_archive`).
      path: its path; its name selects the expected counts.

    Returns:
      One sorted list of member names per character, characters sorted by folder path (so by
      alphabet, then character).

    Raises:
      DataError: unsafe member names, members outside ``<alphabet>/<character>/``, or counts
        other than the official archive's.
    """
    try:
        return _index_members(zf, path)
    except DataError:
        raise
    except CORRUPT_ERRORS as e:
        raise DataError(f"{path} has an unreadable directory ({type(e).__name__}: {e}); "
                        f"{_redownload(path)}") from e


def _index_members(zf: zipfile.ZipFile, path: Path) -> list[list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for info in zf.infolist():
        name = info.filename
        check_member_name(name, path)
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


def decode_drawing(zf: zipfile.ZipFile, name: str, path: Path, image_size: int,
                   fix: str | None = None) -> np.ndarray:
    """Decodes one drawing of an Omniglot archive the way all metajax Omniglot images are.

    Args:
      zf: the open archive.
      name: the member (a PNG).
      path: the archive's path, for messages.
      image_size: output side; the 105x105 drawings are resized with Lanczos.
      fix: how to fix a corrupt member, for the message (default: re-download the archive).

    Returns:
      uint8 ``(image_size, image_size)`` with bright (255) strokes on a dark (0) background.

    Raises:
      DataError: the member is corrupt (CRC mismatch) or not an image.
    """
    try:
        # zf.read verifies the member's CRC, so a flipped byte surfaces here as BadZipFile.
        data = zf.read(name)
        with Image.open(io.BytesIO(data)) as img:
            return preprocess_drawing(img, image_size)
    except CORRUPT_ERRORS as e:
        raise DataError(f"{path.name}: member {name} is corrupt ({type(e).__name__}: {e}); "
                        f"{fix or _redownload(path)}") from e


def preprocess_drawing(img: Image.Image, image_size: int) -> np.ndarray:
    """A drawing (dark strokes on white, any mode) -> uint8 ``(S, S)``, bright strokes on 0."""
    gray = img.convert("L")
    if gray.size != (image_size, image_size):
        gray = gray.resize((image_size, image_size), Image.Resampling.LANCZOS)
    # The drawings are dark strokes on white; models expect a zero background.
    return 255 - np.asarray(gray, dtype=np.uint8)


def open_archive(path: Path) -> zipfile.ZipFile:
    """Opens an Omniglot zip, or raises DataError saying it is truncated or not a zip."""
    try:
        return zipfile.ZipFile(path)
    except CORRUPT_ERRORS as e:
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
            zf = open_archive(path)
            opened.append(zf)
            indexed.append((zf, path, index_archive(zf, path)))

        from tqdm.auto import tqdm  # imported lazily: only needed when decoding

        images = np.empty((NUM_CHARACTERS, DRAWINGS_PER_CHARACTER, image_size, image_size),
                          dtype=np.uint8)
        with tqdm(total=NUM_CHARACTERS * DRAWINGS_PER_CHARACTER, desc="Decoding Omniglot",
                  unit="img", disable=not progress) as bar:
            c = 0
            for zf, path, characters in indexed:
                for names in characters:
                    for e, name in enumerate(names):
                        images[c, e] = decode_drawing(zf, name, path, image_size)
                    c += 1
                    bar.update(len(names))
        return images
    finally:
        for zf in opened:
            zf.close()
