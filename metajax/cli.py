"""The ``metajax`` command: a thin layer that parses flags and calls the training library.

    metajax train [--config NAME] [--algo A --dataset D --ways N ...] --workdir DIR [--resume]
    metajax eval DIR [--tasks 600] [--inner-steps 10] [--data-dir PATH]
    metajax analyze DIR --out OUT [--similarity cca,cka] [--freeze] [--weight-distance] [--rsa]
    metajax compare DIR1 DIR2 --out OUT
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from metajax.analysis.cli import COMMANDS as ANALYSIS_COMMANDS
from metajax.analysis.cli import add_analysis_commands, run_analysis_command
from metajax.cli_data import add_benchmark_flags, add_data_command, run_benchmark, run_data_command
from metajax.configs import CONFIGS, get_named_config
from metajax.training.config import Config



_OPTION_PREFIX = "option__"


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    for field in dataclasses.fields(Config):
        if field.name == "options":  # the algorithm's own flags, added once --algo is known
            continue
        flag = "--" + field.name.replace("_", "-")
        name = field.type if isinstance(field.type, str) else field.type.__name__
        # Optional fields ("int | None") parse as their type; None stays the unset default.
        kind = {"int": int, "float": float, "bool": _parse_bool}.get(
            name.removesuffix(" | None"), str)
        parser.add_argument(flag, dest=field.name, type=kind, default=None,
                            help=f"(default: {field.default})")


def _add_algorithm_flags(parser: argparse.ArgumentParser, algo: str) -> None:
    """Flags for the options the algorithm's factory declares (``--msl true`` for mamlpp)."""
    from metajax.algorithms.base import declared_options
    from metajax.algorithms.registry import get_factory

    group = parser.add_argument_group(f"options of --algo {algo}")
    for name, default in declared_options(get_factory(algo)).items():
        kind = {bool: _parse_bool, int: int, float: float}.get(type(default), str)
        group.add_argument("--" + name.replace("_", "-"), dest=_OPTION_PREFIX + name, type=kind,
                           metavar=type(default).__name__.upper(),
                           default=None, help=f"(default: {default})")


def _chosen_algorithm(args) -> str | None:
    """The algorithm a train command will run: --algo, else the resumed run's, else the config's."""
    if args.algo is not None:
        return args.algo
    try:
        if args.resume:
            return Config.load(args.workdir).algo
        return get_named_config(args.config).algo
    except (ValueError, FileNotFoundError):
        return None  # reported when the config is built


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metajax", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="meta-train a model",
                           epilog="An algorithm's own options are flags too: see "
                                  "`metajax train --algo NAME --help` (e.g. mamlpp: --msl true).")
    train.add_argument("--config", default="default",
                       help=f"named config to start from: {', '.join(CONFIGS)}")
    train.add_argument("--workdir", required=True, help="run directory (checkpoints, metrics)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --workdir from its newest checkpoint")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--distributed", action="store_true",
                       help="call jax.distributed.initialize() first (multi-host task sharding)")
    _add_config_flags(train)

    ev = sub.add_parser("eval", help="evaluate a trained run on test tasks; prints JSON")
    ev.add_argument("workdir", help="run directory written by `metajax train`")
    ev.add_argument("--tasks", type=int, default=600)
    ev.add_argument("--inner-steps", type=int, default=None,
                    help="test-time adaptation steps (default: the run's eval_inner_steps)")
    ev.add_argument("--split", default="test", choices=("test", "val"))
    ev.add_argument("--seed", type=int, default=0, help="selects the test tasks")
    ev.add_argument("--batch", type=int, default=None, help="tasks per compiled call")
    ev.add_argument("--data-dir", default=None, help="override the run's data directory")
    ev.add_argument("--head", default="learned", choices=("learned", "nil", "zero"),
                    help="nil: no head and no inner loop; cosine-similarity votes of support "
                         "labels; zero (--benchmark only): a zero-initialised head, adapted")
    ev.add_argument("--freeze", default="",
                    help="comma-separated body layers not adapted at test time, e.g. 1,2,3,4")
    ev.add_argument("--bn-stats", default=None, choices=("running", "batch"),
                    help="MAML++ with BNRS only: normalise test queries with the learned running "
                         "statistics (default) or with the query batch's own (transductive)")
    add_benchmark_flags(ev)
    add_data_command(sub)
    add_analysis_commands(sub)
    parser.set_defaults(_train_parser=train)
    return parser


