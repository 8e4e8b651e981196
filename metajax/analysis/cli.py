"""``metajax analyze`` and ``metajax compare``: the feature-reuse studies on trained run directories.

    metajax analyze DIR --out OUT [--similarity cca,cka] [--freeze] [--weight-distance] [--rsa]
    metajax compare DIR1 DIR2 --out OUT [--similarity cca,cka]
    metajax plot-lrs DIR [--out OUT] [--checkpoint STEP]

Each study writes ``OUT/<study>.json`` and ``OUT/<study>.png``; analyze and compare write nothing
into DIR, plot-lrs writes there unless given ``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COMMANDS = ("analyze", "compare", "plot-lrs")
METRICS_HELP = "comma-separated: cca, svcca, pwcca, cka, cka_debiased, rbf_cka, rsa"


def add_analysis_commands(sub) -> None:
    """Registers ``analyze`` and ``compare`` on the ``metajax`` subparsers."""
    analyze = sub.add_parser("analyze", help="feature-reuse studies of a trained run (JSON + PNG)")
    analyze.add_argument("workdir", help="run directory written by `metajax train` (read only)")
    analyze.add_argument("--similarity", default=None, metavar="METRICS",
                         help="similarity of each layer before vs after test-time adaptation; "
                              + METRICS_HELP)
    analyze.add_argument("--freeze", action="store_true",
                         help="accuracy with layers 1..j frozen at test time (j = 0..all)")
    analyze.add_argument("--weight-distance", action="store_true",
                         help="per-layer distance between meta-init and adapted weights")
    analyze.add_argument("--rsa", action="store_true",
                         help="RSA to the random init and the previous checkpoint; RDM + MDS of "
                              "fine-tuning trajectories")
    analyze.add_argument("--rsa-inner-steps", default="1,5,10", metavar="STEPS",
                         help="inner-step counts of the --rsa fine-tuning trajectories (with 0)")
    analyze.add_argument("--checkpoints", default=None,
                         help="all, last or comma-separated steps (default: all; freeze: last; "
                              "freeze with several draws Raghu et al.'s Fig 2 right)")
    analyze.add_argument("--checkpoint", type=int, default=None, metavar="STEP",
                         help="one checkpoint for every study (same as --checkpoints STEP)")
    analyze.add_argument("--inner-steps", type=int, default=None,
                         help="test-time steps (default: the run's eval_inner_steps)")
    _add_common(analyze)

    compare = sub.add_parser("compare", help="similarity of two trained runs' representations")
    compare.add_argument("workdirs", nargs=2, metavar="DIR", help="two run directories")
    compare.add_argument("--similarity", default="cca,cka", metavar="METRICS", help=METRICS_HELP)
    compare.add_argument("--checkpoint", default=None, metavar="STEP[,STEP]",
                         help="the step of both runs' checkpoints, or one per run (default: "
                              "each run's newest)")
    _add_common(compare)

    lrs = sub.add_parser("plot-lrs", help="MAML++'s learned per-layer per-step inner rates (PNG)")
    lrs.add_argument("workdir", help="run directory of `metajax train --algo mamlpp --lslr true`")
    lrs.add_argument("--out", default=None,
                     help="folder for learning_rates.json/.png (default: the run directory)")
    lrs.add_argument("--checkpoint", type=int, default=None, help="step (default: the newest)")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for the JSON and PNG files")
    parser.add_argument("--tasks", type=int, default=None,
                        help="test tasks (default: 100; freeze 600; rsa 50)")
    parser.add_argument("--seed", type=int, default=0, help="selects the test tasks")
    parser.add_argument("--query", type=int, default=None,
                        help="query examples per class the representations are measured on "
                             "(default: the run's)")
    parser.add_argument("--epsilon", type=float, default=1e-6,
                        help="regulariser of cca/pwcca (dead channels make them undefined)")
    parser.add_argument("--chunk", type=int, default=20, help="tasks per compiled call")
    parser.add_argument("--data-dir", default=None, help="override the run's data directory")


def run_analysis_command(args) -> None:
    """Runs the studies ``args`` asks for; prints the files written, one per line."""
    from metajax.analysis.representations import make_metrics
    from metajax.analysis.runs import TrainedRun  # JAX and the data load only when a study runs

    out = Path(args.out or args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    if args.command == "plot-lrs":
        from metajax.analysis.learning_rates import learned_rates, plot_learned_rates

        trained = TrainedRun(args.workdir)
        _write(out, "learning_rates", learned_rates(trained, args.checkpoint), plot_learned_rates)
        return
    if args.command == "compare":
        from metajax.analysis.compare import compare_runs, plot_compare

        first, second = (TrainedRun(d, query=args.query, data_dir=args.data_dir)
                         for d in args.workdirs)
        result = compare_runs(first, second, metrics=_metric_names(args.similarity),
                              tasks=args.tasks or 100, seed=args.seed, chunk=args.chunk,
                              epsilon=args.epsilon, steps=_compare_steps(args.checkpoint))
        _write(out, "compare", result, plot_compare)
        return
    if not (args.similarity or args.freeze or args.weight_distance or args.rsa):
        raise ValueError("choose at least one study: --similarity METRICS, --freeze, "
                         "--weight-distance or --rsa")
    trained = TrainedRun(args.workdir, query=args.query, data_dir=args.data_dir)
    # Argument errors first, before any study spends minutes.
    if args.similarity:
        make_metrics(_metric_names(args.similarity))
    if args.checkpoint is not None:
        if args.checkpoints is not None:
            raise ValueError("give --checkpoint STEP or --checkpoints STEPS, not both")
        args.checkpoints = str(args.checkpoint)
    freeze_checkpoints = args.checkpoints or "last"
    args.checkpoints = args.checkpoints or "all"
    trained.select_steps(args.checkpoints)
    if args.freeze:  # checked first: it fails fast for algorithms that adapt a fixed part
        from metajax.analysis.freezing import freeze_study, plot_freeze

        _write(out, "freeze", freeze_study(trained, tasks=args.tasks or 600,
                                           inner_steps=args.inner_steps, seed=args.seed,
                                           data_dir=args.data_dir,
                                           checkpoints=freeze_checkpoints), plot_freeze)
    if args.similarity:
        from metajax.analysis.adaptation_similarity import (plot_similarity_before_after,
                                                            similarity_before_after)

        result = similarity_before_after(
            trained, metrics=_metric_names(args.similarity), checkpoints=args.checkpoints,
            tasks=args.tasks or 100, inner_steps=args.inner_steps, seed=args.seed,
            chunk=args.chunk, epsilon=args.epsilon)
        _write(out, "similarity", result, plot_similarity_before_after)
    if args.weight_distance:
        from metajax.analysis.weight_distance import plot_weight_distance, weight_distance

        result = weight_distance(trained, checkpoints=args.checkpoints, tasks=args.tasks or 100,
                                 inner_steps=args.inner_steps, seed=args.seed, chunk=args.chunk)
        _write(out, "weight_distance", result, plot_weight_distance)
    if args.rsa:
        from metajax.analysis.rsa_study import plot_rsa, rsa_study

        result = rsa_study(trained, checkpoints=args.checkpoints, tasks=args.tasks or 50,
                           seed=args.seed, chunk=args.chunk,
                           inner_steps=[int(s) for s in args.rsa_inner_steps.split(",") if s.strip()])
        _write(out, "rsa", result,
               lambda r, path: plot_rsa(r, path, out / "rsa_trajectories.png"))


def _compare_steps(text: str | None) -> tuple[int | None, int | None]:
    if text is None:
        return None, None
    try:
        steps = [int(part) for part in text.split(",")]
    except ValueError:
        steps = []
    if len(steps) not in (1, 2):
        raise ValueError(f"--checkpoint {text!r}: give one step for both runs or two, e.g. "
                         "--checkpoint 1000 or --checkpoint 1000,2000")
    return (steps[0], steps[-1])


def _metric_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _write(out: Path, name: str, result: dict, plot) -> None:
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    plot(result, out / f"{name}.png")
    print(out / f"{name}.json")
    if "seconds" in result:
        print(f"{name}: {result['seconds']:.1f} s", file=sys.stderr)
