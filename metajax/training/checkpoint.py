"""Atomic msgpack checkpoints of the train state.

Files are written to a temporary name unique to the process, fsynced, then renamed over
(``os.replace``), so a killed process leaves either the old or the new checkpoint, never half of
one (its temporary file is removed by the next run, ``workdir.remove_debris``). Loading uses
Flax's msgpack restore, which decodes arrays from raw bytes: nothing in a file is ever unpickled
or executed.

Several processes: every process calls :func:`save_checkpoint` (a state sharded over processes is
gathered with a collective); only process 0 writes. A replicated state needs no collective: each
process holds all of it.

Beside the checkpoints, ``checkpoints/config.json`` records the configuration they were written
with, so a resumed run can say which setting of an edited ``config.json`` no longer matches.
"""
from __future__ import annotations

import errno
import os
import re
import warnings
from pathlib import Path

import jax
import numpy as np
from flax import serialization

from metajax.training.workdir import WorkdirError, os_error_message

# Eight digits at least (sorted listings stay readable); more for larger step counts.
_NAME = re.compile(r"^step_(\d{8,})\.msgpack$")
CONFIG_SNAPSHOT = "config.json"


class CheckpointError(RuntimeError):
    """No checkpoint can be resumed from; the message names each file and why."""


def checkpoint_dir(workdir) -> Path:
    return Path(workdir) / "checkpoints"


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.msgpack"


def list_checkpoints(workdir) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoints in ``workdir``, oldest first."""
    directory = checkpoint_dir(workdir)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def to_host(tree):
    """The state as numpy arrays on this host, also when its arrays span several processes."""
    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x) if isinstance(x, jax.Array) else x
    return jax.tree_util.tree_map(one, tree)


def _write_temporary(path: Path, data: bytes) -> Path:
    """``data`` in a fsynced temporary file beside ``path`` (unique to this process)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        # Also on KeyboardInterrupt: a Ctrl-C mid-write must not leave the temporary behind.
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise WorkdirError(os_error_message(e, path)) from None
        raise
    return tmp


