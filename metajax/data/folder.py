"""Any image data: a folder of class folders per split, read into ragged uint8 splits.

    ROOT/train/<class>/<image>.png|.jpg|.jpeg
    ROOT/val/<class>/...
    ROOT/test/<class>/...

Every split is required, and classes may have any number of images (at least one).
Classes are sorted by folder name and images by file name (Python's string order), so the
arrays are the same on every machine. Names starting with ``.`` (``.DS_Store``,
``.ipynb_checkpoints``, ...) are ignored at every level; any other file that is not a readable ``.png``, ``.jpg`` or
``.jpeg`` image (extension case-insensitive) is an error, so that nothing is silently dropped.

Images are read in two passes: the headers first (mode and size, no pixel decoding), which finds
a wrong size or an unreadable file quickly and fixes the output shape, then the pixels, straight
into one preallocated array per split.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from metajax.data.errors import DataError
from metajax.data.files import CORRUPT_ERRORS
from metajax.data.ragged import RaggedImages

__all__ = ["FolderIndex", "IMAGE_EXTENSIONS", "SPLITS", "index_folder", "load_folder"]

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# PIL modes with one channel of intensity; every other mode is read as RGB.
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "F")
_LAYOUT = ("ROOT/train/<class>/<image>, ROOT/val/<class>/<image> and "
           "ROOT/test/<class>/<image> (.png, .jpg or .jpeg)")


class FolderIndex(NamedTuple):
    """The files of a folder dataset, listed and checked, not decoded.

    ``classes[split]`` is a tuple of ``(class name, image paths)``, both sorted by name.
    """

    root: Path
    classes: dict[str, tuple[tuple[str, tuple[Path, ...]], ...]]

    def files(self, split: str) -> list[Path]:
        """The image files of a split in the order of its rows (class by class)."""
        return [p for _, paths in self.classes[split] for p in paths]


def _visible(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if not e.name.startswith(".")]
    except OSError as e:
        raise DataError(f"cannot list {folder} ({type(e).__name__}: {e}); check that the folder "
                        f"exists and is readable") from e
    return sorted(entries, key=lambda e: e.name)


def index_folder(root: str | os.PathLike) -> FolderIndex:
    """Lists ``ROOT/{train,val,test}/<class>/<image>`` without decoding any image.

    Args:
      root: the folder holding ``train/``, ``val/`` and ``test/``.

    Returns:
      A :class:`FolderIndex`.

    Raises:
      DataError: the root or a split folder is missing; a split has no class folders; a class
        folder has no images; a split holds a file beside its class folders; a class folder holds
        a subfolder or a file that is not ``.png``/``.jpg``/``.jpeg``. The message names the
        path and the fix.
    """
    if root is None or str(root) == "":
        raise DataError(f"no folder given for the folder dataset; pass --data-dir ROOT with "
                        f"{_LAYOUT}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"the data folder {root} does not exist or is not a folder; pass "
                        f"--data-dir ROOT, a folder with {_LAYOUT}")
    classes = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            others = [s for s in SPLITS if (root / s).is_dir()]
            has = f" (it has {', '.join(s + '/' for s in others)})" if others else ""
            raise DataError(
                f"{root} lacks the split folder {split}/{has}; the folder dataset needs "
                f"train/, val/ and test/, each with one subfolder per class; make {split}/ by "
                f"moving whole class folders into it (e.g. some classes out of train/), since "
                f"a class must belong to one split only")
        split_classes = []
        for entry in _visible(folder):
            path = Path(entry.path)
            if not entry.is_dir():
                raise DataError(f"{path} is a file, but {folder} must hold only class folders "
                                f"(one per class, with the images inside); move it into a class "
                                f"folder or delete it")
            images = []
            for item in _visible(path):
                item_path = Path(item.path)
                if item.is_dir():
                    raise DataError(f"{item_path} is a folder inside the class folder {path}; a "
                                    f"class folder must hold image files only: move its images "
                                    f"up into {path.name}/ or make it a class folder of its own")
                if item_path.suffix.lower() not in IMAGE_EXTENSIONS:
                    raise DataError(f"{item_path} is not a .png, .jpg or .jpeg image; a class "
                                    f"folder must hold images only: delete or move it, or "
                                    f"convert it to PNG or JPEG")
                images.append(item_path)
            if not images:
                raise DataError(f"the class folder {path} holds no images; add .png/.jpg/.jpeg "
                                f"images to it or delete it")
            split_classes.append((entry.name, tuple(images)))
        if not split_classes:
            raise DataError(f"the split folder {folder} holds no class folders; put one folder "
                            f"per class in it, each with that class's images")
        classes[split] = tuple(split_classes)
    return FolderIndex(root, classes)


def _image_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if np.ndim(image_size) == 0 else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                 and s > 0 for s in size):
        raise DataError(f"image_size must be a positive int N or a pair (H, W), got "
                        f"{image_size!r}; pass e.g. --image-size 84")
    return int(size[0]), int(size[1])


def _not_an_image(path: Path, e: BaseException) -> DataError:
    return DataError(f"{path} is not a readable image ({type(e).__name__}: {e}); replace it "
                     f"with a valid PNG or JPEG, or delete it")


def _header(path: Path) -> tuple[str, int, int]:
    """``(mode, height, width)`` from the file's header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return img.mode, img.size[1], img.size[0]
    except CORRUPT_ERRORS as e:
        raise _not_an_image(path, e) from e


