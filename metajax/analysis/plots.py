"""The studies' figures, drawn with matplotlib (the ``analysis`` extra) into PNG files.

Each function takes plain numbers (what the study also writes to JSON) and a path; matplotlib
is imported on first use with the non-interactive Agg backend.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the analysis figures need matplotlib: pip install 'metajax[analysis]'"
                          ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _panels(plt, count: int, width: float = 4.5, height: float = 3.4, columns: int = 3):
    """A grid of ``count`` axes, at most ``columns`` per row; unused cells are hidden."""
    cols = min(count, columns)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    axes = axes.ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def _save(plt, fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def grouped_bars(path, panels: Sequence[dict], *, suptitle: str = "") -> None:
    """Bar charts with error bars, one panel per dict.

    Each panel: ``title``, ``categories`` (x tick labels), ``series`` = {label: (means, errors)}
    with one value per category, optional ``ylabel`` and ``ylim``.
    """
    plt = _pyplot()
    fig, axes = _panels(plt, len(panels))
    for ax, panel in zip(axes, panels):
        categories, series = panel["categories"], panel["series"]
        width = 0.8 / max(len(series), 1)
        x = np.arange(len(categories))
        for i, (label, (means, errors)) in enumerate(series.items()):
            ax.bar(x + (i - (len(series) - 1) / 2) * width, means, width, yerr=errors,
                   capsize=3, label=str(label))
        ax.set_xticks(x, categories)
        ax.set_title(panel.get("title", ""))
        ax.set_ylabel(panel.get("ylabel", ""))
        if panel.get("ylim") is not None:
            ax.set_ylim(*panel["ylim"])
        if len(series) > 1:
            ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if suptitle:
        fig.suptitle(suptitle)
    _save(plt, fig, path)


def error_lines(path, panels: Sequence[dict], *, suptitle: str = "") -> None:
    """Line plots with error bars, one panel per dict.

    Each panel: ``title``, ``x`` (shared x values), ``series`` = {label: (means, errors)},
    optional ``xlabel``, ``ylabel``, ``logx``.
    """
    plt = _pyplot()
    fig, axes = _panels(plt, len(panels))
    for ax, panel in zip(axes, panels):
        for label, (means, errors) in panel["series"].items():
            ax.errorbar(panel["x"], means, yerr=errors, marker="o", capsize=3, label=str(label))
        if panel.get("logx"):
            ax.set_xscale("log")
        ax.set_title(panel.get("title", ""))
        ax.set_xlabel(panel.get("xlabel", ""))
        ax.set_ylabel(panel.get("ylabel", ""))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if suptitle:
        fig.suptitle(suptitle)
    _save(plt, fig, path)


def rdm_and_mds(path, layers: Sequence[dict], *, suptitle: str = "") -> None:
    """Per layer: the dissimilarity matrix between representations, and their 2-D MDS.

    Each dict: ``name``, ``matrix`` (K x K), ``coords`` (K x 2), ``groups`` (K colour labels,
    e.g. the checkpoint), ``paths`` (lists of indices into K drawn as dotted lines, e.g. one
    task's representations after 0, 1, 5, 10 steps), ``labels`` (K short point labels).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(layers), figsize=(3.6 * len(layers), 7.0), squeeze=False)
    for col, layer in enumerate(layers):
        top, bottom = axes[0, col], axes[1, col]
        image = top.imshow(layer["matrix"], cmap="viridis")
        top.set_title(f"{layer['name']}: RSA dissimilarity")
        top.set_xticks([])
        top.set_yticks([])
        fig.colorbar(image, ax=top, fraction=0.046)
        coords = np.asarray(layer["coords"])
        groups = list(layer["groups"])
        palette = plt.get_cmap("tab10")
        for g_index, group in enumerate(dict.fromkeys(groups)):
            members = [i for i, g in enumerate(groups) if g == group]
            bottom.scatter(coords[members, 0], coords[members, 1], color=palette(g_index % 10),
                           label=str(group), s=18)
        for path_indices in layer["paths"]:
            bottom.plot(coords[path_indices, 0], coords[path_indices, 1], ":", color="gray",
                        linewidth=0.8)
        for i, text in enumerate(layer.get("labels", [])):
            bottom.annotate(text, coords[i], fontsize=6)
        bottom.set_title(f"{layer['name']}: MDS")
        bottom.legend(fontsize=7)
    if suptitle:
        fig.suptitle(suptitle)
    _save(plt, fig, path)
