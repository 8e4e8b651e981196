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
import math
import os
import sys
import threading

from metajax.analysis.cli import COMMANDS as ANALYSIS_COMMANDS
from metajax.analysis.cli import add_analysis_commands, run_analysis_command
from metajax.cli_data import add_benchmark_flags, add_data_command, run_benchmark, run_data_command
from metajax.cli_plot import add_plot_command, run_plot_command
from metajax.configs import CONFIGS, get_named_config
from metajax.training.config import Config



_OPTION_PREFIX = "option__"


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    from metajax.data.names import ALGORITHM_NAMES
    from metajax.training.config import FIELD_HELP

    groups = {}
    for field in dataclasses.fields(Config):
        if field.name == "options":  # the algorithm's own flags, added once --algo is known
            continue
        group_name, text = FIELD_HELP[field.name]
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        flag = "--" + field.name.replace("_", "-")
        name = field.type if isinstance(field.type, str) else field.type.__name__
        base = name.removesuffix(" | None")
        # Optional fields ("int | None") parse as their type; None stays the unset default.
        kind = {"int": int, "float": float, "bool": _parse_bool}.get(base, str)
        if field.name == "algo":
            text = f"{', '.join(ALGORITHM_NAMES)}, or package.module:factory"
        metavar = {"bool": "true|false", "int": "N", "float": "X"}.get(base, None)
        groups[group_name].add_argument(flag, dest=field.name, type=kind, default=None,
                                        metavar=metavar,
                                        help=f"{text} (default: {field.default})"
                                        .replace("%", "%%"))


def _add_algorithm_flags(parser: argparse.ArgumentParser, algo: str) -> None:
    """Flags for the options the algorithm's factory declares (``--msl true`` for mamlpp)."""
    from metajax.algorithms.base import declared_options
    from metajax.algorithms.registry import get_factory

    group = parser.add_argument_group(f"options of --algo {algo}")
    taken = {flag for action in parser._actions for flag in action.option_strings}
    for name, default in declared_options(get_factory(algo)).items():
        if "--" + name.replace("_", "-") in taken:
            continue  # a run setting of the same name; the factory's check reports a misfit
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _json_safe(value):
    """JSON output never holds NaN/inf (not valid JSON): they become null, and the field
    ``undefined`` lists which values were not finite and why."""
    undefined = []

    def clean(v, path):
        if isinstance(v, dict):
            return {k: clean(x, f"{path}{k}") for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x, f"{path}[{i}]") for i, x in enumerate(v)]
        if isinstance(v, float) and not math.isfinite(v):
            undefined.append(path)
            return None
        return v

    out = clean(value, "")
    if undefined:
        out["undefined"] = {k: _why_undefined(k) for k in undefined}
    return out


def _why_undefined(path: str) -> str:
    if "ci95" in path:
        return "a confidence interval needs at least 2 tasks"
    if path.endswith("_sd"):
        return "a standard deviation over seeds needs at least 2 seeds"
    return "not finite: the model diverged"


