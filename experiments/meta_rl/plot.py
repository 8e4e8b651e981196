"""Learning curves of meta-RL runs: mean return before and after adaptation per meta-iteration.

    python experiments/meta_rl/plot.py OUT.png RUN_DIR [RUN_DIR ...]

Reads each run's ``metrics.csv`` (``train/return_pre``, ``train/return_post``; the validation
points ``val/return_post`` as markers). Runs of the same algorithm and environment (seeds) are
drawn as their mean, with the band from the lowest to the highest seed after adaptation. Needs matplotlib (``pip install 'metajax[rl]'``).
"""
from __future__ import annotations

import sys
from pathlib import Path

from metajax.training import Config, read_metrics


def _mean_curve(metrics_of_seeds, name):
    """Iterations every seed reached, the mean over seeds and the min/max band."""
    import numpy as np

    curves = [dict(m[name]) for m in metrics_of_seeds if name in m]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    values = np.array([[c[s] for s in steps] for c in curves])
    if not steps:
        return [], values, values, values
    return steps, values.mean(0), values.min(0), values.max(0)


def main(out: str, *runs: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list] = {}  # runs of the same algorithm and environment: the seeds
    for run in runs:
        cfg = Config.load(run)
        groups.setdefault(f"{cfg.algo} {cfg.env}", []).append(read_metrics(run))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, seeds in groups.items():
        tag = label if len(seeds) == 1 else f"{label}, mean of {len(seeds)} seeds"
        color = None
        for name, style in (("train/return_post", "-"), ("train/return_pre", ":")):
            steps, mean, low, high = _mean_curve(seeds, name)
            if not steps:
                continue
            line, = ax.plot(steps, mean, style, lw=1, color=color,
                            label=f"{tag} ({name.split('_')[-1]})")
            color = line.get_color()
            if len(seeds) > 1 and name.endswith("post"):
                ax.fill_between(steps, low, high, color=color, alpha=0.15, lw=0)
        steps, mean, _, _ = _mean_curve(seeds, "val/return_post")
        if steps:
            ax.plot(steps, mean, "o", color=color, ms=4)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel("mean return per trajectory")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {Path(out).resolve()}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
