"""Metrics as a long-format CSV (``step,name,value``) that survives kills and resumes, and
optionally the same rows as TensorBoard event files (``workdir/tensorboard/``)."""
from __future__ import annotations

import csv
import io
import time
import weakref
from pathlib import Path

from metajax.training.checkpoint import write_atomically
from metajax.training.workdir import WorkdirError, os_error_message

TENSORBOARD_DIR = "tensorboard"


class MetricsLog:
    """Appends rows to ``workdir/metrics.csv`` (and, with ``tensorboard``, to event files).

    On resume from step ``s`` rows logged after ``s`` by the killed run are dropped first, so the
    file describes exactly one history. The event files get the same guarantee from TensorBoard's
    purge marker (see :class:`TensorBoardEvents`): a reader hides every event after ``s`` that an
    earlier writer left.

    Args:
      workdir: the run directory.
      resume_step: the step the run resumes from (``None``: a new run, the CSV starts empty).
      tensorboard: also write every row to ``workdir/tensorboard/`` (needs tensorboardX, the
        ``tensorboard`` extra).

    Raises:
      MissingExtraError: ``tensorboard`` and tensorboardX is not installed (nothing is changed).
    """

    def __init__(self, workdir, *, resume_step: int | None = None, tensorboard: bool = False):
        self.path = Path(workdir) / "metrics.csv"
        # Imported before the CSV is rewritten, so that a missing package changes nothing.
        tensorboard_api = _tensorboard_api() if tensorboard else None
        if resume_step is None or not self.path.exists():
            rows = []
        else:
            with open(self.path, newline="") as f:
                rows = [r for r in csv.reader(f)][1:]
            rows = [r for r in rows if len(r) == 3 and int(r[0]) <= resume_step]
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["step", "name", "value"])
        writer.writerows(rows)
        write_atomically(self.path, text.getvalue().encode())
        self.events = (TensorBoardEvents(Path(workdir) / TENSORBOARD_DIR,
                                         first_step=(resume_step or 0) + 1, api=tensorboard_api)
                       if tensorboard else None)

    def write(self, step: int, metrics: dict) -> None:
        """Appends ``{name: value}`` at ``step`` (values rounded to 6 significant digits)."""
        rows = [(name, f"{float(value):.6g}") for name, value in metrics.items()]
        try:
            with open(self.path, "a", newline="") as f:
                writer = csv.writer(f)
                for name, text in rows:
                    writer.writerow([step, name, text])
        except OSError as e:
            raise WorkdirError(os_error_message(e, self.path)) from None
        if self.events is not None:
            # The CSV's rounded values, so that both files say the same numbers (6 significant
            # digits survive TensorBoard's float32 exactly).
            self.events.write(step, [(name, float(text)) for name, text in rows])

    def close(self) -> None:
        """Closes the event file (also done when the log is garbage collected or at exit)."""
        if self.events is not None:
            self.events.close()


def _tensorboard_api():
    from metajax._extras import require

    require("tensorboardX", "tensorboard",
            "--tensorboard true writes TensorBoard event files with tensorboardX")
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    from tensorboardX.summary import scalar

    return EventsWriter, Event, SessionLog, scalar


class TensorBoardEvents:
    """Scalars appended to a new TensorBoard event file in ``folder``, through tensorboardX (no
    TensorFlow).

    tensorboardX's ``SummaryWriter`` writes from a background thread, and its ``flush()`` does
    not wait for the queued events; the training loop never closes its log, so a row could be
    lost at a kill or stay unwritten when training returns. Its synchronous record writer
    (``EventsWriter``) is used instead: every :meth:`write` is in the file when it returns, as in
    the CSV.

    Each writer opens a new file (TensorBoard reads a folder's files in name order; the name's
    nanosecond suffix keeps two writers of the same second apart and in order), which starts
    with the marker of ``SummaryWriter(purge_step=first_step)``: a ``SessionLog.START`` event at
    ``first_step``, on which readers drop every earlier-read event of step >= ``first_step``.

    Args:
      folder: where the event file is created.
      first_step: the first step this writer will log (a resumed run's checkpoint step + 1).
      api: tensorboardX's ``(EventsWriter, Event, SessionLog, scalar)``, already imported.

    Raises:
      WorkdirError: the folder or file cannot be written.
    """

    def __init__(self, folder, *, first_step: int, api=None):
        self.folder = Path(folder)
        events_writer, self._event, session_log, self._scalar = api or _tensorboard_api()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._writer = events_writer(str(self.folder / "events"),
                                         filename_suffix=f".{time.time_ns():020d}")
            now = time.time()
            self._writer.write_event(self._event(wall_time=now, step=first_step,
                                                 file_version="brain.Event:2"))
            self._writer.write_event(self._event(
                wall_time=now, step=first_step,
                session_log=session_log(status=session_log.START)))
            self._writer.flush()
        except OSError as e:
            raise WorkdirError(os_error_message(e, self.folder)) from None
        self.path = Path(getattr(self._writer, "_file_name", self.folder))
        # The loop keeps its log for the whole run and never closes it: close the file when the
        # log goes away (or at interpreter exit) instead.
        self._finalizer = weakref.finalize(self, self._writer.close)

    def write(self, step: int, values) -> None:
        """Appends ``[(name, value), ...]`` as scalars at ``step``; on disk when it returns."""
        now = time.time()
        try:
            for name, value in values:
                self._writer.write_event(self._event(wall_time=now, step=step,
                                                     summary=self._scalar(name, value)))
            self._writer.flush()
        except OSError as e:
            raise WorkdirError(os_error_message(e, self.path)) from None

    def close(self) -> None:
        self._finalizer()


def read_metrics(workdir) -> dict[str, list[tuple[int, float]]]:
    """``{name: [(step, value), ...]}`` from a run's ``metrics.csv``."""
    out: dict[str, list[tuple[int, float]]] = {}
    with open(Path(workdir) / "metrics.csv", newline="") as f:
        for row in list(csv.reader(f))[1:]:
            out.setdefault(row[1], []).append((int(row[0]), float(row[2])))
    return out
