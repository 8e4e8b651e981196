"""Page faults, system time and step time of a meta-step under each host-allocator setting.

Each (workload, algorithm, framework, setting) runs in a fresh process, because the setting
holds for the whole process and must be made before JAX's backend starts
(``metajax.training.host_memory``). The settings alternate process by process for
``--rounds`` rounds, so that a slow spell of the machine hits both alike; the table shows
per-step medians over the rounds of wall time, user and system CPU time and minor page faults,
measured with ``getrusage`` around ``--steps`` steps after three warm-up steps. With
``--peer learn2learn`` learn2learn's step on the same shapes
(``benchmarks/peer_learn2learn.py``) runs under the same two settings.

    python benchmarks/host_allocator.py --workloads table4-mini-5w5s --algos anil
    /work/peer/bin/python benchmarks/host_allocator.py --peer learn2learn
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(framework: str, workload: str, algo: str, setting: str, steps: int,
            conv_impl: str) -> dict:
    """One process's measurement (run by :func:`main` in a child process)."""
    from metajax.training.host_memory import configure_host_allocator

    applied = configure_host_allocator(setting)  # first: before JAX or torch allocate
    import resource

    from meta_step import WORKLOADS, prepare  # beside this file

    if framework == "metajax":
        import jax

        _, runners = prepare(workload, algo, conv_impl=conv_impl, unroll=True, adapt=False)
        run = lambda: jax.block_until_ready(runners["step"]())  # noqa: E731
    else:
        import peer_learn2learn  # beside this file

        run = peer_learn2learn.bench(*WORKLOADS[workload], algo, repeats=1, return_step=True)
    for _ in range(3):
        run()
    before, tic = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        run()
    wall, after = time.perf_counter() - tic, resource.getrusage(resource.RUSAGE_SELF)
    return {"framework": framework, "workload": workload, "algo": algo, "setting": setting,
            "applied": applied, "wall_ms": 1e3 * wall / steps,
            "user_ms": 1e3 * (after.ru_utime - before.ru_utime) / steps,
            "sys_ms": 1e3 * (after.ru_stime - before.ru_stime) / steps,
            "minor_faults": (after.ru_minflt - before.ru_minflt) / steps}


def _child(args_json: str) -> None:
    print(json.dumps(measure(**json.loads(args_json))), flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="omniglot-20w1s,miniimagenet-5w1s,"
                        "table4-mini-5w1s,table4-mini-5w5s")
    parser.add_argument("--algos", default="maml,fomaml,anil")
    parser.add_argument("--settings", default="system,reuse")
    parser.add_argument("--peer", default=None, choices=("learn2learn",))
    parser.add_argument("--conv-impl", default="hybrid")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child)
    frameworks = ["metajax"] + ([args.peer] if args.peer else [])
    settings = args.settings.split(",")
    print(f"# {' '.join(sys.argv)}\n# per-step medians over {args.rounds} rounds of "
          f"{args.steps} steps, one process per measurement")
    print(f"{'workload':<20}{'algo':<8}{'framework':<13}{'setting':<8}{'wall ms':>9}"
          f"{'user ms':>9}{'sys ms':>8}{'faults':>9}")
    for workload in args.workloads.split(","):
        for algo in args.algos.split(","):
            for framework in frameworks:
                runs = {s: [] for s in settings}
                for _ in range(args.rounds):
                    for setting in settings:
                        spec = dict(framework=framework, workload=workload, algo=algo,
                                    setting=setting, steps=args.steps, conv_impl=args.conv_impl)
                        out = subprocess.run(
                            [sys.executable, os.path.abspath(__file__), "--child",
                             json.dumps(spec)], capture_output=True, text=True, cwd=HERE)
                        if out.returncode != 0:
                            raise RuntimeError(f"{spec} failed:\n{out.stderr[-2000:]}")
                        runs[setting].append(json.loads(out.stdout.strip().splitlines()[-1]))
                for setting, rs in runs.items():
                    row = {k: rs[0][k] for k in ("framework", "workload", "algo", "setting",
                                                  "applied")}
                    for k in ("wall_ms", "user_ms", "sys_ms", "minor_faults"):
                        row[k] = round(statistics.median(r[k] for r in rs), 1)
                    print(f"{workload:<20}{algo:<8}{framework:<13}{setting:<8}"
                          f"{row['wall_ms']:>9.1f}{row['user_ms']:>9.1f}{row['sys_ms']:>8.1f}"
                          f"{row['minor_faults']:>9.0f}", flush=True)
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
