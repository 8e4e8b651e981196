"""Learning curves from runs' ``metrics.csv`` (``metajax plot``): one figure per metric, the runs
overlaid, each figure's numbers beside it as JSON.

A run is a directory written by ``metajax train`` (``metrics.csv``, long format
``step,name,value``). A multi-seed run is a directory whose ``seed_<s>/`` subdirectories each hold
such a run; it is drawn as one curve, the mean over its seeds with a shaded +- 1 sd band.

Reads only the CSV files: neither JAX nor a checkpoint is loaded. matplotlib (the ``analysis``
extra) is imported on first use, with the non-interactive Agg backend.
"""
from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["DEFAULT_METRICS", "load_run", "default_metrics", "curve", "plot_learning_curves"]

# Train and validation loss and accuracy; regression runs log mse instead of acc.
DEFAULT_METRICS = ("train/outer/loss", "val/outer/loss", "train/outer/acc", "val/outer/acc")
_REGRESSION_METRICS = ("train/outer/mse", "val/outer/mse")
_SEED_DIR = re.compile(r"seed_(\d+)")
_EXPECTED = ("expected a run directory written by `metajax train --workdir DIR` (config.json + "
             "metrics.csv), or a multi-seed directory whose seed_<s>/ subdirectories (seed_0/, "
             "seed_1/, ...) each hold one")


def read_metrics_csv(path) -> dict[str, dict[int, float]]:
    """``{name: {step: value}}`` from one ``metrics.csv``.

    Args:
      path: the CSV file (header ``step,name,value``).

    Returns:
      Each metric's values by step (a step logged twice keeps its last value).

    Raises:
      ValueError: the file is not a ``step,name,value`` CSV (names the file and the line).
    """
    path = Path(path)
    out: dict[str, dict[int, float]] = {}
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["step", "name", "value"]:
        raise ValueError(f"{path}: not a metajax metrics.csv (its first line must be "
                         f"'step,name,value', got {','.join(rows[0]) if rows else 'nothing'!r})")
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            step, name, value = row
            out.setdefault(name, {})[int(step)] = float(value)
        except ValueError:
            raise ValueError(f"{path}, line {line}: expected step,name,value (an integer step "
                             f"and a number), got {','.join(row)!r}") from None
    return out


