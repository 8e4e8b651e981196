"""The official Omniglot one-shot benchmark (Lake et al. 2015): ``all_runs.zip``.

20 runs of 20-way one-shot classification. Each run ``runNN/`` holds one training drawing for
each of 20 characters of one alphabet (``training/class01.png`` .. ``class20.png``), 20 test
drawings (``test/item01.png`` .. ``item20.png``) and ``class_labels.txt``, whose lines
``runNN/test/itemXX.png runNN/training/classYY.png`` give each test drawing's class. All
characters come from the 20 evaluation alphabets (``images_evaluation.zip``).

Drawings get exactly the preprocessing of the training images (:mod:`metajax.data.omniglot`):
greyscale, Lanczos resize, inverted so that strokes are bright on a dark background.
"""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from metajax.data.archives import check_member_name
from metajax.data.errors import DataError
from metajax.data.files import CORRUPT_ERRORS, OMNIGLOT_URL, resolve_data_dir
from metajax.data.omniglot import decode_drawing

__all__ = ["NUM_RUNS", "RUN_WAYS", "OmniglotRuns", "load_omniglot_runs"]

NUM_RUNS = 20
RUN_WAYS = 20
ARCHIVE = "all_runs.zip"
_LABEL_LINE = re.compile(r"^(run\d\d)/test/(item\d\d)\.png\s+(run\d\d)/training/(class\d\d)\.png$")


class OmniglotRuns(NamedTuple):
    """The 20 runs as arrays; run ``r`` is the task ``((support[r], support_labels[r]),
    (query[r], query_labels[r]))``.

    Attributes:
      support: uint8 ``(20, 20, S, S, 1)``: ``support[r, k]`` is ``training/class{k+1:02d}.png``.
      support_labels: int32 ``(20, 20)``, ``support_labels[r, k] = k``.
      query: uint8 ``(20, 20, S, S, 1)``: ``query[r, i]`` is ``test/item{i+1:02d}.png``.
      query_labels: int32 ``(20, 20)``: the class index of each test drawing.
    """

    support: np.ndarray
    support_labels: np.ndarray
    query: np.ndarray
    query_labels: np.ndarray


def load_omniglot_runs(data_dir: str | os.PathLike | None = None, *,
                       image_size: int = 28) -> OmniglotRuns:
    """Reads ``all_runs.zip`` in place (nothing is extracted).

    Args:
      data_dir: folder with ``all_runs.zip`` (or a parent with an ``omniglot/`` subfolder);
        ``None`` uses ``$METAJAX_DATA_DIR``.
      image_size: side of the square images, as for training (28 for the standard models).

    Returns:
      An :class:`OmniglotRuns`.

    Raises:
      DataError: the archive is missing, unreadable, or not laid out like the official one.
    """
    path = resolve_data_dir(data_dir, "omniglot-runs") / ARCHIVE
    fix = f"download {ARCHIVE} again from {OMNIGLOT_URL}"
    try:
        zf = zipfile.ZipFile(path)
    except CORRUPT_ERRORS as e:
        raise DataError(f"{path} is not a readable zip archive ({type(e).__name__}: {e}); it is "
                        f"probably truncated; {fix}") from e
    with zf:
        names = {check_member_name(n, path) for n in zf.namelist()}
        # Some copies wrap the runs in an all_runs/ folder.
        prefix = "all_runs/" if "all_runs/run01/class_labels.txt" in names else ""
        shape = (NUM_RUNS, RUN_WAYS, image_size, image_size, 1)
        support, query = np.empty(shape, np.uint8), np.empty(shape, np.uint8)
        query_labels = np.empty((NUM_RUNS, RUN_WAYS), np.int32)
        for r in range(NUM_RUNS):
            run = f"run{r + 1:02d}"
            labels_name = f"{prefix}{run}/class_labels.txt"
            if labels_name not in names:
                raise DataError(f"{path} lacks {labels_name}; it should hold runs run01..run20; "
                                f"{fix}")
            try:
                text = zf.read(labels_name).decode("ascii")
            except (*CORRUPT_ERRORS, UnicodeDecodeError) as e:
                raise DataError(f"{path}: {labels_name} is unreadable ({e}); {fix}") from e
            items = {}
            for line in text.splitlines():
                if not line.strip():
                    continue
                match = _LABEL_LINE.match(line.strip())
                if not match or match[1] != run or match[3] != run:
                    raise DataError(f"{path}: {labels_name} has the line {line!r}, expected "
                                    f"'{run}/test/itemXX.png {run}/training/classYY.png'; {fix}")
                items[int(match[2][4:]) - 1] = int(match[4][5:]) - 1
            if sorted(items) != list(range(RUN_WAYS)) or sorted(items.values()) != list(
                    range(RUN_WAYS)):
                raise DataError(f"{path}: {labels_name} must map item01..item20 one-to-one onto "
                                f"class01..class20; {fix}")
            for k in range(RUN_WAYS):
                support[r, k, ..., 0] = _read(zf, path, names,
                                              f"{prefix}{run}/training/class{k + 1:02d}.png",
                                              image_size, fix)
                query[r, k, ..., 0] = _read(zf, path, names,
                                            f"{prefix}{run}/test/item{k + 1:02d}.png",
                                            image_size, fix)
                query_labels[r, k] = items[k]
    support_labels = np.broadcast_to(np.arange(RUN_WAYS, dtype=np.int32), (NUM_RUNS, RUN_WAYS))
    return OmniglotRuns(support, np.array(support_labels), query, query_labels)


def _read(zf: zipfile.ZipFile, path: Path, names: set[str], member: str, image_size: int,
          fix: str) -> np.ndarray:
    if member not in names:
        raise DataError(f"{path} lacks {member}; {fix}")
    return decode_drawing(zf, member, path, image_size, fix)
