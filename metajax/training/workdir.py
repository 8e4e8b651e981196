"""A run directory owned by one run at a time: a lock, what may be in it, and its faults.

- :class:`WorkdirLock`: an advisory ``fcntl`` lock on ``WORKDIR/.lock``, which also records the
  owner's pid, host and start time. The kernel releases the lock when the owner dies (even by
  SIGKILL), so a lock file left by a dead run is taken over, with a message naming it.
- :func:`check_contents`: a workdir holding files that metajax did not write is refused, so a
  user's own ``config.json`` or ``metrics.csv`` is never overwritten.
- :func:`remove_debris`: temporary files of killed writes are deleted before a run starts.
- :class:`WorkdirError` with :func:`os_error_message`: a full disk, a read-only file system or a
  permission problem becomes a one-line message naming the path and the fix.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import time
from pathlib import Path

LOCK_NAME = ".lock"
# What metajax writes into a run directory (and what its studies add beside it).
OWN_NAMES = {"config.json", "metrics.csv", "checkpoints", LOCK_NAME, "tensorboard", "plots",
             "learning_rates.json", "learning_rates.png", "history.json"}
_DEBRIS_MARKERS = (".tmp-", ".tmp")
_SEED_DIR = re.compile(r"^seed_\d+$")  # one seed's run directory in a several-seed run


class WorkdirError(RuntimeError):
    """The run directory cannot be used (locked, foreign files, full disk, ...); says the fix."""


class WorkdirLock:
    """Holds ``WORKDIR/.lock`` for the life of a run (a context manager).

    Raises:
      WorkdirError: another live process holds the lock (its pid, host and start time are named).
    """

    def __init__(self, workdir):
        self.path = Path(workdir) / LOCK_NAME
        self._fd = None
        self.took_over: str | None = None  # the previous owner's record, if a dead run left one

    def __enter__(self) -> "WorkdirLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise WorkdirError(os_error_message(e, self.path)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read(fd)
            os.close(fd)
            owner = owner or "owner unknown"
            raise WorkdirError(f"{self.path.parent} is in use by another run ({owner}); wait "
                               "for it to finish, stop it, or choose another --workdir") from None
        previous = _read(fd)
        if previous:
            self.took_over = previous
        record = (f"pid {os.getpid()} on {socket.gethostname()} since "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, record.encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)  # a clean exit leaves no owner to take over from
            except OSError:
                pass
            os.close(self._fd)  # releases the lock
            self._fd = None


def _read(fd) -> str:
    try:
        return os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def seed_dir(workdir, seed: int) -> Path:
    """Where seed ``seed`` of a several-seed run (``--seeds``) keeps its own run directory."""
    return Path(workdir) / f"seed_{seed}"


def foreign_files(workdir) -> list[str]:
    """Names in ``workdir`` that metajax did not write."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        return []
    return sorted(p.name for p in workdir.iterdir()
                  if p.name not in OWN_NAMES and not _is_debris(p.name)
                  and not (_SEED_DIR.match(p.name) and p.is_dir()))


def check_contents(workdir) -> None:
    """Refuses a workdir that holds files metajax did not write (they would be overwritten or
    mixed with the run's)."""
    foreign = foreign_files(workdir)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        raise WorkdirError(f"{workdir} holds files metajax did not write ({shown}); a run "
                           "directory must be new or empty, or a metajax run (--resume): choose "
                           "another --workdir")


def _is_debris(name: str) -> bool:
    return any(marker in name for marker in _DEBRIS_MARKERS)


def remove_debris(workdir) -> list[Path]:
    """Deletes temporary files left by killed writes (``*.tmp-PID``); returns what it deleted."""
    removed = []
    for folder in (Path(workdir), Path(workdir) / "checkpoints"):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.is_file() and _is_debris(path.name):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def remove_own_temporaries(workdir) -> None:
    """Deletes the temporary files of this process's unfinished writes (``*.tmp-<pid>``), for a
    run stopped between a write and its rename (Ctrl-C); other processes' files are left alone."""
    suffix = f".tmp-{os.getpid()}"
    for folder in (Path(workdir), Path(workdir) / "checkpoints"):
        if folder.is_dir():
            for path in folder.iterdir():
                if path.name.endswith(suffix):
                    path.unlink(missing_ok=True)


def os_error_message(error: OSError, path) -> str:
    """One line: what failed on which path, and the fix."""
    fixes = {
        errno.ENOSPC: "the disk is full: free space (or choose a --workdir on another disk) and "
                      "run again with --resume",
        errno.EDQUOT: "the disk quota is exhausted: free space and run again with --resume",
        errno.EFBIG: "the file size limit was reached: raise it (ulimit -f) or free space, and "
                     "run again with --resume",
        errno.EROFS: "the file system is read-only: choose a writable --workdir (or --out)",
        errno.EACCES: "permission denied: choose a folder you can write (or fix its permissions)",
        errno.EPERM: "operation not permitted: choose a folder you can write",
    }
    fix = fixes.get(error.errno, error.strerror or str(error))
    verb = "read" if error.errno == errno.ENOENT else "write"
    return f"cannot {verb} {path}: {fix}"
