"""Tasks per second of the real training loop (``train_and_evaluate``), on 1 and N devices.

Each configuration runs in its own process (forced host devices need their own XLA start),
in turns (1, N, 1, N, ...), so the ratio between them is measured side by side. The time per step
is the loop's own ``time/step_s`` (logged per window of ``--log-every`` steps, validation and
checkpoints excluded); the first window (compilation) is dropped and the median of the rest
taken, then the median over rounds.

    python benchmarks/training_loop.py --devices 1,4 --rounds 2
    python benchmarks/training_loop.py --workload omniglot --data-dir ../shared/data/omniglot

Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORKLOADS = {
    # name: metajax train flags
    "sinusoid": ["--meta-batch", "16", "--inner-steps", "1"],
    "omniglot": ["--dataset", "omniglot", "--ways", "5", "--shots", "1", "--query", "5",
                 "--meta-batch", "16", "--inner-steps", "1", "--inner-lr", "0.4"],
}


def run_once(workload: str, devices: int, steps: int, log_every: int, data_dir: str | None,
             workdir: Path) -> float:
    """Median seconds per training step of one run (compilation window dropped)."""
    flags = os.environ.get("XLA_FLAGS", "")
    env = {**os.environ,
           "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={devices}".strip()}
    args = [sys.executable, "-m", "metajax.cli", "train", "--workdir", str(workdir),
            *WORKLOADS[workload], "--steps", str(steps), "--log-every", str(log_every),
            "--eval-every", str(steps), "--eval-tasks", "16", "--eval-batch", "16",
            "--checkpoint-every", str(steps), "--no-progress"]
    if data_dir:
        args += ["--data-dir", data_dir]
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL)
    rows = [line.split(",") for line in (workdir / "metrics.csv").read_text().splitlines()[1:]]
    times = [float(v) for s, name, v in rows if name == "time/step_s"]
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="sinusoid", choices=sorted(WORKLOADS))
    parser.add_argument("--devices", default="1,4")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    counts = [int(d) for d in args.devices.split(",")]
    seconds = {d: [] for d in counts}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for d in counts:
                seconds[d].append(run_once(args.workload, d, args.steps, args.log_every,
                                           args.data_dir, Path(tmp) / f"r{r}-d{d}"))
    batch = int(WORKLOADS[args.workload][WORKLOADS[args.workload].index("--meta-batch") + 1])
    rows = []
    base = statistics.median(seconds[counts[0]])
    print(f"workload {args.workload}, meta-batch {batch}, {args.steps} steps, "
          f"{args.rounds} rounds in turns")
    print(f"{'devices':>8} {'s/step':>10} {'tasks/s':>10} {'vs ' + str(counts[0]):>8}")
    for d in counts:
        median = statistics.median(seconds[d])
        rows.append({"devices": d, "step_s": median, "tasks_per_s": batch / median,
                     "speedup": base / median, "rounds": seconds[d]})
        print(f"{d:>8} {median:>10.4f} {batch / median:>10.1f} {base / median:>7.2f}x")
    print(json.dumps({"benchmark": "training_loop", "workload": args.workload, "rows": rows}))


if __name__ == "__main__":
    main()
