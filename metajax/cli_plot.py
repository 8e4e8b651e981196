"""``metajax plot``: learning curves of runs from their ``metrics.csv``, registered by
:mod:`metajax.cli`.

    metajax plot RUN [RUN ...] --out DIR [--metrics train/outer/loss,val/outer/acc]

Imports nothing heavy: the plotting library (and matplotlib) load when the command runs, so
``metajax --help`` stays fast.
"""
from __future__ import annotations

import argparse

__all__ = ["add_plot_command", "run_plot_command"]


def add_plot_command(sub: argparse._SubParsersAction) -> None:
    """Adds ``metajax plot`` to the command's subparsers.

    Args:
      sub: the ``metajax`` command's subparsers.
    """
    plot = sub.add_parser(
        "plot", help="learning curves of runs from their metrics.csv (PNG + JSON)",
        description="One figure per metric with every RUN's curve against the step: train and "
                    "validation loss and accuracy (mse for regression) unless --metrics says "
                    "otherwise. A RUN is a run directory (metrics.csv), or a multi-seed "
                    "directory whose seed_<s>/ subdirectories are runs: drawn as the mean over "
                    "seeds with a +- 1 sd band. Writes METRIC.png and METRIC.json (the numbers "
                    "behind the figure) per metric into --out and prints a JSON summary.")
    plot.add_argument("runs", nargs="+", metavar="RUN",
                      help="run directory, or multi-seed directory of seed_<s>/ runs")
    plot.add_argument("--out", required=True, metavar="DIR",
                      help="folder for the PNG and JSON files (created)")
    plot.add_argument("--metrics", default=None, metavar="NAMES",
                      help="comma-separated metric names as in metrics.csv, e.g. "
                           "train/outer/loss,val/outer/acc (default: train and val "
                           "outer/loss and outer/acc, or outer/mse for regression)")


def run_plot_command(args: argparse.Namespace) -> dict:
    """Runs ``metajax plot``; returns its JSON-ready summary.

    Args:
      args: the parsed ``plot`` flags (``runs``, ``out``, ``metrics``).

    Returns:
      :func:`metajax.analysis.curves.plot_learning_curves`'s result: the output folder, the run
      labels and, per figure, the metric, PNG and JSON paths and the legend texts.

    Raises:
      FileNotFoundError: a RUN without metrics.csv.
      ValueError: a malformed metrics.csv, an unknown metric, or matplotlib missing.
    """
    from metajax.analysis.curves import plot_learning_curves

    metrics = None
    if args.metrics is not None:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        if not metrics:
            raise ValueError("--metrics needs at least one metric name, e.g. "
                             "--metrics train/outer/loss,val/outer/loss")
    return plot_learning_curves(args.runs, args.out, metrics=metrics)