def write_atomically(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` or its previous content, whatever happens (kill, full disk).

    Raises:
      WorkdirError: the write failed (full disk, read-only, permissions); the temporary file is
        removed and ``path`` is untouched.
    """
    tmp = _write_temporary(path, data)
    try:
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise WorkdirError(os_error_message(e, path)) from None
        raise
    _fsync_dir(path.parent)


def save_checkpoint(workdir, state, step: int, *, keep: int = 2, config_json: str | None = None,
                    write: bool | None = None, commit: bool = True) -> Path:
    """Writes ``state`` as ``checkpoints/step_<step>.msgpack`` atomically; keeps the newest ``keep``.

    Args:
      workdir: the run directory.
      state: the train state (any pytree).
      step: its step.
      keep: how many checkpoints to keep (older ones are deleted after the write).
      config_json: the run's configuration, recorded beside the checkpoints.
      write: whether this process writes (default: process 0 only). Every process must call this
        function when the state spans processes.
      commit: rename the file into place now. ``False`` leaves it under its temporary name (not
        a checkpoint yet) and returns that path, for :func:`commit_checkpoint` or
        :func:`discard_checkpoint` once the next step is known to be finite or not.
    """
    host_state = to_host(state)
    directory = checkpoint_dir(workdir)
    path = directory / checkpoint_name(step)
    if write is None:
        write = jax.process_index() == 0
    if not write:
        return path
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WorkdirError(os_error_message(e, directory)) from None
    tmp = _write_temporary(path, serialization.to_bytes(host_state))
    if not commit:
        return tmp
    return commit_checkpoint(workdir, tmp, step, keep=keep, config_json=config_json)


def commit_checkpoint(workdir, tmp: Path, step: int, *, keep: int | None = 2,
                      config_json: str | None = None) -> Path:
    """Renames a checkpoint written with ``commit=False`` into place, records the configuration,
    and deletes all but the newest ``keep`` checkpoints (``None``: deletes none; several seeds
    prune with :func:`prune_checkpoints` once every seed's checkpoint is in place)."""
    directory = checkpoint_dir(workdir)
    path = directory / checkpoint_name(step)
    try:
        os.replace(tmp, path)
    except OSError as e:
        raise WorkdirError(os_error_message(e, path)) from None
    _fsync_dir(directory)
    if config_json is not None:
        write_atomically(directory / CONFIG_SNAPSHOT, config_json.encode())
    if keep is not None:
        prune_checkpoints(workdir, keep)
    return path


def prune_checkpoints(workdir, keep: int) -> None:
    """Deletes all but the newest ``keep`` checkpoints of ``workdir``."""
    for _, old in list_checkpoints(workdir)[:-keep]:
        old.unlink(missing_ok=True)


def discard_checkpoint(tmp: Path) -> None:
    """Deletes a checkpoint written with ``commit=False`` (its next step diverged)."""
    Path(tmp).unlink(missing_ok=True)


def write_config_snapshot(workdir, config_json: str) -> None:
    """Records the configuration the checkpoints are resumed with (after allowed changes)."""
    write_atomically(checkpoint_dir(workdir) / CONFIG_SNAPSHOT, config_json.encode())


def config_snapshot(workdir) -> str | None:
    """The configuration the checkpoints were written with, if recorded."""
    path = checkpoint_dir(workdir) / CONFIG_SNAPSHOT
    return path.read_text() if path.is_file() else None


def read_checkpoint(path: Path, template):
    """The state in ``path``, in the structure of ``template``.

    Raises:
      CheckpointError: the file is unreadable or its structure differs from ``template``; the
        message says where (e.g. ``params/head/kernel: (64, 5) in the file, (64, 20) here``).
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        raw = serialization.msgpack_restore(data)
    except Exception as e:  # noqa: BLE001 (any decoding failure means a damaged file)
        raise CheckpointError(f"{path}: not a metajax checkpoint or damaged "
                              f"({type(e).__name__}: {str(e)[:120]})") from None
    differences = structure_differences(raw, serialization.to_state_dict(template))
    if differences:
        shown = "; ".join(differences[:4]) + (f"; and {len(differences) - 4} more"
                                              if len(differences) > 4 else "")
        raise CheckpointError(f"{path}: its structure differs from what this configuration "
                              f"builds: {shown}")
    return serialization.from_state_dict(template, raw)


def structure_differences(saved, expected, path: str = "") -> list[str]:
    """Where two state dicts differ in keys, shapes or dtypes (``[]`` if they match)."""
    if isinstance(expected, dict) or isinstance(saved, dict):
        if not (isinstance(expected, dict) and isinstance(saved, dict)):
            return [f"{path or 'state'}: a {type(saved).__name__} in the file, a "
                    f"{type(expected).__name__} here"]
        out = []
        for key in sorted(set(saved) | set(expected), key=str):
            where = f"{path}/{key}" if path else str(key)
            if key not in expected:
                out.append(f"{where}: in the file only")
            elif key not in saved:
                out.append(f"{where}: missing from the file")
            else:
                out += structure_differences(saved[key], expected[key], where)
        return out
    s_shape, e_shape = np.shape(saved), np.shape(expected)
    if s_shape != e_shape:
        return [f"{path}: shape {s_shape} in the file, {e_shape} here"]
    return []


def restore_checkpoint(workdir, template, *, step: int | None = None):
    """Restores a checkpoint into the structure of ``template``.

    Args:
      workdir: the run directory.
      template: a state of the run's structure (e.g. its initial state).
      step: the checkpoint's step; ``None``: the newest readable one (a damaged newer file is
        skipped with a warning, for reading; ``--resume`` uses :func:`restore_for_resume`).

    Returns:
      ``(state, step)``, or ``(template, None)`` when ``workdir`` has no checkpoint.
    """
    found = list_checkpoints(workdir)
    if step is not None:
        paths = dict(found)
        if step not in paths:
            raise CheckpointError(f"no checkpoint of step {step} in {checkpoint_dir(workdir)}; "
                                  f"it holds steps {', '.join(str(s) for s, _ in found) or 'none'}")
        return read_checkpoint(paths[step], template), step
    for found_step, path in reversed(found):
        try:
            return read_checkpoint(path, template), found_step
        except CheckpointError as e:  # a damaged file: fall back to the previous checkpoint
            warnings.warn(f"skipping unreadable checkpoint {e}")
    return template, None


def restore_for_resume(workdir, template):
    """The newest checkpoint, for ``--resume``; never falls back silently.

    Raises:
      CheckpointError: there is no checkpoint, or the newest cannot be restored; the message
        names every file and why, and which older one would load.
    """
    found = list_checkpoints(workdir)
    if not found:
        raise CheckpointError(f"nothing to resume: {checkpoint_dir(workdir)} holds no checkpoint "
                              "(start the run without --resume)")
    problems = []
    for step, path in reversed(found):
        try:
            state = read_checkpoint(path, template)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if not problems:
            return state, step
        raise CheckpointError("the newest checkpoint cannot be resumed from: "
                              + " | ".join(problems) + f". {path.name} (step {step}) loads: "
                              "move the newer file(s) out of the checkpoints folder to resume "
                              "from it; nothing was changed")
    raise CheckpointError("no checkpoint can be resumed from: " + " | ".join(problems)
                          + ". Nothing was changed")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EROFS):
            raise
    finally:
        os.close(fd)
