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
from metajax.data.errors import DataError
from metajax.data.files import FewShotSplits, file_digest, resolve_data_dir

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
VERIFIABLE = ("omniglot", "miniimagenet", "cifar-fs", "fc100")


def verify_dataset(dataset: str, data_dir: str | os.PathLike | None) -> dict:
    """Checks a dataset's files end to end (every image is decoded, or read from a cache built
    from these very files) and summarises them.

    Args:
      dataset: one of ``VERIFIABLE``.
      data_dir: the dataset's folder (or its parent); ``None`` uses ``$METAJAX_DATA_DIR``.

    Returns:
      A JSON-serialisable dict: ``dataset``, ``folder``, ``splits`` (classes and images per
      split), ``image_shape``, checksum information and ``ok: True``.

    Raises:
      DataError: any check fails; the message names the file and the fix.
    """
    if dataset == "omniglot":
        summary = _verify_omniglot(data_dir)
    elif dataset == "miniimagenet":
        summary = _verify_miniimagenet(data_dir)
    elif dataset in ("cifar-fs", "fc100"):
        summary = _verify_cifar(dataset, data_dir)
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