def _start_distributed(args) -> None:
    """``jax.distributed.initialize`` from the launch flags (or the cluster's environment)."""
    import jax

    explicit = (args.coordinator_address, args.num_processes, args.process_id)
    if any(v is not None for v in explicit):
        if None in explicit:
            raise ValueError("a multi-process launch needs all of --coordinator-address "
                             "HOST:PORT, --num-processes N and --process-id I")
        if args.num_processes < 1 or not 0 <= args.process_id < args.num_processes:
            raise ValueError(f"--process-id {args.process_id} is out of range: with "
                             f"--num-processes {args.num_processes} use 0..{args.num_processes - 1}")
        if ":" not in args.coordinator_address:
            raise ValueError(f"--coordinator-address {args.coordinator_address!r}: expected "
                             "HOST:PORT, e.g. localhost:1234")
    elif not args.distributed:
        return
    # CPU collectives across processes go through gloo (GPUs and TPUs use their own); set before
    # the backend starts, which initialize() must precede.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    where = args.coordinator_address or "the cluster's coordinator"
    message = (f"metajax: error: could not join the multi-process run at {where} within "
               f"{args.init_timeout} s; check that every process uses the same "
               "--coordinator-address and --num-processes, that process 0 is running, and that "
               "the port is reachable (--init-timeout to wait longer)")
    joined = threading.Event()

    def watchdog():
        # JAX aborts the process (no exception) when joining times out: report it first.
        if not joined.wait(args.init_timeout):
            print(message, file=sys.stderr, flush=True)
            os._exit(2)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        jax.distributed.initialize(args.coordinator_address, args.num_processes,
                                   args.process_id,
                                   initialization_timeout=args.init_timeout + 60)
    except Exception as e:  # noqa: BLE001 (JAX raises RuntimeError/XlaRuntimeError variants)
        raise ValueError(f"{message.removeprefix('metajax: error: ')} "
                         f"({str(e).splitlines()[0][:200]})") from None
    finally:
        joined.set()


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
    launch = train.add_argument_group(
        "several processes (jax.distributed; see README 'Many devices and hosts')")
    launch.add_argument("--distributed", action="store_true",
                        help="join a multi-process run; with no flags below, the cluster's "
                             "environment (SLURM, Open MPI, Cloud TPU, ...) describes it")
    launch.add_argument("--coordinator-address", default=None, metavar="HOST:PORT",
                        help="process 0's address (implies --distributed)")
    launch.add_argument("--num-processes", type=int, default=None, metavar="N")
    launch.add_argument("--process-id", type=int, default=None, metavar="I",
                        help="this process's index, 0..N-1 (process 0 writes the run's files)")
    launch.add_argument("--init-timeout", type=int, default=120, metavar="SECONDS",
                        help="how long to wait for every process to join (default: 120)")
    _add_config_flags(train)

    ev = sub.add_parser("eval", help="evaluate a trained run on test tasks; prints JSON")
    ev.add_argument("workdir", help="run directory written by `metajax train`")
    ev.add_argument("--tasks", type=_positive_int, default=600, help="test tasks (>= 1)")
    ev.add_argument("--inner-steps", type=int, default=None,
                    help="test-time adaptation steps (default: the run's eval_inner_steps)")
    ev.add_argument("--split", default="test", choices=("test", "val"))
    ev.add_argument("--seed", type=int, default=0, help="selects the test tasks")
    ev.add_argument("--batch", type=_positive_int, default=None,
                    help="tasks per compiled call (>= 1)")
    ev.add_argument("--data-dir", default=None, help="override the run's data directory")
    ev.add_argument("--checkpoint", type=int, default=None, metavar="STEP",
                    help="the step of the checkpoint to score (default: the newest)")
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
    add_plot_command(sub)
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
            # The run's own settings win; only the step budget (and data location) may change,
            # and after a divergence the rates may be lowered.
            allowed = {"steps", "data_dir"}
            from metajax.training import history

            if history.diverged(args.workdir):
                allowed |= {k for k in ("meta_lr", "inner_lr")
                            if k in overrides and 0 < overrides[k] < getattr(saved, k)}
            changed = {f"--{k.replace('_', '-')}" for k, v in overrides.items()
                       if getattr(saved, k) != v and k not in allowed}
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
        chosen = first.parse_known_args(argv[1:])[0]
        plain_help = ({"-h", "--help"} & set(argv) and chosen.algo is None
                      and chosen.config == "default")
        # (the default algorithm has no options; plain --help then answers without JAX)
        algo = None if plain_help else _chosen_algorithm(chosen)
        if algo is not None:
            try:
                _add_algorithm_flags(parser.get_default("_train_parser"), algo)
            except ValueError as e:
                print(f"metajax: error: {e}", file=sys.stderr)
                return 2
    args = parser.parse_args(argv)
    # Imported here so that `metajax --help` answers without initialising JAX.
    from metajax.training.checkpoint import CheckpointError
    from metajax.training.loop import (NonFiniteLossError, TrainingInterrupted, evaluate_run,
                                       train_and_evaluate)
    from metajax.training.host_memory import configure_host_allocator
    from metajax.training.workdir import WorkdirError, os_error_message

    try:
        if args.command == "train":
            cfg = _train_config(args)
            # Before JAX's backend starts (which fixes its dispatch mode); called in a process
            # that already ran JAX it changes nothing.
            configure_host_allocator(cfg.host_allocator)
            _start_distributed(args)
            if cfg.env is not None and jax_process_count() > 1:
                raise ValueError("meta-RL (--env) runs in one process: its rollouts are not "
                                 "split over processes; drop --distributed (several devices of "
                                 "one process are used)")
            if cfg.env is not None:
                from metajax.rl.trainer import train_rl

                train_rl(cfg, args.workdir, resume=args.resume, progress=not args.no_progress)
            else:
                train_and_evaluate(cfg, args.workdir, resume=args.resume,
                                   progress=not args.no_progress)
            if jax_process_count() == 1 or jax_process_index() == 0:
                print(f"done: {cfg.steps} steps; evaluate with `metajax eval {args.workdir}`",
                      file=sys.stderr)
        elif args.command == "eval" and _is_rl_run(args.workdir):
            from metajax.rl.trainer import evaluate_rl_run

            print(json.dumps(_json_safe(evaluate_rl_run(args.workdir, tasks=args.tasks,
                                                        seed=args.seed))))
        elif args.command == "data":
            print(json.dumps(run_data_command(args), indent=2))
        elif args.command == "plot":
            print(json.dumps(run_plot_command(args), indent=2))
        elif args.command == "eval" and args.benchmark:
            print(json.dumps(_json_safe(run_benchmark(args))))
        elif args.command == "eval":
            if args.head == "zero":
                raise ValueError("--head zero is for --benchmark omniglot-runs (a new 20-way "
                                 "head); for the run's own tasks use --head learned or nil")
            result = evaluate_run(args.workdir, tasks=args.tasks, inner_steps=args.inner_steps,
                                  split=args.split, seed=args.seed, batch=args.batch,
                                  head=args.head,
                                  freeze=[x for x in args.freeze.split(",") if x.strip()],
                                  bn_stats=args.bn_stats, checkpoint=args.checkpoint,
                                  data_dir=args.data_dir)
            print(json.dumps(_json_safe(result)))
        elif args.command in ANALYSIS_COMMANDS:
            run_analysis_command(args)
    except TrainingInterrupted as e:
        print(f"metajax: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("metajax: interrupted before training started; nothing was written",
              file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, NonFiniteLossError, CheckpointError,
            WorkdirError) as e:
        print(f"metajax: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. analyze --out on a read-only or full file system
        print(f"metajax: error: {os_error_message(e, e.filename or 'a file')}", file=sys.stderr)
        return 2
    return 0


def jax_process_count() -> int:
    import jax
    return jax.process_count()


def jax_process_index() -> int:
    import jax
    return jax.process_index()


if __name__ == "__main__":
    sys.exit(main())