def _open(path: Path) -> Image.Image:
    # Read the bytes first so that the file is closed before PIL decodes lazily.
    try:
        return Image.open(io.BytesIO(path.read_bytes()))
    except CORRUPT_ERRORS as e:
        raise _not_an_image(path, e) from e


def _gray(img: Image.Image) -> np.ndarray:
    """A one-channel image as uint8 ``(H, W)``: 16-bit scaled to 8, 32-bit int/float clipped."""
    if img.mode in ("1", "L", "LA"):
        return np.asarray(img.convert("L"), np.uint8)
    values = np.asarray(img)
    if img.mode.startswith("I;16"):
        return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _decode(path: Path, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    img = _open(path)
    try:
        if img.mode in _GRAY_MODES:
            pixels = _gray(img)
            if channels == 3:
                pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        else:
            pixels = np.asarray(img.convert("RGB"), np.uint8)
    except CORRUPT_ERRORS as e:
        raise DataError(f"{path} is corrupt or truncated ({type(e).__name__}: {e}); replace it "
                        f"with a valid PNG or JPEG, or delete it") from e
    if size is not None and pixels.shape[:2] != size:
        mode = "L" if pixels.ndim == 2 else "RGB"
        resized = Image.fromarray(pixels, mode).resize((size[1], size[0]),
                                                       Image.Resampling.LANCZOS)
        pixels = np.asarray(resized, np.uint8)
    return pixels.reshape(*pixels.shape[:2], channels)


def load_folder(root: str | os.PathLike, *, image_size=None,
                progress: bool = False) -> dict[str, RaggedImages]:
    """Reads ``ROOT/{train,val,test}/<class>/<image>`` into one ragged uint8 split per split.

    Args:
      root: the folder holding ``train/``, ``val/`` and ``test/`` (see :func:`index_folder`).
      image_size: ``None`` to keep the images' size, which must then be the same for all images
        of all splits; or ``N`` (``N x N``) or ``(H, W)``: every image of another size is
        resized to it with PIL's Lanczos filter (the filter :mod:`metajax.data.miniimagenet`
        uses), after conversion to its final mode. Aspect ratios are not kept: crop first if
        that matters.
      progress: show a progress bar while decoding.

    Returns:
      ``{"train": RaggedImages, "val": ..., "test": ...}``: uint8 images ``(N, H, W, C)`` on the
      host (numpy), class by class, with int32 ``offsets``/``counts`` and the class folder
      names. ``C`` is 1 if every image of every split is grayscale (PIL modes 1, L, LA, I;16,
      I, F; alpha dropped, 16-bit scaled to 8-bit, 32-bit clipped to 0..255), else 3: then
      every image is converted to RGB (grayscale replicated, alpha dropped, palettes and CMYK
      converted by PIL).

    Raises:
      DataError: see :func:`index_folder`; also an unreadable or corrupt image, or (without
        ``image_size``) two images of different sizes: the message names both files and says to
        pass ``--image-size N``.
    """
    from tqdm.auto import tqdm  # imported lazily, as by the other loaders

    size = _image_size(image_size)
    index = index_folder(root)
    files = {split: index.files(split) for split in SPLITS}

    # Pass 1: headers only (mode and size), for the number of channels and the output shape.
    channels = 1
    first: tuple[Path, tuple[int, int]] | None = None
    for split in SPLITS:
        for path in files[split]:
            mode, height, width = _header(path)
            if mode not in _GRAY_MODES:
                channels = 3
            if size is None:
                if first is None:
                    first = (path, (height, width))
                elif (height, width) != first[1]:
                    (h0, w0) = first[1]
                    raise DataError(
                        f"the images differ in size: {first[0]} is {h0}x{w0} (HxW) but {path} "
                        f"is {height}x{width}; every image must have the same size, so pass "
                        f"--image-size N to resize all of them to NxN (or image_size=(H, W))")
    size_hw = first[1] if size is None else size

    # Pass 2: decode into one preallocated array per split.
    total = sum(len(f) for f in files.values())
    splits = {}
    with tqdm(total=total, desc="Decoding images", unit="img", disable=not progress) as bar:
        for split in SPLITS:
            out = np.empty((len(files[split]), *size_hw, channels), np.uint8)
            for i, path in enumerate(files[split]):
                out[i] = _decode(path, channels, size)
                bar.update(1)
            counts = np.array([len(paths) for _, paths in index.classes[split]], np.int32)
            offsets = np.concatenate([[0], np.cumsum(counts[:-1], dtype=np.int64)])
            names = tuple(name for name, _ in index.classes[split])
            splits[split] = RaggedImages(out, offsets.astype(np.int32), counts, names)
    return splits