def _train_config(args) -> Config:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                 if getattr(args, f.name, None) is not None}
    options = {k[len(_OPTION_PREFIX):]: v for k, v in vars(args).items()
               if k.startswith(_OPTION_PREFIX) and v is not None}
    if args.resume:
        try:
            saved = Config.load(args.workdir)
        except FileNotFoundError:
            saved = None
        if saved is not None:
            # The run's own settings win; only the step budget (and data location) may change.
            allowed = {"steps", "data_dir"}
            changed = {k for k, v in overrides.items() if getattr(saved, k) != v} - allowed
            changed |= {f"--{k.replace('_', '-')}" for k, v in options.items()
                        if saved.options.get(k) != v}
            if changed:
                raise ValueError(f"--resume keeps the run's settings; these flags differ from "
                                 f"{args.workdir}/config.json: {', '.join(sorted(changed))}. "
                                 "Drop them or start a new --workdir.")
            return saved.replace(**{k: v for k, v in overrides.items() if k in allowed})
    if overrides.get("env") and args.config == "default":
        # --env without --config starts from that environment's meta-RL protocol.
        from metajax.rl.configs import rl_config

        return rl_config(overrides["env"]).replace(**overrides)
    base = get_named_config(args.config)
    if options:
        overrides["options"] = {**base.options, **options}
    return base.replace(**overrides)


def _is_rl_run(workdir) -> bool:
    try:
        return Config.load(workdir).env is not None
    except FileNotFoundError:
        return False  # evaluate_run explains what is missing


def main(argv=None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # first pass: which algorithm, so its own flags exist (and --help)
        first = argparse.ArgumentParser(add_help=False)
        for flag in ("--algo", "--workdir"):
            first.add_argument(flag, default=None)
        first.add_argument("--config", default="default")
        first.add_argument("--resume", action="store_true")
        algo = _chosen_algorithm(first.parse_known_args(argv[1:])[0])
        if algo is not None:
            try:
                _add_algorithm_flags(parser.get_default("_train_parser"), algo)
            except ValueError as e:
                print(f"metajax: error: {e}", file=sys.stderr)
                return 2
    args = parser.parse_args(argv)
    # Imported here so that `metajax --help` answers without initialising JAX.
    from metajax.training.loop import NonFiniteLossError, evaluate_run, train_and_evaluate

    try:
        if args.command == "train":
            cfg = _train_config(args)
            if args.distributed:
                import jax

                jax.distributed.initialize()
            if cfg.env is not None:
                from metajax.rl.trainer import train_rl

                train_rl(cfg, args.workdir, resume=args.resume, progress=not args.no_progress)
            else:
                train_and_evaluate(cfg, args.workdir, resume=args.resume,
                                   progress=not args.no_progress)
            print(f"done: {cfg.steps} steps; evaluate with `metajax eval {args.workdir}`",
                  file=sys.stderr)
        elif args.command == "eval" and _is_rl_run(args.workdir):
            from metajax.rl.trainer import evaluate_rl_run

            print(json.dumps(evaluate_rl_run(args.workdir, tasks=args.tasks, seed=args.seed)))
        elif args.command == "data":
            print(json.dumps(run_data_command(args), indent=2))
        elif args.command == "eval" and args.benchmark:
            print(json.dumps(run_benchmark(args)))
        elif args.command == "eval":
            result = evaluate_run(args.workdir, tasks=args.tasks, inner_steps=args.inner_steps,
                                  split=args.split, seed=args.seed, batch=args.batch,
                                  head=args.head,
                                  freeze=[x for x in args.freeze.split(",") if x.strip()],
                                  bn_stats=args.bn_stats, data_dir=args.data_dir)
            print(json.dumps(result))
        elif args.command in ANALYSIS_COMMANDS:
            run_analysis_command(args)
    except (ValueError, FileNotFoundError, FileExistsError, NonFiniteLossError) as e:
        print(f"metajax: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
