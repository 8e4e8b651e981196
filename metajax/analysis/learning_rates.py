"""MAML++'s learned per-layer per-step inner learning rates (LSLR), as numbers and a figure."""
from __future__ import annotations

import jax
import numpy as np

from metajax.analysis.plots import _pyplot, _save


def learned_rates(trained, step: int | None = None) -> dict:
    """The inner learning rate of every parameter tensor at every inner step.

    Args:
      trained: a ``TrainedRun`` of a MAML++ run trained with ``--lslr true``.
      step: the checkpoint (default: the newest).

    Returns:
      ``{"step", "initial", "rates": {"body/conv1/kernel": [r_1, ..., r_S], ...}}``.

    Raises:
      ValueError: the run has no learned rates.
    """
    step = trained.steps[-1] if step is None else step
    meta = trained.meta_params(trained.select_steps(str(step))[0])
    if not isinstance(meta, dict) or "lslr" not in meta:
        raise ValueError(f"{trained.workdir} has no learned per-layer rates (algo "
                         f"{trained.cfg.algo!r}); they come from `metajax train --algo mamlpp "
                         "--lslr true`")
    rates = {}
    for path, value in jax.tree_util.tree_leaves_with_path(meta["lslr"]):
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        rates[name] = [float(r) for r in np.asarray(value)]
    return {"workdir": str(trained.workdir), "step": step, "initial": trained.cfg.inner_lr,
            "rates": rates}


def plot_learned_rates(result: dict, path) -> None:
    """One line per layer over inner steps; kernels and biases (or BN weights) side by side."""
    plt = _pyplot()
    groups = {"weights": {k: v for k, v in result["rates"].items() if k.endswith("kernel")}}
    groups["biases"] = {k: v for k, v in result["rates"].items() if not k.endswith("kernel")}
    groups = {k: v for k, v in groups.items() if v}
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 3.8), squeeze=False)
    for ax, (title, rates) in zip(axes[0], groups.items()):
        for name, values in rates.items():
            ax.plot(np.arange(1, len(values) + 1), values, marker="o", label=name.rsplit("/", 1)[0])
        ax.axhline(result["initial"], color="gray", ls=":", lw=1, label="initial")
        ax.axhline(0.0, color="black", lw=0.5)
        ax.set_xlabel("inner step")
        ax.set_ylabel("learned inner learning rate")
        ax.set_title(f"{title} (checkpoint {result['step']})")
        ax.set_xticks(np.arange(1, len(next(iter(rates.values()))) + 1))
        ax.legend(fontsize=7)
    _save(plt, fig, path)
