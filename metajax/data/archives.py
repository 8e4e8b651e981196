"""Safe handling of zip and tar archives from outside: no path escapes (zip-slip), no links.

metajax reads its archives in place (members are read into memory, nothing is written), so a
hostile member name cannot write anywhere; still, a name such as ``../../x`` or ``/etc/x`` is
never part of a genuine dataset archive, so :func:`check_member_name` rejects it wherever a loader
lists members, and :func:`safe_extract` refuses the whole archive before writing anything.
"""
from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

from metajax.data.errors import DataError

__all__ = ["check_member_name", "safe_extract"]


def check_member_name(name: str, archive: str | os.PathLike) -> str:
    """Checks that an archive member's name stays inside the folder it would be extracted to.

    Args:
      name: the member name as stored in the archive.
      archive: the archive's path, for the error message.

    Returns:
      The normalised relative POSIX path of the member (``a/./b`` -> ``a/b``).

    Raises:
      DataError: the name is empty, absolute (``/x``, ``C:\\x``, ``\\\\server\\x``), contains a NUL
        byte, or has a ``..`` component (also behind backslashes, which Windows tools treat as
        separators).
    """
    unified = name.replace("\\", "/")
    normal = posixpath.normpath(unified) if unified else ""
    unsafe = (
        not unified
        or "\0" in unified
        or unified.startswith("/")
        or (len(unified) > 1 and unified[1] == ":")  # a Windows drive letter
        or ".." in unified.split("/")
        or normal == ".."
        or normal.startswith("../")
    )
    if unsafe:
        raise DataError(
            f"{archive} holds a member named {name!r} that would be written outside the folder it "
            "is extracted to (a path-traversal or 'zip-slip' archive); this is not a genuine "
            "dataset archive, so delete it and download the dataset again from its official source"
        )
    return normal


def safe_extract(archive: str | os.PathLike, target: str | os.PathLike) -> list[Path]:
    """Extracts a zip or tar archive into ``target``, refusing anything that would escape it.

    Every member is checked before anything is written: names with ``..`` or absolute paths,
    symbolic and hard links, and device files or FIFOs make the whole archive fail.

    Args:
      archive: a ``.zip`` or a (possibly compressed) tar file.
      target: the folder to extract into; created if missing.

    Returns:
      The extracted regular files, in archive order.

    Raises:
      DataError: the archive is unreadable, or a member is unsafe.
    """
    archive, target = Path(archive), Path(target)
    root = target.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            members = []
            for info in zf.infolist():
                relative = check_member_name(info.filename, archive)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise DataError(f"{archive} holds a symbolic link {info.filename!r}; refusing "
                                    "to extract it (links can point outside the target folder)")
                members.append((_inside(root, relative, archive), info.is_dir(),
                                lambda info=info: zf.open(info)))
            return _write(members)
    try:
        tf = tarfile.open(archive)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{archive} is neither a readable zip nor tar archive "
                        f"({type(e).__name__}: {e}); download it again") from e
    with tf:
        members = []
        for info in tf.getmembers():
            relative = check_member_name(info.name, archive)
            if not (info.isfile() or info.isdir()):
                raise DataError(f"{archive} holds {info.name!r}, which is a link or special file; "
                                "refusing to extract it (only plain files and folders are safe)")
            members.append((_inside(root, relative, archive), info.isdir(),
                            lambda info=info: tf.extractfile(info)))
        return _write(members)


def _write(members) -> list[Path]:
    """Writes checked ``(destination, is_dir, open_source)`` members; returns the files."""
    written = []
    for dest, is_dir, open_source in members:
        if is_dir:
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open_source() as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst)
        written.append(dest)
    return written


def _inside(root: Path, relative: str, archive: Path) -> Path:
    # Resolving catches what name checks alone cannot: a folder inside the target that is
    # already a symbolic link to somewhere else.
    dest = (root / relative).resolve()
    if dest != root and root not in dest.parents:
        raise DataError(f"{archive}: member {relative!r} would be written to {dest}, outside "
                        f"{root}; refusing to extract")
    return dest
