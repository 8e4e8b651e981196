"""Learning curves of meta-RL runs: mean return before and after adaptation per meta-iteration.

    python experiments/meta_rl/plot.py OUT.png RUN_DIR [RUN_DIR ...]

Reads each run's ``metrics.csv`` (``train/return_pre``, ``train/return_post``; the validation
points ``val/return_post`` as markers). Needs matplotlib (``pip install 'metajax[rl]'``).
"""
from __future__ import annotations

import sys
from pathlib import Path

from metajax.training import Config, read_metrics


def main(out: str, *runs: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for run in runs:
        cfg, metrics = Config.load(run), read_metrics(run)
        label = f"{cfg.algo} {cfg.env}"
        for name, style in (("train/return_pre", ":"), ("train/return_post", "-")):
            steps, values = zip(*metrics[name])
            line, = ax.plot(steps, values, style, lw=1, label=f"{label} ({name.split('_')[-1]})")
        if "val/return_post" in metrics:
            steps, values = zip(*metrics["val/return_post"])
            ax.plot(steps, values, "o", color=line.get_color(), ms=4)
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
