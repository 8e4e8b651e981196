"""``WORKDIR/history.json``: what happened to a run besides training (divergences, resumptions
with changed settings), so a later ``--resume`` can allow what an event justifies."""
from __future__ import annotations

import json
import time
from pathlib import Path

from metajax.training.checkpoint import write_atomically

NAME = "history.json"


def read(workdir) -> list[dict]:
    path = Path(workdir) / NAME
    if not path.is_file():
        return []
    try:
        events = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return events if isinstance(events, list) else []


def record(workdir, event: dict) -> None:
    """Appends ``event`` (with the time) atomically."""
    events = read(workdir) + [{**event, "time": time.strftime("%Y-%m-%d %H:%M:%S")}]
    write_atomically(Path(workdir) / NAME, json.dumps(events, indent=2).encode())


def diverged(workdir) -> bool:
    """Whether the run's newest event is a divergence (lower rates may then be resumed with)."""
    events = [e for e in read(workdir) if e.get("event") in ("diverged", "resumed")]
    return bool(events) and events[-1]["event"] == "diverged"