def load_run(path) -> dict:
    """Reads a run directory or a multi-seed directory.

    Args:
      path: a directory holding ``metrics.csv``, or ``seed_<s>/`` subdirectories that do.

    Returns:
      ``{"name": the directory's name, "dir": its absolute path, "seeds": [s, ...] or None for a
      single run, "metrics": [{name: {step: value}}, one per seed (one for a single run)]}``.

    Raises:
      FileNotFoundError: no ``metrics.csv`` where one is expected (names the directory).
      ValueError: a ``metrics.csv`` is malformed.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory: {_EXPECTED}")
    name = path.resolve().name
    if (path / "metrics.csv").is_file():
        return {"name": name, "dir": str(path.resolve()), "seeds": None,
                "metrics": [read_metrics_csv(path / "metrics.csv")]}
    seed_dirs = sorted((int(m.group(1)), p) for p in path.iterdir()
                       if p.is_dir() and (m := _SEED_DIR.fullmatch(p.name)))
    if not seed_dirs:
        raise FileNotFoundError(f"{path} holds no metrics.csv and no seed_<s>/ subdirectories: "
                                f"{_EXPECTED}")
    missing = [str(p) for _, p in seed_dirs if not (p / "metrics.csv").is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} holds no metrics.csv: each seed_<s>/ "
                                f"subdirectory of the multi-seed run {path} must be a run "
                                "directory written by `metajax train` (config.json + "
                                "metrics.csv)")
    return {"name": name, "dir": str(path.resolve()), "seeds": [s for s, _ in seed_dirs],
            "metrics": [read_metrics_csv(p / "metrics.csv") for _, p in seed_dirs]}


def default_metrics(runs: Sequence[dict]) -> list[str]:
    """Train and validation loss, and accuracy (or, when no run logs accuracy, mse)."""
    logged = {name for run in runs for metrics in run["metrics"] for name in metrics}
    wanted = list(DEFAULT_METRICS)
    if not any(name.endswith("/acc") for name in logged):
        wanted = wanted[:2] + list(_REGRESSION_METRICS)
    return [name for name in wanted if name in logged]


def curve(run: dict, metric: str) -> dict | None:
    """One run's curve of ``metric``; ``None`` if the run did not log it.

    A single run: ``{"steps", "values"}``. A multi-seed run: at the steps every seed logged,
    ``{"steps", "mean", "sd", "values": {seed: [...]}}``, where ``sd`` is the sample standard
    deviation over seeds (``None`` with one seed); steps that only some seeds reached (a seed
    still training) are left out, so that each mean is over all seeds.
    """
    series = [m.get(metric) for m in run["metrics"]]
    if run["seeds"] is None:
        if not series[0]:
            return None
        steps = sorted(series[0])
        return {"steps": steps, "values": [series[0][s] for s in steps]}
    if not all(series):
        return None
    steps = sorted(set.intersection(*(set(s) for s in series)))
    if not steps:
        return None
    values = np.array([[s[step] for step in steps] for s in series])
    sd = values.std(axis=0, ddof=1).tolist() if len(series) > 1 else None
    return {"steps": steps, "mean": values.mean(axis=0).tolist(), "sd": sd,
            "values": {str(seed): row.tolist() for seed, row in zip(run["seeds"], values)}}


def _labels(runs: Sequence[dict]) -> list[str]:
    """Each run's directory name ("NAME (n seeds)" for a multi-seed run); runs of the same name
    (runs/a/maml, runs/b/maml) are told apart by their parent directory."""
    names = [run["name"] for run in runs]
    labels = []
    for run, name in zip(runs, names):
        if names.count(name) > 1:
            name = "/".join(Path(run["dir"]).parts[-2:])
        if run["seeds"] is not None:
            n = len(run["seeds"])
            name += f" ({n} seed{'s' if n != 1 else ''})"
        labels.append(name)
    return labels


def _pyplot():
    from metajax._extras import require

    matplotlib = require("matplotlib", "analysis", "metajax plot draws with matplotlib")
    matplotlib.use("Agg")  # files only: no display needed, and none is opened
    import matplotlib.pyplot as plt
    return plt


def _finite(values):
    """JSON has no NaN/inf: they become null."""
    if values is None:
        return None
    return [v if math.isfinite(v) else None for v in values]


def _file_stem(metric: str) -> str:
    return re.sub(r"[^\w.-]+", "_", metric).strip("_") or "metric"


def plot_learning_curves(runs: Sequence, out_dir, *, metrics: Sequence[str] | None = None
                         ) -> dict:
    """Draws one figure per metric with every run's curve, into ``out_dir``.

    For each metric ``train/outer/loss`` it writes ``train_outer_loss.png`` and
    ``train_outer_loss.json`` (the figure's numbers: per run its label, directory, seeds and
    :func:`curve`; runs that did not log the metric are listed under ``missing``).

    Args:
      runs: run directories or multi-seed directories (see :func:`load_run`).
      out_dir: folder for the files (created).
      metrics: metric names as in ``metrics.csv``; default :func:`default_metrics`.

    Returns:
      ``{"out": out_dir, "runs": [label, ...], "figures": [{"metric", "png", "json",
      "legend": the figure's legend texts}, ...]}``.

    Raises:
      FileNotFoundError: a run directory without ``metrics.csv`` (see :func:`load_run`).
      ValueError: no runs, a malformed ``metrics.csv``, or a metric no run logged.
      MissingExtraError: matplotlib is not installed.
    """
    if not runs:
        raise ValueError("no runs to plot: give at least one run directory")
    loaded = [load_run(r) for r in runs]
    labels = _labels(loaded)
    logged = sorted({name for run in loaded for m in run["metrics"] for name in m})
    if metrics is None:
        metrics = default_metrics(loaded)
        if not metrics:
            raise ValueError(f"none of the runs logged a train or validation loss, accuracy or "
                             f"mse; their metrics: {', '.join(logged) or 'none (empty CSV)'}. "
                             "Choose some with --metrics")
    unknown = [m for m in metrics if m not in logged]
    if unknown:
        raise ValueError(f"no run logged {', '.join(unknown)}; the runs' metrics: "
                         f"{', '.join(logged) or 'none (empty CSV)'}")
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for metric in metrics:
        stem = _file_stem(metric)
        data = {"metric": metric, "xlabel": "step", "ylabel": metric, "runs": [], "missing": []}
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        try:
            for run, label in zip(loaded, labels):
                c = curve(run, metric)
                if c is None:
                    data["missing"].append(label)
                    continue
                data["runs"].append({"label": label, "dir": run["dir"], "seeds": run["seeds"],
                                     **c})
                marker = "o" if len(c["steps"]) <= 30 else None  # few points: show where
                if run["seeds"] is None:
                    ax.plot(c["steps"], c["values"], marker=marker, markersize=3, label=label)
                    continue
                mean = np.array(c["mean"])
                (line,) = ax.plot(c["steps"], mean, marker=marker, markersize=3, label=label)
                if c["sd"] is not None:
                    sd = np.array(c["sd"])
                    ax.fill_between(c["steps"], mean - sd, mean + sd, color=line.get_color(),
                                    alpha=0.2, linewidth=0)
            ax.set_xlabel("step")
            ax.set_ylabel(metric)
            ax.set_title(metric)
            ax.grid(alpha=0.3)
            legend = ax.legend(fontsize=8)
            legend_texts = [t.get_text() for t in legend.get_texts()]
            fig.tight_layout()
            png = out / f"{stem}.png"
            fig.savefig(png, dpi=120)
        finally:
            plt.close(fig)
        for entry in data["runs"]:
            for key in ("values", "mean", "sd"):
                if isinstance(entry.get(key), list):
                    entry[key] = _finite(entry[key])
            if isinstance(entry["values"], dict):
                entry["values"] = {k: _finite(v) for k, v in entry["values"].items()}
        path = out / f"{stem}.json"
        path.write_text(json.dumps(data, indent=2))
        figures.append({"metric": metric, "png": str(png), "json": str(path),
                        "legend": legend_texts})
    return {"out": str(out), "runs": labels, "figures": figures}
