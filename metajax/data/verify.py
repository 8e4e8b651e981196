"""``metajax data verify``: check a dataset's files and summarise them as a JSON-ready dict.

Every check that fails raises :class:`DataError` with the fix, so the command exits non-zero:
missing, truncated or corrupt archives and images, split files naming absent images, and
overlapping splits (a class, a file or an identical image in two splits). Checksums are
reported, not required: a copy that differs from the official bytes (e.g. re-zipped) can still
hold the right pixels, which the full decode checks.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from metajax.data import cifar, miniimagenet, omniglot, omniglot_runs
from metajax.data import folder as folder_data
from metajax.data.errors import DataError
from metajax.data.files import DATA_DIR_ENV, FewShotSplits, file_digest, resolve_data_dir

__all__ = ["OMNIGLOT_SHA256", "VERIFIABLE", "verify_dataset"]

# sha256 of the official Omniglot archives, as registered by tensorflow-datasets.
OMNIGLOT_SHA256 = {
    "images_background.zip": "ad41ab679c8b5d90b271ef46be6987cc81211774a695c29dcc5367b2b26ee640",
    "images_evaluation.zip": "1f61a8f3366785b057fc117d9228e78a16e3d976c8953b2a10fcc74cf0609cee",
    "images_background_small1.zip":
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    "images_background_small2.zip":
        "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
}
from metajax.data.names import VERIFIABLE  # noqa: E402 (kept importable without JAX)


def verify_dataset(dataset: str, data_dir: str | os.PathLike | None, *,
                   image_size: int | None = None) -> dict:
    """Checks a dataset's files end to end (every image is decoded, or read from a cache built
    from these very files) and summarises them.

    Args:
      dataset: one of ``VERIFIABLE``; ``folder`` is any images in
        ``ROOT/{train,val,test}/<class>/<image>`` (see :mod:`metajax.data.folder`).
      data_dir: the dataset's folder (or its parent; for ``folder``, ROOT itself); ``None`` uses
        ``$METAJAX_DATA_DIR``.
      image_size: ``folder`` only: resize every image to ``N x N`` (``None``: keep the size,
        which must then be the same for all images).

    Returns:
      A JSON-serialisable dict: ``dataset``, ``folder``, ``splits`` (classes and images per
      split), ``image_shape``, checksum information and ``ok: True``. For ``folder``, each
      split also has ``min_images_per_class`` and ``max_images_per_class``.

    Raises:
      DataError: any check fails; the message names the file and the fix.
    """
    if image_size is not None and dataset != "folder":
        raise DataError(f"--image-size applies to --dataset folder only; {dataset} images have "
                        f"a fixed size, so drop --image-size")
    if dataset == "omniglot":
        summary = _verify_omniglot(data_dir)
    elif dataset == "miniimagenet":
        summary = _verify_miniimagenet(data_dir)
    elif dataset in ("cifar-fs", "fc100"):
        summary = _verify_cifar(dataset, data_dir)
    elif dataset == "folder":
        summary = _verify_folder(data_dir, image_size)
    else:
        raise DataError(f"unknown dataset {dataset!r} for verify; choose one of: "
                        f"{', '.join(VERIFIABLE)}")
    return {**summary, "ok": True}


def split_summary(splits: FewShotSplits) -> dict:
    """``{split: {"classes", "images_per_class", "images"}}`` of loaded splits."""
    return {name: {"classes": int(a.shape[0]), "images_per_class": int(a.shape[1]),
                   "images": int(a.shape[0] * a.shape[1])} for name, a in splits._asdict().items()}


def check_disjoint_images(splits: FewShotSplits) -> None:
    """Raises DataError if an identical image occurs in two splits (a leak between splits)."""
    owner: dict[bytes, str] = {}
    for name, array in splits._asdict().items():
        flat = array.reshape(array.shape[0] * array.shape[1], -1)
        for i, row in enumerate(flat):
            digest = hashlib.sha1(row.tobytes()).digest()
            other = owner.setdefault(digest, name)
            if other != name:
                c, e = divmod(i, array.shape[1])
                raise DataError(f"image {e} of {name} class {c} also occurs in the {other} split; "
                                "the splits overlap, so results on them would be inflated; "
                                "restore the dataset's original files")


def _verify_omniglot(data_dir) -> dict:
    folder = omniglot.resolve_data_dir(data_dir, "omniglot")
    archives, alphabets = {}, {}
    for name in omniglot.ARCHIVES:
        path = folder / name
        zf = omniglot.open_archive(path)
        with zf:
            characters = omniglot.index_archive(zf, path)
        alphabets[name] = {names[0].split("/")[-3] for names in characters}
        archives[name] = {"alphabets": len(alphabets[name]), "characters": len(characters),
                          "drawings": sum(len(n) for n in characters),
                          **_checksum(path, OMNIGLOT_SHA256.get(name))}
    shared = alphabets[omniglot.ARCHIVES[0]] & alphabets[omniglot.ARCHIVES[1]]
    if shared:
        raise DataError(f"the alphabets {', '.join(sorted(shared))} are in both archives; the "
                        f"background and evaluation sets must be disjoint; download them again "
                        f"from {omniglot.DOWNLOAD_URL}")
    upright = omniglot.load_omniglot(folder, rotations=False)
    check_disjoint_images(upright)
    # A class is a character at one of 4 rotations; images are the (unrotated) drawings.
    splits = {name: {"characters": info["classes"],
                     "classes": info["classes"] * omniglot.NUM_ROTATIONS,
                     "images_per_class": info["images_per_class"], "drawings": info["images"]}
              for name, info in split_summary(upright).items()}
    summary = {"dataset": "omniglot", "folder": str(folder), "archives": archives,
               "splits": splits, "image_shape": list(upright.train.shape[2:])}
    # The optional files beside the main archives, checked when present.
    extras = {}
    for name in ("images_background_small1.zip", "images_background_small2.zip"):
        if (folder / name).is_file():
            extras[name] = _checksum(folder / name, OMNIGLOT_SHA256[name])
    if (folder / omniglot_runs.ARCHIVE).is_file():
        runs = omniglot_runs.load_omniglot_runs(folder)
        extras[omniglot_runs.ARCHIVE] = {"runs": int(runs.support.shape[0]),
                                         "ways": int(runs.support.shape[1]),
                                         "sha256": file_digest(folder / omniglot_runs.ARCHIVE)}
    if extras:
        summary["extra_archives"] = extras
    return summary


def _verify_miniimagenet(data_dir) -> dict:
    index = miniimagenet.index_miniimagenet(data_dir)
    splits = miniimagenet.load_miniimagenet(index.folder)
    check_disjoint_images(splits)
    listed = {n for classes in index.classes.values() for _, names in classes for n in names}
    unlisted = sum(1 for n in os.listdir(index.folder / "images") if n not in listed)
    counts = index.counts()
    return {
        "dataset": "miniimagenet", "folder": str(index.folder), "splits": counts,
        "image_shape": list(splits.train.shape[2:]),
        "official_counts": {s: [counts[s]["classes"], counts[s]["images_per_class"]]
                            == list(miniimagenet.OFFICIAL_COUNTS[s]) for s in counts},
        "unlisted_images": unlisted,
        "checksum": "no published checksums for MiniImageNet; every listed image was decoded",
        "csv_sha256": {f"{s}.csv": file_digest(index.folder / f"{s}.csv") for s in counts},
    }


def _verify_cifar(dataset: str, data_dir) -> dict:
    folder = resolve_data_dir(data_dir, "cifar100")
    splits = cifar.load_cifar_fs(folder) if dataset == "cifar-fs" else cifar.load_fc100(folder)
    check_disjoint_images(splits)
    tarball = folder / "cifar-100-python.tar.gz"
    extracted = folder / "cifar-100-python"
    if all((extracted / m).is_file() for m in ("train", "test", "meta")):
        files = {m: extracted / m for m in ("train", "test", "meta")}
    else:
        files = {tarball.name: tarball}
    return {
        "dataset": dataset, "folder": str(folder), "splits": split_summary(splits),
        "image_shape": list(splits.train.shape[2:]),
        "files": {name: _checksum(path, cifar.CIFAR100_FILES_MD5[name], "md5")
                  for name, path in files.items()},
    }


def _verify_folder(data_dir, image_size) -> dict:
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(DATA_DIR_ENV, "")
        if not data_dir:
            raise DataError(f"no data directory given for the folder dataset; pass --data-dir "
                            f"ROOT (the folder holding train/, val/ and test/) or set "
                            f"{DATA_DIR_ENV}=ROOT")
    index = folder_data.index_folder(data_dir)
    # A class folder name in two splits is almost always the same class copied twice.
    seen: dict[str, str] = {}
    for split in folder_data.SPLITS:
        for name, _ in index.classes[split]:
            if name in seen:
                raise DataError(f"the class {name} is in both {seen[name]}/ and {split}/ of "
                                f"{index.root}; the splits must have disjoint classes, so move "
                                f"or rename one of the two folders")
            seen[name] = split
    splits = folder_data.load_folder(index.root, image_size=image_size)
    # An identical (decoded) image in two splits leaks test data into training.
    owner: dict[bytes, tuple[str, Path]] = {}
    for split in folder_data.SPLITS:
        for path, row in zip(index.files(split), splits[split].images):
            digest = hashlib.sha1(row.tobytes()).digest()
            other = owner.setdefault(digest, (split, path))
            if other[0] != split:
                raise DataError(f"{path} ({split}) and {other[1]} ({other[0]}) are the same "
                                f"image; the splits overlap, so results on them would be "
                                f"inflated; delete one of the two files")
    summary = {}
    for split, data in splits.items():
        counts = [int(c) for c in data.counts]
        summary[split] = {"classes": len(counts), "images": int(sum(counts)),
                          "min_images_per_class": min(counts),
                          "max_images_per_class": max(counts)}
    return {"dataset": "folder", "folder": str(index.root.resolve()), "splits": summary,
            "image_shape": list(splits["train"].image_shape),
            "resized_to": None if image_size is None else [image_size, image_size]}


def _checksum(path: Path, official: str | None, algorithm: str = "sha256") -> dict:
    digest = file_digest(path, algorithm)
    if official is None:
        status = "no published checksum"
    elif digest == official:
        status = "matches the official release"
    else:
        status = ("differs from the official release (a re-packed copy?); its contents were "
                  "checked by decoding instead")
    return {algorithm: digest, "checksum": status}

