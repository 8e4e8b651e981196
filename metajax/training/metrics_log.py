"""Metrics as a long-format CSV (``step,name,value``) that survives kills and resumes."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from metajax.training.checkpoint import write_atomically
from metajax.training.workdir import WorkdirError, os_error_message


class MetricsLog:
    """Appends rows to ``workdir/metrics.csv``.

    On resume from step ``s`` rows logged after ``s`` by the killed run are dropped first, so the
    file describes exactly one history.
    """

    def __init__(self, workdir, *, resume_step: int | None = None):
        self.path = Path(workdir) / "metrics.csv"
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

    def write(self, step: int, metrics: dict) -> None:
        try:
            with open(self.path, "a", newline="") as f:
                writer = csv.writer(f)
                for name, value in metrics.items():
                    writer.writerow([step, name, f"{float(value):.6g}"])
        except OSError as e:
            raise WorkdirError(os_error_message(e, self.path)) from None


def read_metrics(workdir) -> dict[str, list[tuple[int, float]]]:
    """``{name: [(step, value), ...]}`` from a run's ``metrics.csv``."""
    out: dict[str, list[tuple[int, float]]] = {}
    with open(Path(workdir) / "metrics.csv", newline="") as f:
        for row in list(csv.reader(f))[1:]:
            out.setdefault(row[1], []).append((int(row[0]), float(row[2])))
    return out
