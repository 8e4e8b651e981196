"""Atomic msgpack checkpoints of the train state.

Files are written to a temporary name, fsynced, then renamed over (``os.replace``), so a killed
process leaves either the old or the new checkpoint, never half of one. Loading uses Flax's
msgpack restore, which decodes arrays from raw bytes: nothing in a file is ever unpickled or
executed.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from flax import serialization

_NAME = re.compile(r"^step_(\d{8})\.msgpack$")


def checkpoint_dir(workdir) -> Path:
    return Path(workdir) / "checkpoints"


def list_checkpoints(workdir) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoints in ``workdir``, oldest first."""
    directory = checkpoint_dir(workdir)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(workdir, state, step: int, *, keep: int = 2) -> Path:
    """Writes ``state`` as ``checkpoints/step_<step>.msgpack`` atomically; keeps the newest ``keep``."""
    directory = checkpoint_dir(workdir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:08d}.msgpack"
    tmp = directory / f".{path.name}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(serialization.to_bytes(state))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(directory)
    for _, old in list_checkpoints(workdir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def restore_checkpoint(workdir, template):
    """Restores the newest readable checkpoint into the structure of ``template``.

    Returns:
      ``(state, step)``, or ``(template, None)`` when ``workdir`` has no checkpoint.
    """
    for step, path in reversed(list_checkpoints(workdir)):
        try:
            return serialization.from_bytes(template, path.read_bytes()), step
        except Exception as e:  # a damaged file: fall back to the previous checkpoint
            warnings.warn(f"skipping unreadable checkpoint {path}: {e}")
    return template, None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
