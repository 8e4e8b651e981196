"""Seeds per second: several seeds trained as one program (``--seeds``) against one run per seed.

Every configuration is the real training loop (``metajax train``), each in its own process, in
turns (sequential, map, vmap, sequential, ...), so the ratios are measured side by side:

- ``sequential``: one ``metajax train --seed S`` per seed, one after another; its time per step
  is the sum of the runs' times per step (what the seeds cost trained one by one).
- ``map``: ``--seeds 0,..,n-1 --seed-chunk 1``, one program stepping the seeds in a ``lax.map``
  (each seed bit-identical to its own run).
- ``vmap``: ``--seeds 0,..,n-1 --seed-chunk 0``, one program vmapping the seeds (convolutions
  and matmuls batched over seeds).

The time per step is the loop's own ``time/step_s`` (validation and checkpoints excluded); the
first window (compilation) is dropped and the median of the rest taken, then the median over
rounds. "seed-steps/s" counts one meta-step of one seed; wall time including start-up and
compilation is printed too.

    python benchmarks/seeds.py --workload sinusoid --seeds 3
    python benchmarks/seeds.py --workload omniglot --data-dir ../shared/data/omniglot

Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKLOADS = {
    # name: metajax train flags
    "sinusoid": ["--meta-batch", "16", "--inner-steps", "1"],
    "omniglot": ["--dataset", "omniglot", "--ways", "5", "--shots", "1", "--query", "5",
                 "--meta-batch", "8", "--inner-steps", "1", "--inner-lr", "0.4"],
}
MODES = ("sequential", "map", "vmap")


def _train(flags: list[str], workdir: Path, args) -> float:
    command = [sys.executable, "-m", "metajax.cli", "train", "--workdir", str(workdir),
               *WORKLOADS[args.workload], *flags, "--steps", str(args.steps),
               "--log-every", str(args.log_every), "--eval-every", str(args.steps),
               "--eval-tasks", "8", "--eval-batch", "8", "--checkpoint-every", str(args.steps),
               "--no-progress"]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    tic = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - tic


def _step_seconds(run_dir: Path) -> float:
    rows = [line.split(",") for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    times = [float(v) for _, name, v in rows if name == "time/step_s"]
    return statistics.median(times[1:])


def run_mode(mode: str, args, root: Path) -> tuple[float, float]:
    """(seconds per step of all seeds, wall seconds) of one round of ``mode``."""
    seeds = list(range(args.seeds))
    if mode == "sequential":
        wall, step = 0.0, 0.0
        for s in seeds:
            wall += _train(["--seed", str(s)], root / f"seed{s}", args)
            step += _step_seconds(root / f"seed{s}")
        return step, wall
    chunk = {"map": "1", "vmap": "0"}[mode]
    wall = _train(["--seeds", ",".join(map(str, seeds)), "--seed-chunk", chunk], root / "seeds",
                  args)
    return _step_seconds(root / "seeds" / "seed_0"), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="sinusoid", choices=sorted(WORKLOADS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    modes = args.modes.split(",")
    step_times = {m: [] for m in modes}
    walls = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:
            with tempfile.TemporaryDirectory() as root:
                step, wall = run_mode(mode, args, Path(root))
            step_times[mode].append(step)
            walls[mode].append(wall)
    results = {}
    base = statistics.median(step_times[modes[0]])
    print(f"{args.workload}, {args.seeds} seeds, {args.steps} steps, {args.rounds} rounds")
    print(f"{'mode':<11} {'s/step (all seeds)':>19} {'seed-steps/s':>13} "
          f"{'vs ' + modes[0]:>15} {'wall s':>8}")
    for mode in modes:
        step = statistics.median(step_times[mode])
        wall = statistics.median(walls[mode])
        results[mode] = {"step_s": step, "seed_steps_per_s": args.seeds / step,
                         "speedup": base / step, "wall_s": wall}
        print(f"{mode:<11} {step:>19.4f} {args.seeds / step:>13.1f} {base / step:>14.2f}x "
              f"{wall:>8.1f}")
    print(json.dumps({"workload": args.workload, "seeds": args.seeds, "steps": args.steps,
                      "results": results}))


if __name__ == "__main__":
    main()
